"""Exact vs Nyström TCA on every fused feature set of a finished experiment.

    python benchmarks/tca_solvers.py <workdir>/results/<experiment> [--solvers nystroem exact]

Refits TCA (the workflow's defaults: RBF, 3x the median width, mu=1, 256
components) with each solver and prints the target accuracy and balanced
accuracy averaged over the paper's dims (256/192/128/96/64), per dims, and the
fit time: does the approximation the workflow uses above ``auto_threshold``
cost accuracy?
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from layerfuse.h5io import read_pair
from layerfuse.tca import TCA, stack_domains

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fused_parser, fused_stores, scores_over_dims  # noqa: E402


def main(argv=None):
    p = fused_parser(__doc__)
    p.add_argument("--solvers", nargs="+", default=["nystroem", "exact"])
    args = p.parse_args(argv)
    for path in fused_stores(args.experiment_dir):
        xs, xt, ys, yt, _ = read_pair(path)
        x, dom = stack_domains(xs, xt)
        cells = []
        for solver in args.solvers:
            start = time.perf_counter()
            z = TCA(min(max(args.dims), len(x) - 1), bandwidth_factor=args.bandwidth_factor, mu=args.mu,
                    solver=solver).fit_transform(x, sample_domain=dom)
            seconds = time.perf_counter() - start
            m = scores_over_dims(z, len(xs), ys, yt, args.dims)
            acc = [100 * r["accuracy"] for r in m]
            bal = [100 * r["balanced_accuracy"] for r in m]
            cells.append(f"{solver} {np.mean(acc):5.1f} (bal {np.mean(bal):5.1f}) "
                         f"[{' '.join(f'{a:.1f}' for a in acc)}] {seconds:.0f} s")
        print(f"{path.parent.name}/{path.stem} N={len(x)}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
