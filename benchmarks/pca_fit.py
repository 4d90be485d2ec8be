"""``fit_pca``'s three block fits on a 2-core machine: side by side on one thread each (one thread per job, as
the workflow ran them until the rule took every core: two at once, then the third alone with a core idle)
against one after another, each multiplying ``--cores`` blocks of columns at once (``threads: workflow.cores``
in rules/extract.smk, ``n_jobs`` of :func:`layerfuse.reduce.fit_pca_sample`), in one run.

    python benchmarks/pca_fit.py [--images 1500] [--size 112] [--components 256] [--cores 2]

Each fit is :func:`layerfuse.reduce.fit_pca_sample` on a generated float16 map store of ``--images`` rows of an
early block's shape at ``--size`` pixels (256 x (size/4)² values; 224 px is the workflow's default), in a
process of its own whose BLAS threads are set by the environment as Snakemake sets them.  Prints each layout's
wall time, their ratio, and whether the two layouts' models are the same bits (they must be).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

FIT = ("import sys, numpy as np; from layerfuse.reduce import fit_pca_sample; "
       "np.save(sys.argv[4], fit_pca_sample(sys.argv[1], int(sys.argv[2]), n_jobs=int(sys.argv[3]))['loadings'])")


def fit(store: Path, components: int, threads: int, out: Path) -> None:
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS", "GOTO_NUM_THREADS")}}
    subprocess.run([sys.executable, "-c", FIT, str(store), str(components), str(threads), str(out)], env=env,
                   check=True)


def layout(stores, components: int, threads: int, at_once: int, tag: str) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda s: fit(s, components, threads, s.with_name(f"{s.stem}-{tag}.npy")), stores))
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1500)
    p.add_argument("--size", type=int, default=112, help="image size the block's shape follows (224: the default)")
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    side = args.size // 4
    with tempfile.TemporaryDirectory() as tmp:
        stores = []
        rng = np.random.default_rng(0)
        for block in range(3):
            path = Path(tmp) / f"block{block + 1}.h5"
            with h5py.File(path, "w") as f:
                maps = f.create_dataset("features", (args.images, 256, side, side), np.float16)
                for lo in range(0, args.images, 100):
                    n = min(100, args.images - lo)
                    maps[lo:lo + n] = rng.standard_normal((n, 256, side, side), np.float32).astype(np.float16)
            stores.append(path)
        fit(stores[0], args.components, 1, Path(tmp) / "warm.npy")   # warm the page cache and the imports
        single = layout(stores, args.components, threads=1, at_once=args.cores, tag="single")
        every = layout(stores, args.components, threads=args.cores, at_once=1, tag="every")
        same = all(np.array_equal(*(np.load(s.with_name(f"{s.stem}-{tag}.npy")) for tag in ("single", "every")))
                   for s in stores)
    print(f"3 fits, {args.images} images of {256 * side * side} values, {args.components} components, "
          f"{args.cores} cores")
    print(f"  side by side, 1 thread each ({args.cores} at once): {single:7.1f} s")
    print(f"  one after another, {args.cores} blocks at once each:  {every:7.1f} s")
    print(f"  ratio (side by side / every core): {single / every:.2f}")
    print(f"  the same loadings, bit for bit: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
