"""Which label-free criterion picks the best cell?  Regret over finished experiments, and the selection's cost.

    python benchmarks/selection.py <workdir>/results/<experiment> [...] [--backbone imagenet] [--out cells.csv]

For each experiment (a finished workflow run: its ``fused/`` and ``adapted/``
stores) every cell, feature set x adapter (none, TCA at each dims the store
holds) x centring, is scored exactly as the workflow's ``evaluate_svm`` does
(:func:`layerfuse.stages.score_featureset`, with the label-free criteria of
:mod:`layerfuse.select`).  Each criterion then picks one cell per experiment
without target labels; the target labels only measure the pick:

- regret: the oracle cell's accuracy minus the pick's (points), also for balanced accuracy;
- below Global: the no-adaptation Global cell (tables' centring) minus the pick, where positive;
- cost: scoring time with the criteria over scoring time without them, in the same run, and the
  criteria's time over the experiment's whole workflow time (from its ``benchmarks/`` TSVs).

Experiments whose names differ only by a trailing ``s<seed>`` (Corel-1000's splits) are one pair: their
regrets are averaged before the mean over pairs.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layerfuse.select import CRITERIA, pick_cells
from layerfuse.stages import score_featureset

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def score_experiment(exp_dir: Path, backbone: str, selection: dict | None, tmp: Path) -> tuple[pd.DataFrame, float]:
    """Every cell of one experiment and backbone, scored as the workflow does; (cells, seconds)."""
    frames, elapsed = [], 0.0
    for fused in sorted(exp_dir.glob(f"fused/{backbone}/*.h5")):
        featureset = fused.stem
        features, adapters = {"none": fused}, ["none"]
        tca = exp_dir / "adapted" / backbone / featureset / "tca.h5"
        if tca.exists():
            import h5py

            with h5py.File(tca) as f:
                width = f["source"].shape[1]
            features["tca"] = tca
            adapters += [f"tca-{d}" for d in (256, 192, 128, 96, 64) if d <= width]
        meta = {"experiment": exp_dir.name, "backbone": backbone, "featureset": featureset}
        start = time.perf_counter()
        score_featureset(features, adapters, SVM, meta, tmp / f"{featureset}.csv", selection=selection)
        elapsed += time.perf_counter() - start
        frames.append(pd.read_csv(tmp / f"{featureset}.csv"))
    if not frames:
        raise SystemExit(f"no fused stores under {exp_dir}/fused/{backbone}: run the workflow first")
    return pd.concat(frames, ignore_index=True), elapsed


def workflow_seconds(exp_dir: Path) -> float:
    """The experiment's jobs' wall seconds, summed over its benchmark TSVs (the grid's serial cost)."""
    workdir = exp_dir.parents[1]
    total = 0.0
    for tsv in (workdir / "benchmarks" / exp_dir.name).rglob("*.tsv"):
        total += float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
    return total


def picks_table(cells: pd.DataFrame, criteria, center: str = "domain", global_layer: str = "global") -> pd.DataFrame:
    cells = cells.reset_index(drop=True)
    oracle = cells["accuracy"].max()
    oracle_bal = cells["balanced_accuracy"].max()
    base = cells[(cells["featureset"] == global_layer) & (cells["adapter"] == "none") & (cells["center"] == center)]
    rows = []
    for name, i in pick_cells(cells, criteria).items():
        r = cells.iloc[i]
        rows.append({"criterion": name, "cell": f"{r.featureset}/{r.adapter}/{r.center}",
                     "accuracy": 100 * r.accuracy, "balanced": 100 * r.balanced_accuracy,
                     "regret": 100 * (oracle - r.accuracy), "regret_balanced": 100 * (oracle_bal - r.balanced_accuracy),
                     "below_global": max(0.0, 100 * (base["accuracy"].iloc[0] - r.accuracy)) if len(base) else np.nan})
    best = cells.iloc[int(cells["accuracy"].to_numpy().argmax())]
    rows.append({"criterion": "oracle", "cell": f"{best.featureset}/{best.adapter}/{best.center}",
                 "accuracy": 100 * oracle, "balanced": 100 * best.balanced_accuracy, "regret": 0.0,
                 "regret_balanced": 100 * (oracle_bal - best.balanced_accuracy), "below_global": 0.0})
    if len(base):
        rows.append({"criterion": "global, no adaptation", "cell": f"{global_layer}/none/{center}",
                     "accuracy": 100 * base["accuracy"].iloc[0], "balanced": 100 * base["balanced_accuracy"].iloc[0],
                     "regret": 100 * (oracle - base["accuracy"].iloc[0]),
                     "regret_balanced": 100 * (oracle_bal - base["balanced_accuracy"].iloc[0]), "below_global": 0.0})
    return pd.DataFrame(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dirs", type=Path, nargs="+")
    p.add_argument("--backbone", default="imagenet")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    p.add_argument("--validation-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write every scored cell of every experiment here (CSV)")
    args = p.parse_args(argv)
    selection = {"criteria": args.criteria, "validation_size": args.validation_size, "seed": args.seed}
    all_cells, all_picks, costs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for exp_dir in args.experiment_dirs:
            plain, t_plain = score_experiment(exp_dir, args.backbone, None, Path(tmp))
            cells, t_sel = score_experiment(exp_dir, args.backbone, selection, Path(tmp))
            grid = workflow_seconds(exp_dir)
            costs.append({"experiment": exp_dir.name, "cells": len(cells), "scoring_s": t_plain,
                          "with_criteria_s": t_sel, "criteria_over_scoring": t_sel / t_plain,
                          "workflow_s": grid, "criteria_over_workflow": (t_sel - t_plain) / grid if grid else np.nan})
            picks = picks_table(cells, args.criteria)
            picks.insert(0, "experiment", exp_dir.name)
            print(f"\n## {exp_dir.name} ({args.backbone}, {len(cells)} cells)\n")
            print(picks.to_markdown(index=False, floatfmt=".2f"))
            all_cells.append(cells)
            all_picks.append(picks)
    picks = pd.concat(all_picks, ignore_index=True)
    picks["pair"] = picks["experiment"].map(lambda e: re.sub(r"s\d+$", "", e))
    summary = (picks.groupby(["pair", "criterion"], sort=False)[["regret", "regret_balanced", "below_global"]].mean()
               .groupby("criterion", sort=False).agg(["mean", "max"]))
    print("\n## Regret over pairs (points; mean and worst pair)\n")
    print(summary.round(2).to_markdown())
    print("\n## Cost\n")
    print(pd.DataFrame(costs).to_markdown(index=False, floatfmt=".2f"))
    if args.out:
        pd.concat(all_cells, ignore_index=True).to_csv(args.out, index=False, float_format="%.6f")


if __name__ == "__main__":
    main()
