"""A default extraction pass against a plain forward pass over the same images, in one run, on the device
extraction uses (CUDA where present, else the CPU).

    python benchmarks/default_pass.py [--images 512] [--size 224] [--threads 2] [--rounds 2]

The default pass is what ``extract_features`` runs with the maps off the disk: the workflow's layers (the Global
vector and blocks 1-3), every block reduced in the pass by the schema's default reducers (PCA onto 256
components, flatten pooling, pooling 2D; the PCA loadings here are random, which costs what fitted ones do),
``precision: auto``, the default batch size. The plain pass stores only the Global features: what a torchvision
script classifying the images runs. Both run on synthetic images through a randomly initialised ResNet-50 (the
weights' values do not change the time), alternating over ``--rounds``; the medians are printed.

Printed: images/s of each and their ratio (issue #43's goal: the default pass at >= 0.9x the plain one); the
device's measured matmul peak in float32 and bfloat16 and the plain pass's fraction of it (8.2 GFLOP per 224 x 224
image); and the arithmetic of the in-pass reductions against the network's (the PCA projections' GFLOP per image).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

GFLOP_PER_IMAGE_224 = 8.2      # ResNet-50's forward pass: 2 x 4.1 GMAC


def matmul_peak(device: str, dtype, n: int = 4096, reps: int = 10) -> float:
    """GFLOP/s of an ``n^3`` matrix product on ``device`` in ``dtype``: the best dense rate it reaches."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def _image_store(path: Path, n: int, size: int) -> None:
    import h5py

    from layerfuse.h5io import create_store, write_meta

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        images = create_store(f, "images", (n, size, size, 3), "uint8")
        for lo in range(0, n, 256):
            images[lo:lo + 256] = rng.integers(0, 255, (min(256, n - lo), size, size, 3), dtype=np.uint8)
        write_meta(f, [i % 10 for i in range(n)], [f"img{i}" for i in range(n)], {"image_list_sha256": "x"})


def _pca_model(path: Path, d: int, k: int) -> None:
    import h5py

    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["mean"] = np.abs(rng.standard_normal(d, dtype=np.float32))
        f["loadings"] = rng.standard_normal((d, k), dtype=np.float32) / np.float32(np.sqrt(d))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--size", type=int, default=224, help="image size (the schema's image_size)")
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS threads (the job's)")
    p.add_argument("--rounds", type=int, default=2, help="each pass runs once per round, alternating")
    args = p.parse_args(argv)

    import h5py
    import torch
    from threadpoolctl import threadpool_limits

    from layerfuse.backbones import DEFAULT_LAYERS, BackboneSpec, build_resnet50
    from layerfuse.extract import extract_features
    from layerfuse.reduce import StoredProjection, is_fitted, reduce_maps

    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())["properties"]
    reducers = schema["reducers"]["default"]
    batch_size = schema["extract"]["properties"]["batch_size"]["default"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_resnet50(BackboneSpec())
    blocks = [k for k in DEFAULT_LAYERS if k != "global"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "images.h5"
        _image_store(store, args.images, args.size)
        # the blocks' map size as the network gives it: one image through block1
        extract_features(store, {"block1": tmp / "probe.h5"}, layers=DEFAULT_LAYERS, model=model, spec=BackboneSpec(),
                         batch_size=batch_size, threads=args.threads, image_rows=[0])
        with h5py.File(tmp / "probe.h5", "r") as f:
            shape = f["features"].shape[1:]
        d = int(np.prod(shape))
        reductions = {}
        for block in blocks:
            for name, spec in reducers.items():
                if is_fitted(spec):
                    _pca_model(tmp / f"{block}-{name}.h5", d, spec["n_components"])
                    reductions[f"{block}-{name}"] = (block, StoredProjection(tmp / f"{block}-{name}.h5"))
                else:
                    reductions[f"{block}-{name}"] = (block, lambda m, s=spec: reduce_maps(m, s["method"], s))

        def run(outputs, reduce=None):
            out = tmp / "out"
            out.mkdir(exist_ok=True)
            facts = extract_features(store, {k: out / f"{k}.h5" for k in outputs}, layers=DEFAULT_LAYERS, model=model,
                                     spec=BackboneSpec(), batch_size=batch_size, threads=args.threads,
                                     reductions=reduce)
            for f in out.iterdir():
                f.unlink()
            return facts

        times = {"plain": [], "default": []}
        with threadpool_limits(args.threads):
            for _ in range(args.rounds):
                facts = run(["global"])
                times["plain"].append(facts["images_per_s"])
                facts = run(["global", *reductions], reductions)
                times["default"].append(facts["images_per_s"])
        precision = facts["precision"]
    plain, default = statistics.median(times["plain"]), statistics.median(times["default"])
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} threads"
    peaks = {dt: matmul_peak(device, getattr(torch, dt)) for dt in ("float32", "bfloat16")}
    scale = (args.size / 224) ** 2
    k = max(s.get("n_components", 0) for s in reducers.values())
    projection_gflop = 2 * d * k * len(blocks) / 1e9
    print(f"{args.images} images of {args.size} px on {name}; precision {precision}, batch {batch_size}; "
          f"blocks {blocks} of {tuple(shape)} ({d:,} values), reducers {sorted(reducers)}")
    print(f"plain pass (Global only): {plain:.1f} images/s (rounds {', '.join(f'{x:.1f}' for x in times['plain'])})")
    print(f"default pass (Global + {len(reductions)} reductions in the pass): {default:.1f} images/s "
          f"(rounds {', '.join(f'{x:.1f}' for x in times['default'])})")
    print(f"default / plain: {default / plain:.2f} (goal >= 0.9)")
    print("matmul peak: " + ", ".join(f"{dt} {v:,.0f} GFLOP/s" for dt, v in peaks.items()))
    net = GFLOP_PER_IMAGE_224 * scale
    peak = peaks["bfloat16" if precision == "bf16" else "float32"]
    print(f"plain pass: {plain * net:,.0f} GFLOP/s, {100 * plain * net / peak:.1f}% of the {precision} peak "
          f"({net:.1f} GFLOP per image)")
    bound = {dt: 1 / (1 / plain + projection_gflop / v) / plain for dt, v in peaks.items()}
    print(f"the PCA projections: {projection_gflop:.2f} GFLOP per image ({projection_gflop / net:.2f}x the network's); "
          f"run at the device's peak, with nothing else added, they would leave the default pass at most "
          + ", ".join(f"{v:.2f}x ({dt})" for dt, v in bound.items()) + " the plain pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
