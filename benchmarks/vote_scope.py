"""The candidates' vote (``selection.combine``) within the Global feature set (the default) against votes whose
members come from every feature set of a finished full-grid run.

    python benchmarks/vote_scope.py results/officeaw results/ham10000ph2 ... [--backbone imagenet]

For each experiment folder (a finished run of the full grid: ``fused/<backbone>/<featureset>.h5`` and
``adapted/<backbone>/<featureset>/`` for every feature set of ``scores/<backbone>/``), every cell at ``domain``
centring is refitted here as ``evaluate_svm`` fits a candidate: the workflow's linear SVM on the source, refined by
self-training (3 rounds, uniform balance, the default ``selection.refine``), scored by the default criterion
(``dev``, computed here where the run's ``selection.scope: global`` left it empty).  Printed per experiment:
accuracy / balanced accuracy (%) of the centred Global cell without an adapter (the floor), the plain grid's
best cell (``grid best``, the regret's reference) and the best refined cell (``oracle``; both by target labels),
and the votes:

- ``global criterion``: today's default (the Global feature set's cells, weights a softmax of the criterion's
  standardised scores);
- ``all uniform`` / ``all criterion``: every feature set's cells, weighted equally or by the criterion;
  ``all criterion plain``: the same members' plain SVMs (no self-training); ``global refined, others plain``:
  only the Global feature set's members refined (what the run already computes);
- ``featuresets``: each feature set's own criterion vote, the feature sets weighted equally;
- ``no-adapter``: each feature set's cell without an adapter, weighted equally.

At the end, per vote, the mean over pairs (Corel-1000's ``s<seed>`` splits averaged first) and the largest fall
below the floor.  No target label enters a fit or a weight; they score the result only.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from layerfuse import adapt
from layerfuse.evaluate import center_domains
from layerfuse.h5io import read_pair
from layerfuse.select import criteria_scores, vote_weights
from layerfuse.self_training import refine_cell
from layerfuse.svm import decision_matrix, fit_svm
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pair_means, require_run, run_seconds  # noqa: E402

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}
REFINE = {"method": "self_training", "rounds": 3, "balance": "uniform"}
VOTES = ("global criterion", "all uniform", "all criterion", "all criterion plain", "global refined, others plain",
         "featuresets", "no-adapter")


def _scores(yt, pred) -> tuple[float, float]:
    return 100 * float((pred == yt).mean()), 100 * float(balanced_accuracy_score(yt, pred))


def _members(root: Path, backbone: str, criterion: str, global_layer: str):
    """``[(featureset, adapter, criterion score, refined decision values, plain decision values)]`` of every
    cell at domain centring, the target's labels, and the seconds the other feature sets' criterion and
    refits took here (what a vote across feature sets adds to a run)."""
    out, yt_all, extra = [], None, 0.0
    for csv in sorted((root / "scores" / backbone).glob("*.csv")):
        featureset = csv.stem
        scores = pd.read_csv(csv)
        scores = scores[scores["center"] == "domain"].set_index("adapter")
        pairs = {"none": read_pair(root / "fused" / backbone / f"{featureset}.h5")}
        for adapter in scores.index:
            key, _ = adapt.parse_cell(adapter)
            if key not in pairs:
                pairs[key] = read_pair(root / "adapted" / backbone / featureset / f"{key}.h5")
            xs, xt, ys, yt, _, failed, _ = adapt.cell_features(pairs, adapter)
            if failed:
                continue
            yt_all = yt
            cs, ct = center_domains(xs, xt, "domain")
            crit = scores.get(f"crit_{criterion}", pd.Series(dtype=float)).get(adapter, np.nan)
            if np.isnan(crit):
                t = time.perf_counter()
                crit = criteria_scores(cs, ys, ct, svm=SVM, criteria=(criterion,))[criterion]
                extra += time.perf_counter() - t
            t = time.perf_counter()
            est = refine_cell(cs, ys, ct, refine=REFINE, svm=SVM)[2]
            if featureset != global_layer:
                extra += time.perf_counter() - t
            plain = fit_svm(cs, ys, **SVM)
            out.append((featureset, adapter, float(crit), decision_matrix(est.decision_function(ct)),
                        decision_matrix(plain.decision_function(ct))))
    if yt_all is None or (yt_all < 0).any():
        raise ValueError(f"{root}: no scored cell, or the target is unlabelled; nothing to score")
    return out, yt_all, extra


def _grid_best(root: Path, backbone: str) -> tuple[float, float]:
    """The best cell of the plain grid (every feature set, adapter and centring; target labels), as scored."""
    cells = pd.concat([pd.read_csv(p) for p in (root / "scores" / backbone).glob("*.csv")])
    best = cells.reset_index(drop=True).iloc[int(cells["accuracy"].to_numpy().argmax())]
    return 100 * float(best["accuracy"]), 100 * float(best["balanced_accuracy"])


def _vote(members, method: str, column: int = 3) -> np.ndarray:
    """The members' weighted decision values: refined (``column`` 3) or plain (4)."""
    usable = [m for m in members if not np.isnan(m[2])]
    weights = np.round(vote_weights([m[2] for m in usable], method), 6)
    return sum(w * m[column].astype(np.float64) for w, m in zip(weights, usable))


