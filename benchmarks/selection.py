"""Which label-free criterion picks the best cell?  Regret over finished experiments, and the selection's cost.

    python benchmarks/selection.py <workdir>/results/<experiment> [...] [--scope global|all] [--out cells.csv]
    python benchmarks/selection.py --cells cells.csv [...] [--scope global|all]   # re-pick from scored cells

For each experiment (a finished workflow run: its ``fused/`` and ``adapted/``
stores) every cell, feature set x adapter (none, TCA at each dims the store
holds) x centring, is scored exactly as the workflow's ``evaluate_svm`` does
(:func:`layerfuse.stages.evaluate_svm`, with the label-free criteria of
:mod:`layerfuse.select`).  Each criterion then picks one cell per experiment
without target labels; the target labels only measure the pick:

- regret: the oracle cell's accuracy minus the pick's (points), also for balanced accuracy;
- below Global: the Global cell without an adapter (tables' centring) minus the pick, where positive;
- cost: scoring time with the criteria over scoring time without them, in the same run, and the
  criteria's time over the experiment's whole workflow time (from its ``benchmarks/`` TSVs).

``--scope`` is ``selection.scope``: the criteria are computed, and pick, among the global feature set's
cells at the tables' centring (``global``, the default) or among every cell (``all``).

Experiments whose names differ only by a trailing ``s<seed>`` (Corel-1000's splits) are one pair: their
regrets are averaged before the mean over pairs.
"""
from __future__ import annotations

import argparse
import sys
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layerfuse.select import CRITERIA, scoring_settings, selection_table
from layerfuse.stages import evaluate_svm
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_run  # noqa: E402

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def score_experiment(exp_dir: Path, backbone: str, selection: dict | None, tmp: Path,
                     scope: str = "global", center: str = "domain") -> tuple[pd.DataFrame, float]:
    """Every cell of one experiment and backbone, scored as the workflow does (the criteria only where
    ``scope`` lets the selection choose: the ``global`` feature set at ``center``, or ``all``); (cells,
    seconds)."""
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
        settings = selection and scoring_settings(selection, featureset, scope=scope, center=center,
                                                  global_layer="global")
        evaluate_svm(features, adapters, SVM, meta, tmp / f"{featureset}.csv", selection=settings)
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


def picks_table(cells: pd.DataFrame, criteria, center: str = "domain", global_layer: str = "global",
                scope: str = "global") -> pd.DataFrame:
    """The workflow's selection table (:func:`layerfuse.select.selection_table`) in points, with how far each
    pick falls below the Global cell without an adapter (at the tables' centring)."""
    t = selection_table(cells, criteria, default=criteria[0], center=center, global_layer=global_layer, scope=scope)
    base = t.loc[t["kind"] == "baseline", "accuracy"]
    out = pd.DataFrame({"criterion": t["criterion"], "cell": t["featureset"] + "/" + t["adapter"] + "/" + t["center"]})
    for col, src in (("accuracy", "accuracy"), ("balanced", "balanced_accuracy"), ("regret", "regret"),
                     ("regret_balanced", "regret_balanced")):
        out[col] = 100 * t[src]
    out["below_global"] = (100 * (base.iloc[0] - t["accuracy"])).clip(lower=0) if len(base) else np.nan
    return out


def regret_over_pairs(all_picks: list) -> pd.DataFrame:
    """Each criterion's regret and fall below Global, averaged over an experiment's seeds (names differing by
    a trailing ``s<seed>``: one pair), then mean and worst over pairs."""
    picks = pd.concat(all_picks, ignore_index=True)
    picks["pair"] = picks["experiment"].map(lambda e: re.sub(r"s\d+$", "", e))
    return (picks.groupby(["pair", "criterion"], sort=False)[["regret", "regret_balanced", "below_global"]].mean()
            .groupby("criterion", sort=False).agg(["mean", "max"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dirs", type=Path, nargs="*")
    p.add_argument("--backbone", default="imagenet")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    p.add_argument("--validation-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scope", choices=["global", "all"], default="global",
                   help="the cells the criteria choose among (selection.scope)")
    p.add_argument("--cells", type=Path, nargs="+",
                   help="skip the scoring: pick from cells CSVs an earlier --out wrote (no cost table)")
    p.add_argument("--out", type=Path, help="write every scored cell of every experiment here (CSV)")
    args = p.parse_args(argv)
    selection = {"criteria": args.criteria, "validation_size": args.validation_size, "seed": args.seed}
    all_cells, all_picks, costs = [], [], []
    if args.cells:
        for cells in pd.concat([pd.read_csv(p) for p in args.cells]).groupby("experiment", sort=True):
            picks = picks_table(cells[1].reset_index(drop=True), args.criteria, scope=args.scope)
            picks.insert(0, "experiment", cells[0])
            all_picks.append(picks)
        args.experiment_dirs = []
    with tempfile.TemporaryDirectory() as tmp:
        for exp_dir in args.experiment_dirs:
            require_run(exp_dir, f"fused/{args.backbone}/global.h5")
            plain, t_plain = score_experiment(exp_dir, args.backbone, None, Path(tmp))
            cells, t_sel = score_experiment(exp_dir, args.backbone, selection, Path(tmp), args.scope)
            grid = workflow_seconds(exp_dir)
            costs.append({"experiment": exp_dir.name, "cells": len(cells), "scoring_s": t_plain,
                          "with_criteria_s": t_sel, "criteria_over_scoring": t_sel / t_plain,
                          "workflow_s": grid, "criteria_over_workflow": (t_sel - t_plain) / grid if grid else np.nan})
            picks = picks_table(cells, args.criteria, scope=args.scope)
            picks.insert(0, "experiment", exp_dir.name)
            print(f"\n## {exp_dir.name} ({args.backbone}, {len(cells)} cells)\n")
            print(picks.to_markdown(index=False, floatfmt=".2f"))
            all_cells.append(cells)
            all_picks.append(picks)
    print("\n## Regret over pairs (points; mean and worst pair)\n")
    print(regret_over_pairs(all_picks).round(2).to_markdown())
    if costs:
        print("\n## Cost\n")
        print(pd.DataFrame(costs).to_markdown(index=False, floatfmt=".2f"))
    if args.out and all_cells:
        pd.concat(all_cells, ignore_index=True).to_csv(args.out, index=False, float_format="%.6f")


if __name__ == "__main__":
    main()
