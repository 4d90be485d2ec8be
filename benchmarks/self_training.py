"""Target self-training beside the centred Global cell without an adapter, on finished runs.

    python benchmarks/self_training.py results/officeaw results/ham10000ph2 ... [--backbone imagenet]
        [--rounds 1 3 5] [--balance uniform predicted]

For each experiment folder: the global feature set's fused pair (``fused/<backbone>/global.h5``), each domain
centred on its own mean (``svm.center: domain``), the workflow's linear SVM on the source (the baseline the
label-free default must not fall below) and :class:`layerfuse.self_training.SelfTrainingSVM` at each number of
rounds and balance.  Prints accuracy / balanced accuracy (%) on the labelled target, the difference from
the baseline in points, and each fit's time over the baseline's (measured in the same run).  No target label
enters a fit; they score the result only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from layerfuse.h5io import read_pair
from layerfuse.self_training import BALANCES, SelfTrainingSVM
from layerfuse.svm import make_svm


def _scores(yt, pred) -> tuple[float, float]:
    return 100 * float((pred == yt).mean()), 100 * float(balanced_accuracy_score(yt, pred))


def run(fused: Path, rounds: list[int], selections: list[str]) -> list[tuple]:
    xs, xt, ys, yt, _ = read_pair(fused)
    if (yt < 0).any():
        raise ValueError(f"{fused}: the target is unlabelled; nothing to score")
    xs, xt = xs - xs.mean(0), xt - xt.mean(0)
    t = time.perf_counter()
    base = make_svm().fit(xs, ys).predict(xt)
    base_s = time.perf_counter() - t
    rows = [("centred, no adapter", *_scores(yt, base), 1.0)]
    X, domain = np.vstack([xs, xt]), np.r_[np.ones(len(xs)), -np.ones(len(xt))]
    y = np.r_[ys, -np.ones(len(xt), int)]
    for selection in selections:
        for r in rounds:
            t = time.perf_counter()
            pred = SelfTrainingSVM(r, balance=selection).fit(X, y, sample_domain=domain).predict(xt)
            rows.append((f"self-training {selection}, {r} rounds", *_scores(yt, pred),
                         (time.perf_counter() - t) / base_s))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results/<experiment> folders of finished runs")
    parser.add_argument("--backbone", default="imagenet")
    parser.add_argument("--rounds", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--balance", nargs="+", default=list(BALANCES), choices=BALANCES)
    args = parser.parse_args(argv)
    for root in args.results:
        fused = root / "fused" / args.backbone / "global.h5"
        if not fused.is_file():
            print(f"{root}: no {fused.relative_to(root)}; run the experiment's preset first "
                  f"(snakemake --configfile config/presets/<preset>.yaml)", file=sys.stderr)
            return 2
        rows = run(fused, args.rounds, args.balance)
        base = rows[0]
        print(f"{root.name} / {args.backbone}")
        for name, acc, bal, ratio in rows:
            print(f"  {name:<34} {acc:5.1f} / {bal:5.1f}   {acc - base[1]:+5.1f} / {bal - base[2]:+5.1f}   "
                  f"time x{ratio:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
