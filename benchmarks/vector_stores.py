"""Disk and speed of the vector stores, compressed (as the workflow writes them) against plain float32.

    python benchmarks/vector_stores.py results/<experiment> [--backbone imagenet]

Reads every matrix of vectors a finished experiment holds (the extraction's stores of global features
and of per-image reductions, and the source/target of the reduced, fused and adapted pair files), writes
each again into a scratch file twice, plain (uncompressed, contiguous) and as the workflow writes it
(:func:`layerfuse.h5io.vector_compression`, 256-row chunks), reads both back, checks the values are
equal, and prints per kind of store the bytes per image and the write and read speeds, with the
compressed/plain ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from layerfuse.h5io import NO_CHUNK_CACHE, create_store
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_run  # noqa: E402


def matrices(experiment: Path, backbone: str):
    """(kind, name, array) of every 2-D float matrix of one backbone's stores."""
    for path in sorted(experiment.glob(f"features/{backbone}/*/*.h5")):
        with h5py.File(path, "r") as f:
            if f["features"].ndim == 2:
                kind = "global" if path.stem == "global" else path.stem.split("-", 1)[1]
                yield f"features: {kind}", path.name, f["features"][()]
    for folder in ("reduced", "fused", "adapted"):
        for path in sorted(experiment.glob(f"{folder}/{backbone}/**/*.h5")):
            with h5py.File(path, "r") as f:
                for side in ("source", "target"):
                    if side in f and f[side].ndim == 2:
                        yield folder, f"{path.relative_to(experiment)}:{side}", f[side][()]


def write_read(array: np.ndarray, path: Path, compressed: bool) -> tuple[float, float, int]:
    """Seconds to write, seconds to read, bytes on disk."""
    start = time.perf_counter()
    with h5py.File(path, "w", **NO_CHUNK_CACHE) as f:
        if compressed:
            create_store(f, "x", array.shape, array.dtype)[...] = array
        else:
            f.create_dataset("x", data=array)
    written = time.perf_counter() - start
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        back = f["x"][()]
    read = time.perf_counter() - start
    if not np.array_equal(back, array):
        raise SystemExit(f"{path}: values differ after a round trip")
    return written, read, path.stat().st_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", type=Path, help="results/<experiment> of a finished run")
    p.add_argument("--backbone", default="imagenet")
    args = p.parse_args(argv)
    require_run(args.experiment, f"fused/{args.backbone}/global.h5")
    totals = defaultdict(lambda: np.zeros(7))   # rows, plain bytes/write/read, compressed bytes/write/read
    with tempfile.TemporaryDirectory() as tmp:
        for kind, _, array in matrices(args.experiment, args.backbone):
            array = np.ascontiguousarray(array)
            plain = write_read(array, Path(tmp) / "plain.h5", False)
            packed = write_read(array, Path(tmp) / "packed.h5", True)
            totals[kind] += [len(array), plain[2], plain[0], plain[1], packed[2], packed[0], packed[1]]
    if not totals:
        raise SystemExit(f"no vector stores for {args.backbone} under {args.experiment}: run the workflow first")
    print(f"{'stores':<22} {'rows':>8} {'plain KB/row':>13} {'compressed':>11} {'size ratio':>11} "
          f"{'write MB/s':>11} {'(plain)':>8} {'read MB/s':>10} {'(plain)':>8}")
    for kind, (rows, pb, pw, pr, cb, cw, cr) in sorted(totals.items()):
        mb = pb / 1e6
        print(f"{kind:<22} {rows:>8.0f} {pb / rows / 1e3:>13.1f} {cb / rows / 1e3:>11.1f} {cb / pb:>11.2f} "
              f"{mb / cw:>11.0f} {mb / pw:>8.0f} {mb / cr:>10.0f} {mb / pr:>8.0f}")
    features = [v for k, v in totals.items() if k.startswith("features")]
    images = sum(v[0] for k, v in totals.items() if k == "features: global")
    if images:
        print(f"\nextraction stores per image: {sum(v[1] for v in features) / images / 1e3:.1f} KB plain, "
              f"{sum(v[4] for v in features) / images / 1e3:.1f} KB compressed")


if __name__ == "__main__":
    main()
