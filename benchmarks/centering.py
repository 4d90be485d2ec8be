"""Does centring each domain before the SVM pay?  Every fused feature set of a finished experiment.

    python benchmarks/centering.py <workdir>/results/<experiment> [--backbone imagenet]

Refits TCA with the workflow's defaults (RBF, 3x the median width, mu=1, the
workflow's solver choice) and scores the linear SVM with ``svm.center: none``
and ``domain``, with and without TCA.  Prints accuracy / balanced accuracy
(TCA: mean over the paper's dims 256/192/128/96/64), and the offset TCA leaves
between the domain means, in units of the source's mean distance between class
means.  Accuracy, not time: the ratio that matters is centred over plain.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from layerfuse.evaluate import CENTERINGS, evaluate_svm
from layerfuse.h5io import read_pair
from layerfuse.tca import TCA, stack_domains

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fused_parser, fused_stores, scores_over_dims  # noqa: E402


def _pct(rows: list[dict]) -> str:
    return (f"{100 * np.mean([r['accuracy'] for r in rows]):5.1f} / "
            f"{100 * np.mean([r['balanced_accuracy'] for r in rows]):5.1f}")


def domain_offset(zs, zt, ys) -> float:
    """|mean(zt) - mean(zs)| over the mean pairwise distance between the source's class means."""
    means = np.array([zs[ys == c].mean(0) for c in np.unique(ys)])
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(len(means), 1)].mean()
    return float(np.linalg.norm(zt.mean(0) - zs.mean(0)) / between)


def main(argv=None):
    p = fused_parser(__doc__)
    p.add_argument("--backbone", default="imagenet")
    args = p.parse_args(argv)
    paths = fused_stores(args.experiment_dir, args.backbone)
    print(f"{'feature set':<16}{'TCA':>16}{'TCA, centred':>16}{'no TCA':>16}{'no TCA, centred':>18}{'offset':>8}")
    for path in paths:
        xs, xt, ys, yt, _ = read_pair(path)
        x, dom = stack_domains(xs, xt)
        z = TCA(min(max(args.dims), len(x) - 1), bandwidth_factor=args.bandwidth_factor, mu=args.mu).fit_transform(x, sample_domain=dom)
        ns = len(xs)
        cells = [_pct(scores_over_dims(z, ns, ys, yt, args.dims, center)) for center in CENTERINGS]
        cells += [_pct([evaluate_svm(xs, ys, xt, yt, center=center)[0]]) for center in CENTERINGS]
        print(f"{path.stem:<16}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}{cells[3]:>18}"
              f"{domain_offset(z[:ns, :64], z[ns:, :64], ys):>8.2f}", flush=True)


if __name__ == "__main__":
    main()
