"""One forward pass per batch, every requested layer to its own HDF5 store."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .backbones import BackboneSpec, build_resnet50, preprocess
from .h5io import atomic_path, create_store, write_meta

__all__ = ["extract_features", "load_backbone"]

log = logging.getLogger("layerfuse.extract")


def load_backbone(weights_path: str | os.PathLike, spec: BackboneSpec, weights_sha256: str | None = None):
    """Build the ResNet-50 of ``spec`` with the (hash-checked) weights at ``weights_path``."""
    from .weights import load_state_dict

    sd = load_state_dict(weights_path, weights_sha256)
    num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 1000
    return build_resnet50(spec, sd, num_classes=num_classes)


def extract_features(images_path: str | os.PathLike, outputs: dict[str, str | os.PathLike], *,
                     layers: dict[str, str], model, spec: BackboneSpec, weights_sha256: str = "",
                     batch_size: int = 32, precision: str = "fp32", local_dtype: str = "float16",
                     compression: str | None = "lzf", threads: int | None = None) -> dict:
    """Run ``model`` over the image store and write one feature store per layer key.

    Parameters
    ----------
    images_path : path
        Image store (``images``, ``labels``, ``image_ids``) from :mod:`layerfuse.images`.
    outputs : dict
        {layer key: output path}; every key must be in ``layers``.
    layers : dict
        {layer key: torchvision node name}, e.g. ``{"global": "flatten", "block1": "layer1.0"}``.
    precision : {"fp32", "bf16"}
        ``bf16`` runs under CPU/GPU autocast; stores are written as float32/``local_dtype``.
    local_dtype : str
        dtype of spatial maps on disk (``float16`` halves the size; ReLU maps lose nothing
        a linear classifier sees).  Vectors (``global``) are always float32.

    Returns a dict of timing facts (images/s, bytes per image per layer).
    """
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor
    from tqdm import tqdm

    unknown = [k for k in outputs if k not in layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not configured; configured: {sorted(layers)}")
    if threads:
        torch.set_num_threads(int(threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    nodes = {layers[k]: k for k in outputs}
    model = model.to(device).eval()
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    extractor = create_feature_extractor(model, return_nodes=nodes)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=(precision == "bf16"))

    with h5py.File(images_path, "r") as src:
        images = src["images"]
        labels = src["labels"][()]
        image_ids = src["image_ids"].asstr()[()]
        n = images.shape[0]
        with contextlib.ExitStack() as stack:
            files, dsets = {}, {}
            # probe output shapes with one image
            with torch.inference_mode(), autocast:
                probe = extractor(preprocess(np.zeros((1,) + images.shape[1:], np.uint8), spec).to(device))
            for key, path in outputs.items():
                tmp = stack.enter_context(atomic_path(path))
                f = stack.enter_context(h5py.File(tmp, "w"))
                shape = tuple(probe[key].shape[1:])
                dtype = "float32" if len(shape) == 1 else local_dtype
                dsets[key] = create_store(f, "features", (n,) + shape, dtype,
                                          compression=compression if len(shape) > 1 else None)
                write_meta(f, labels, image_ids, {
                    "layer": key, "node": layers[key], "architecture": spec.architecture,
                    "preprocessing": spec.preprocessing, "maxpool_pad": spec.maxpool_pad,
                    "weights_sha256": weights_sha256, "precision": precision,
                    "image_list_sha256": src.attrs.get("image_list_sha256", ""),
                    "image_size": images.shape[1], "layerfuse_version": __version__,
                })
                files[key] = f
            start = time.perf_counter()
            bar = tqdm(total=n, desc="extract", unit="img", mininterval=2.0)
            for lo in range(0, n, batch_size):
                batch = images[lo:lo + batch_size]
                with torch.inference_mode(), autocast:
                    out = extractor(preprocess(batch, spec).to(device))
                for key, t in out.items():
                    dsets[key][lo:lo + len(batch)] = t.float().cpu().numpy().astype(dsets[key].dtype)
                bar.update(len(batch))
            bar.close()
            elapsed = time.perf_counter() - start
    facts = {"images": n, "seconds": elapsed, "images_per_s": n / elapsed if elapsed else float("nan")}
    facts.update({f"bytes_per_image_{k}": Path(p).stat().st_size / max(n, 1) for k, p in outputs.items()})
    log.info("extracted %d images in %.1f s (%.1f img/s)", n, elapsed, facts["images_per_s"])
    return facts
