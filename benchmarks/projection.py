"""The extraction pass's PCA projection, ``(maps - mean) @ loadings``, as the pass computes it (float32 numpy in
products of ``layerfuse.reduce.PROJECTION_ROWS`` rows) against products of more rows and bfloat16 products.

    python benchmarks/projection.py [--block 256 56 56] [--components 256] [--images 64] [--threads 2]

Synthetic maps (ReLU'd normal values rounded to float16, as the stores hold them) and orthonormal-scale random
loadings of one block. Printed per variant: images/s, its ratio to the pass's own products, and the relative error
of the scores against them (max and RMS, relative to the largest score). No variant here changes the workflow;
the bf16 and larger-row variants change the PCA scores' last bits, so adopting one needs
``benchmarks/bf16_parity.py``-style accuracy checks on real pairs first.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--block", type=int, nargs=3, default=[256, 56, 56], metavar=("C", "H", "W"),
                   help="the block's map shape (default: block1 at 224 px)")
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from layerfuse.reduce import PROJECTION_ROWS, project_maps

    torch.set_num_threads(args.threads)
    d, k, n = int(np.prod(args.block)), args.components, args.images
    rng = np.random.default_rng(0)
    loadings = (rng.standard_normal((d, k), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    mean = np.abs(rng.standard_normal(d, dtype=np.float32))
    maps = np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0).astype(np.float16).astype(np.float32)

    def numpy_rows(rows):
        out = np.empty((n, k), np.float32)
        for lo in range(0, n, rows):
            out[lo:lo + rows] = (maps[lo:lo + rows] - mean) @ loadings
        return out

    low, mean_t, x = torch.from_numpy(loadings).to(torch.bfloat16), torch.from_numpy(mean), torch.from_numpy(maps)

    def bf16_rows(rows):
        out = torch.empty((n, k))
        for lo in range(0, n, rows):
            out[lo:lo + rows] = torch.matmul((x[lo:lo + rows] - mean_t).to(torch.bfloat16), low).float()
        return out.numpy()

    variants = [("the pass (layerfuse.reduce.project_maps)", lambda: project_maps(maps, mean, loadings))]
    variants += [(f"float32 numpy, {r}-row products", lambda r=r: numpy_rows(r)) for r in (32, 64)]
    variants += [(f"bfloat16 torch, {r}-row products", lambda r=r: bf16_rows(r)) for r in (PROJECTION_ROWS, 32, 64)]
    print(f"block {tuple(args.block)} ({d:,} values), {k} components, {n} images, {args.threads} threads")
    with threadpool_limits(args.threads):
        reference, base = None, None
        for name, fn in variants:
            fn()                                                    # warm: first-touch pages, BLAS buffers
            t0 = time.perf_counter()
            scores = fn()
            rate = n / (time.perf_counter() - t0)
            if reference is None:
                reference, base = scores, rate
            scale = np.abs(reference).max()
            err = np.abs(scores - reference)
            print(f"{name:<44} {rate:8.1f} img/s  {rate / base:5.2f}x  max err {err.max() / scale:.1e}  "
                  f"rms err {np.sqrt((err ** 2).mean()) / scale:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