def run(root: Path, backbone: str, global_layer: str = "global", criterion: str = "dev") -> dict:
    members, yt, extra = _members(root, backbone, criterion, global_layer)
    by_set = defaultdict(list)
    for m in members:
        by_set[m[0]].append(m)
    g = pd.read_csv(root / "scores" / backbone / f"{global_layer}.csv")
    g = g[(g["adapter"] == adapt.NO_ADAPTER) & (g["center"] == "domain")].iloc[0]
    out = {"floor": (100 * float(g["accuracy"]), 100 * float(g["balanced_accuracy"])),
           "oracle": max(_scores(yt, m[3].argmax(1)) for m in members), "grid best": _grid_best(root, backbone)}
    out["global criterion"] = _scores(yt, _vote(by_set[global_layer], "criterion").argmax(1))
    out["all uniform"] = _scores(yt, _vote(members, "uniform").argmax(1))
    out["all criterion"] = _scores(yt, _vote(members, "criterion").argmax(1))
    out["all criterion plain"] = _scores(yt, _vote(members, "criterion", column=4).argmax(1))
    out["global refined, others plain"] = _scores(yt, _vote(
        [m if m[0] == global_layer else m[:3] + (m[4], m[4]) for m in members], "criterion").argmax(1))
    out["featuresets"] = _scores(yt, sum(_vote(ms, "criterion") for ms in by_set.values()).argmax(1))
    out["no-adapter"] = _scores(yt, sum(m[3].astype(np.float64) for m in members
                                        if m[1] == adapt.NO_ADAPTER).argmax(1))
    out["featuresets n"] = len(by_set)
    out["extra seconds"] = extra
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results/<experiment> folders of full-grid runs")
    parser.add_argument("--backbone", default="imagenet")
    args = parser.parse_args(argv)
    by_pair = defaultdict(list)
    for root in args.results:
        require_run(root, f"fused/{args.backbone}/global.h5", f"selection/{args.backbone}.csv")
        t = time.perf_counter()
        res = run(root, args.backbone)
        floor = res["floor"]
        total = run_seconds(root)
        print(f"{root.name} / {args.backbone}: {res['featuresets n']} feature sets, {time.perf_counter() - t:.0f} s; "
              f"the other feature sets' criterion and refits {res['extra seconds']:.0f} s"
              + (f", {100 * res['extra seconds'] / total:.0f}% of the run's recorded {total:.0f} job seconds"
                 if total else ""))
        for name in ("floor", "grid best", "oracle") + VOTES:
            acc, bal = res[name]
            print(f"  {name:<18} {acc:5.1f} / {bal:5.1f}   {acc - floor[0]:+5.1f} / {bal - floor[1]:+5.1f}")
        by_pair[re.sub(r"s\d+$", "", root.name)].append(res)
    print(f"\nmean over {len(by_pair)} pair(s) (splits averaged first); worst: the largest fall below the floor")
    for name in ("floor", "grid best", "oracle") + VOTES:
        acc, bal, regret, worst = pair_means(by_pair, name, reference="grid best")
        print(f"  {name:<18} {acc:5.2f} / {bal:5.2f}   regret {regret:5.2f}, worst vs floor {worst:+5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
