"""How well the predictions' ``probability`` (Platt scaling of the margin, fitted on the source) matches how
often the pick is right on labelled targets.

    python benchmarks/calibration.py results/officeaw results/ham10000ph2 ... [--backbone imagenet]

For each experiment folder (a finished run: ``fused/<backbone>/global.h5``, ``adapted/<backbone>/global/`` and
``selection/<backbone>.csv``), the default pick's cell is refitted as the workflow refits it (centred, then
target self-training with the schema's defaults, ``selection.refine``) and its margins mapped by
:func:`layerfuse.calibration.margin_calibration`'s fit on the source.  Printed per experiment: the target's
accuracy, the mean probability (equal where calibrated), the expected calibration error over 10 equal-width
bins (ECE, points) and the Brier score of "right or wrong"; beside them the same for the margin squashed by a
plain logistic function (no fit: the baseline a calibration must beat).  The target's labels score the result
only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from layerfuse import adapt
from layerfuse.calibration import margin_calibration, platt_probability
from layerfuse.evaluate import center_domains
from layerfuse.h5io import read_pair
from layerfuse.self_training import refine_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_run  # noqa: E402

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}
REFINE = {"method": "self_training", "rounds": 3, "final_share": 1.0, "balance": "uniform"}


def ece(probability, correct, bins: int = 10) -> float:
    """Expected calibration error: the image-weighted mean |accuracy - mean probability| over equal-width bins."""
    edges = np.minimum((np.asarray(probability) * bins).astype(int), bins - 1)
    gap = sum(abs(correct[edges == b].mean() - probability[edges == b].mean()) * (edges == b).sum()
              for b in range(bins) if (edges == b).any())
    return float(gap / len(probability))


def run(root: Path, backbone: str) -> dict:
    selection = pd.read_csv(root / "selection" / f"{backbone}.csv")
    pick = selection[selection["default"].astype(bool)].iloc[0]
    if pick["featureset"] != "global":
        raise SystemExit(f"{root}: the pick {pick['featureset']} is not the global feature set (scope: global)")
    pairs = {"none": read_pair(root / "fused" / backbone / "global.h5")}
    if pick["adapter"] != adapt.NO_ADAPTER:
        key, _ = adapt.parse_cell(pick["adapter"])
        pairs[key] = read_pair(root / "adapted" / backbone / "global" / f"{key}.h5")
    xs, xt, ys, yt, *_ = adapt.cell_features(pairs, pick["adapter"])
    if (yt < 0).any():
        raise SystemExit(f"{root}: the target is unlabelled; nothing to measure calibration against")
    cs, ct = center_domains(xs, xt, pick["center"])
    pred, margin, _ = refine_cell(cs, ys, ct, refine=REFINE, svm=SVM)
    a, b = margin_calibration(cs, ys, svm=SVM, seed=0)
    correct = (pred == yt).astype(float)
    out = {"accuracy": 100 * correct.mean(), "a": a, "b": b}
    for name, prob in (("platt", platt_probability(margin, a, b)), ("logistic", platt_probability(margin, 1, 0))):
        out[name] = (100 * prob.mean(), 100 * ece(prob, correct), float(np.mean((prob - correct) ** 2)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results/<experiment> folders of finished runs")
    parser.add_argument("--backbone", default="imagenet")
    args = parser.parse_args(argv)
    print(f"{'experiment':<22}{'accuracy':>9}  {'Platt: mean p  ECE  Brier':>27}  {'logistic: mean p  ECE  Brier':>30}")
    for root in args.results:
        require_run(root, f"fused/{args.backbone}/global.h5", f"selection/{args.backbone}.csv")
        r = run(root, args.backbone)
        print(f"{root.name:<22}{r['accuracy']:9.1f}  " + "  ".join(
            f"{r[k][0]:13.1f} {r[k][1]:5.1f} {r[k][2]:6.3f}" for k in ("platt", "logistic"))
            + f"   (a={r['a']:.3f}, b={r['b']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
