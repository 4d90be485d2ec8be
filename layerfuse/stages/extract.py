"""Stages of rules/extract.smk: extraction passes, shards and PCA's fit (the passes load torch)."""
from __future__ import annotations

import json
import logging
from functools import partial

import h5py

from .. import __version__
from ..h5io import read_labels, write_arrays
from ..layout import store_of
from ..reduce import StoredProjection, fit_pca_sample, is_fitted, pca_sample_rows, reduce_maps, reducer_kwargs

log = logging.getLogger("layerfuse")


def _pass_reductions(params: dict, pca_models) -> dict:
    """``{store key: (layer, function)}`` for the reductions ``params["reductions"]`` computes in the pass;
    a PCA reducer projects onto the loadings in its model (``.../pca/<backbone>/<layer>/<reducer>.h5``)."""
    out = {}
    for key, (layer, spec) in (params.get("reductions") or {}).items():
        if is_fitted(spec):
            out[key] = (layer, StoredProjection(store_of(pca_models, key)))
        else:
            out[key] = (layer, partial(reduce_maps, method=spec["method"], params=spec))
    return out


def extract_features(images, weights_pth, weights_json, params: dict, outputs: dict, threads: int = 1,
                     rows: tuple[int, int] | None = None, pca_models=(), pca_in_pass: bool = False) -> dict:
    """Write ``outputs`` ({store key: path}) in one forward pass over ``images`` (or its ``rows``): a layer's
    store, or a reduction of a local block (``params["reductions"]``).  With ``params["pca_sample"]``, only
    PCA's fitting sample: that many source images (seeded, stratified; every image of a smaller source).
    A PCA reduction projects in a pass of its own through the early layers, holding one block's loadings
    at a time, unless ``pca_in_pass`` (``extract.pca_in_pass``): then in the main pass, holding them all."""
    from ..extract import extract_features as extract_pass, load_recorded_backbone  # torch: the network's stages

    image_rows = None
    if "pca_sample" in params:
        labels = read_labels(images)
        image_rows = pca_sample_rows(labels, params["pca_sample"], seed=0)
        if len(image_rows) < len(labels):
            log.info("PCA is fitted on %d of the %d source images (extract.pca_sample)", len(image_rows), len(labels))
    model, spec, record = load_recorded_backbone(weights_pth, weights_json)
    ex = params["extract"]
    reductions = _pass_reductions(params, pca_models)
    return extract_pass(images, outputs, layers=params["layers"], model=model, spec=spec,
                        weights_sha256=record["sha256"], batch_size=ex["batch_size"],
                        precision=ex["precision"], local_dtype=ex["local_dtype"],
                        compression=ex["compression"], threads=threads, compile_model=ex["compile"], rows=rows,
                        # a chosen device (auto, the library's default, is left out of the params: no rerun)
                        **({"device": ex["device"]} if "device" in ex else {}),
                        image_rows=image_rows, reductions=reductions,
                        own_pass=() if pca_in_pass else [k for k, (_, fn) in reductions.items()
                                                         if isinstance(fn, StoredProjection)])


def extract_shard(images, weights_pth, weights_json, params: dict, outputs: dict, shard: int, shard_size: int,
                  threads: int = 1, pca_models=(), pca_in_pass: bool = False) -> dict:
    """Shard ``shard`` of a domain's pass: image rows ``shard * shard_size`` to ``(shard + 1) * shard_size``
    (a shard past the last image writes empty stores)."""
    size = int(shard_size)
    return extract_features(images, weights_pth, weights_json, params, outputs, threads,
                            rows=(shard * size, (shard + 1) * size), pca_models=pca_models, pca_in_pass=pca_in_pass)


def fit_pca(sample, images, reducer: dict, out, threads: int = 1) -> None:
    """PCA's mean and loadings from the sample's maps, with the sample's size and the source's in the
    attributes (``n_sample``, ``n_source``): projected onto in every image's extraction pass.  ``threads``
    blocks of the maps' columns are multiplied at once, each on one thread: the same model whatever it is."""
    fitted = fit_pca_sample(sample, **reducer_kwargs(reducer, "pca"), n_jobs=threads)
    n_sample, n_source = len(read_labels(sample)), len(read_labels(images))
    write_arrays(out, fitted, {"reducer": json.dumps(reducer), "n_sample": n_sample, "n_source": n_source,
                               "layerfuse_version": __version__})


def gather_shards(images, weights_json, params: dict, shards: list[dict], outputs: dict) -> None:
    """The domain's stores ``outputs`` from its shards' (one ``{layer key: path}`` per shard, in order):
    byte for byte what :func:`extract_features` writes in one pass."""
    from ..extract import feature_store_attrs, gather_features, recorded_spec  # torch: the network's stages only

    spec, record = recorded_spec(weights_json)
    with h5py.File(images, "r") as src:
        image_list, size = src.attrs.get("image_list_sha256", ""), src["images"].shape[1]
    ex = params["extract"]
    node = {k: params["layers"][k] if k in params["layers"] else params["layers"][params["reductions"][k][0]]
            for k in outputs}
    attrs = {k: feature_store_attrs(k, node[k], spec, record["sha256"], "", image_list, size, batchnorm_folded=True)
             for k in outputs}
    gather_features(images, shards, outputs, attrs=attrs, batch_size=ex["batch_size"], local_dtype=ex["local_dtype"],
                    compression=ex["compression"])
