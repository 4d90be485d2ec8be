"""Why can TCA hurt?  Sweep kernel width, mu and kernel on a finished experiment's global features.

    python benchmarks/tca_sweep.py results/<experiment> [--featureset global] [--solver auto]

Prints target accuracy and balanced accuracy (mean over TCA dims 256/128/64)
for each setting, next to the no-TCA baseline, plus the MMD between the
domains' mean embeddings (how much alignment happened).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from layerfuse.evaluate import CENTERINGS, evaluate_svm
from layerfuse.h5io import read_pair
from layerfuse.tca import TCA, stack_domains

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import scores_over_dims, require_run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dir", type=Path)
    p.add_argument("--backbone", default="imagenet")
    p.add_argument("--featureset", default="global")
    p.add_argument("--solver", default="auto")
    p.add_argument("--dims", type=int, nargs="+", default=[256, 128, 64])
    p.add_argument("--factors", type=float, nargs="+", default=[1, 3, 10, 30])
    p.add_argument("--mus", type=float, nargs="+", default=[0.1, 1, 10, 100])
    p.add_argument("--center", choices=CENTERINGS, default="none",
                   help="the SVM's svm.center (docs/results.md's sweep table is 'none', the plain SVM)")
    args = p.parse_args(argv)
    require_run(args.experiment_dir, f"fused/{args.backbone}/{args.featureset}.h5")
    xs, xt, ys, yt, _ = read_pair(args.experiment_dir / f"fused/{args.backbone}/{args.featureset}.h5")
    x, dom = stack_domains(xs, xt)
    base = evaluate_svm(xs, ys, xt, yt, center=args.center)[0]
    print(f"N={len(x)}  no TCA: accuracy {100 * base['accuracy']:.1f}, balanced {100 * base['balanced_accuracy']:.1f}")
    print(f"{'kernel':<7}{'factor':>7}{'mu':>7}{'acc':>7}{'bal':>7}{'mmd':>9}")
    settings = [("rbf", f, m) for f, m in itertools.product(args.factors, args.mus)] + \
        [("linear", 1.0, m) for m in args.mus]
    for kernel, factor, mu in settings:
        k = min(max(args.dims), len(x) - 1)
        tca = TCA(k, kernel=kernel, bandwidth_factor=factor, mu=mu, solver=args.solver)
        z = tca.fit_transform(x, sample_domain=dom)
        scores = scores_over_dims(z, len(xs), ys, yt, args.dims, args.center)
        accs = [m["accuracy"] for m in scores]
        bals = [m["balanced_accuracy"] for m in scores]
        zs, zt = z[:len(xs), :64], z[len(xs):, :64]
        mmd = np.linalg.norm(zs.mean(0) - zt.mean(0)) / np.sqrt(np.mean(np.sum(zs ** 2, 1)))
        print(f"{kernel:<7}{factor:>7g}{mu:>7g}{100 * np.mean(accs):>7.1f}{100 * np.mean(bals):>7.1f}{mmd:>9.3f}",
              flush=True)


if __name__ == "__main__":
    main()
