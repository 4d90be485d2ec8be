"""The configurable adapters (skada's, JDA) beside TCA on finished experiments: accuracy per adapter x feature set, fit time, and the
label-free pick among all adapters.

    python benchmarks/adapters.py <workdir>/results/<experiment> [...] [--cells cells.csv ...] [--out cells.csv]
                                  [--adapters '{jda: {method: jda, n_components: 128}}'] [--featuresets global ...]

For each experiment (a finished workflow run: its ``fused/`` stores) every adapter of ``--adapters`` (a YAML
mapping in the workflow's ``adapters:`` format; default: CORAL, Subspace Alignment with 64 components and the
linear OT mapping, each with skada's defaults) is fitted on every feature set exactly as the workflow's
``fit_adapter`` job does (:func:`layerfuse.stages.fit_adapter`, into ``adapted/<backbone>/<featureset>/<key>.h5``
beside the experiment's TCA store; an existing store is reused) and scored as ``evaluate_svm`` does, with the
label-free criteria on the global feature set.  ``--cells``: the experiment's other cells (none, TCA) scored
earlier by ``benchmarks/selection.py --out``; the picks then choose among every adapter.

Prints, per experiment, a table adapter x feature set (accuracy / balanced accuracy, %, at the tables'
centring ``domain``), each adapter's mean fit seconds on the global feature set and the widest one it fitted,
and the selection table (``benchmarks/selection.py``'s columns); then the regret over pairs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from layerfuse.report import paper_table
from layerfuse.select import CRITERIA
from layerfuse.stages import evaluate_svm, fit_adapter

from selection import SVM, picks_table, regret_over_pairs
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_run  # noqa: E402

DEFAULT_ADAPTERS = {"coral": {"method": "coral"}, "sa": {"method": "subspace_alignment", "n_components": 64},
                    "ot": {"method": "linear_ot"}}


def adapter_cells(exp_dir: Path, backbone: str, adapters: dict, selection: dict, tmp: Path, featuresets=None):
    """(cells, fit seconds per adapter and feature set) of every adapter on every fused store (or those of
    ``featuresets``)."""
    frames, fits = [], []
    for fused in sorted(exp_dir.glob(f"fused/{backbone}/*.h5")):
        featureset = fused.stem
        if featuresets and featureset not in featuresets:
            continue
        stores = {}
        for key, spec in adapters.items():
            stores[key] = exp_dir / "adapted" / backbone / featureset / f"{key}.h5"
            if not stores[key].exists():
                start = time.perf_counter()
                fit_adapter(fused, spec, stores[key])
                fits.append({"adapter": key, "featureset": featureset, "fit_s": time.perf_counter() - start})
        meta = {"experiment": exp_dir.name, "backbone": backbone, "featureset": featureset}
        evaluate_svm(stores, list(adapters), SVM, meta, tmp / f"{featureset}.csv",
                     selection=selection if featureset == "global" else None)
        frames.append(pd.read_csv(tmp / f"{featureset}.csv"))
    return pd.concat(frames, ignore_index=True), pd.DataFrame(fits)


def accuracy_table(cells: pd.DataFrame, center: str = "domain") -> pd.DataFrame:
    """Adapter rows x feature-set columns, ``accuracy / balanced`` in %."""
    at = cells[cells["center"] == center]
    acc, bal = paper_table(at, "accuracy"), paper_table(at, "balanced_accuracy")
    text = acc.map(lambda v: "–" if pd.isna(v) else f"{v:.1f}") + " / " + bal.map(lambda v: f"{v:.1f}")
    return text.where(acc.notna(), "–")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dirs", type=Path, nargs="+")
    p.add_argument("--backbone", default="imagenet")
    p.add_argument("--adapters", type=yaml.safe_load, default=DEFAULT_ADAPTERS,
                   help="YAML mapping in the workflow's adapters: format")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    p.add_argument("--cells", type=Path, nargs="+", default=[],
                   help="the experiments' other cells (benchmarks/selection.py --out)")
    p.add_argument("--out", type=Path, help="write the adapter cells here (CSV)")
    p.add_argument("--featuresets", nargs="+", help="only these feature sets (default: every fused store)")
    args = p.parse_args(argv)
    selection = {"criteria": args.criteria, "validation_size": 0.2, "seed": 0}
    earlier = pd.concat([pd.read_csv(c) for c in args.cells], ignore_index=True) if args.cells else None
    new_cells, all_picks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for exp_dir in args.experiment_dirs:
            require_run(exp_dir, f"fused/{args.backbone}/global.h5", f"selection/{args.backbone}.csv")
            cells, fits = adapter_cells(exp_dir, args.backbone, args.adapters, selection, Path(tmp), args.featuresets)
            new_cells.append(cells)
            if earlier is not None:
                cells = pd.concat([earlier[(earlier["experiment"] == exp_dir.name)
                                           & (earlier["backbone"] == args.backbone)], cells], ignore_index=True)
            print(f"\n## {exp_dir.name} ({args.backbone}): accuracy / balanced accuracy (%), centring domain\n")
            print(accuracy_table(cells).to_markdown())
            if len(fits):
                print("\nFit seconds: " + "; ".join(
                    f"{k} {g.loc[g['featureset'] == 'global', 'fit_s'].mean():.1f} on global, "
                    f"{g['fit_s'].max():.1f} at most" for k, g in fits.groupby("adapter", sort=False)))
            failed = cells[cells["failed"].astype("string").fillna("") != ""] if "failed" in cells else cells.iloc[:0]
            if len(failed):
                print("\nNot scored: " + "; ".join(sorted({f"{r.featureset} {r.adapter}: {r.failed}"
                                                           for r in failed.itertuples()})))
            picks = picks_table(cells.reset_index(drop=True), args.criteria)
            picks.insert(0, "experiment", exp_dir.name)
            print()
            print(picks.to_markdown(index=False, floatfmt=".2f"))
            all_picks.append(picks)
    print("\n## Regret over pairs (points; mean and worst pair), every adapter a candidate\n")
    print(regret_over_pairs(all_picks).round(2).to_markdown())
    if args.out:
        pd.concat(new_cells, ignore_index=True).to_csv(args.out, index=False, float_format="%.6f")


if __name__ == "__main__":
    main()
