"""The target's class proportions without its labels: EM against BBSE and MLLS-BCTS on finished runs.

    python benchmarks/label_shift.py results/officeaw results/ham10000ph2 ... [--backbone imagenet]

For each experiment folder (a finished run with a labelled target: ``fused/<backbone>/global.h5``), the
global features' class proportions on the target are estimated without its labels by each estimator of
:func:`layerfuse.label_shift.shifted_priors`: ``em`` (the workflow's :func:`estimate_target_priors`, both
domains centred), and ``bbse`` and ``mlls_bcts`` on the raw features (``none``, the source's classifier as
it is) and on each domain centred on its own mean (``domain``).  Printed: the L1 error against the target's
true proportions (0 is exact, 2 the worst), the source's own proportions as an estimate (no shift: the
error to beat), the predicted class shares of the centred Global cell refined by target self-training
(``selection.refine``'s default), and for two-class pairs each estimate's share of the second class; the
estimators' time over EM's, in this run.  Target labels score the estimates only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from layerfuse.h5io import read_pair
from layerfuse.label_shift import shifted_priors
from layerfuse.self_training import refine_cell
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_run  # noqa: E402

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}
ESTIMATES = [("em", "domain"), ("bbse", "none"), ("bbse", "domain"), ("mlls_bcts", "none"), ("mlls_bcts", "domain")]


def run(fused: Path) -> list[tuple]:
    xs, xt, ys, yt, _ = read_pair(fused)
    if (yt < 0).any():
        raise ValueError(f"{fused}: the target is unlabelled; nothing to score")
    n = int(max(ys.max(), yt.max())) + 1
    truth = np.bincount(yt, minlength=n) / len(yt)
    source = np.bincount(ys, minlength=n) / len(ys)
    rows = [("source proportions (no shift)", source, np.abs(source - truth).sum(), float("nan"))]
    em_s = None
    for method, center in ESTIMATES:
        a, b = (xs, xt) if center == "none" else (xs - xs.mean(0), xt - xt.mean(0))
        t = time.perf_counter()
        est = shifted_priors(a, ys, b, method=method, svm=SVM)
        dt = time.perf_counter() - t
        em_s = em_s or dt
        rows.append((f"{method}, centring {center}", est, np.abs(est - truth).sum(), dt / em_s))
    t = time.perf_counter()
    pred = refine_cell(xs - xs.mean(0), ys, xt - xt.mean(0), refine={"method": "self_training"}, svm=SVM)[0]
    est = np.bincount(pred, minlength=n) / len(pred)
    rows.append(("self-training's predicted shares", est, np.abs(est - truth).sum(), (time.perf_counter() - t) / em_s))
    return [("truth", truth, 0.0, float("nan"))] + rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results/<experiment> folders of finished runs")
    parser.add_argument("--backbone", default="imagenet")
    args = parser.parse_args(argv)
    errors = {}
    for root in args.results:
        fused = root / "fused" / args.backbone / "global.h5"
        require_run(root, fused.relative_to(root))
        print(f"{root.name} / {args.backbone}")
        for name, est, err, ratio in run(fused):
            second = f"   class 1: {100 * est[1]:5.1f}%" if len(est) == 2 else ""
            speed = "" if np.isnan(ratio) else f"   time x{ratio:.1f}"
            print(f"  {name:<32} L1 {err:.3f}{second}{speed}")
            errors.setdefault(name, []).append(err)
    print("\nmean L1 error over the experiments")
    for name, errs in errors.items():
        print(f"  {name:<32} {np.mean(errs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
