"""Compare fusion scalings (block-rms, l2, none) on a finished experiment's stores.

    python benchmarks/fusion_scaling.py results/<experiment> [--backbone imagenet] [--dims 256 128 64]

Reads the global feature stores and the reduced local blocks the workflow wrote,
fuses them with each scaling, fits TCA (same settings as the workflow defaults)
and prints the target accuracy averaged over TCA dims, plus the no-TCA baseline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from layerfuse.evaluate import evaluate_svm
from layerfuse.fusion import SCALINGS, fuse
from layerfuse.h5io import read_arrays, read_pair
from layerfuse.tca import TCA, stack_domains

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import scores_over_dims, require_run  # noqa: E402


def score(xs, xt, ys, yt, dims):
    out = {"none": evaluate_svm(xs, ys, xt, yt, center="none")[0]["accuracy"]}
    x, dom = stack_domains(xs, xt)
    z = TCA(min(max(dims), len(xs) + len(xt)), bandwidth_factor=1.0).fit_transform(x, sample_domain=dom)
    accs = [m["accuracy"] for m in scores_over_dims(z, len(xs), ys, yt, dims)]
    out["tca"] = float(np.mean(accs))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dir", type=Path)
    p.add_argument("--backbone", default="imagenet")
    p.add_argument("--dims", type=int, nargs="+", default=[256, 128, 64])
    args = p.parse_args(argv)
    base = args.experiment_dir
    require_run(base, f"features/{args.backbone}/source/global.h5", f"reduced/{args.backbone}")
    g = {d: read_arrays(base / f"features/{args.backbone}/{d}/global.h5", ["features", "labels"])[0]
         for d in ("source", "target")}
    ys, yt = g["source"]["labels"], g["target"]["labels"]
    reduced = sorted((base / "reduced" / args.backbone).glob("*/*.h5"))
    print(f"{'feature set':<16}" + "".join(f"{s + ' noTCA':>16}{s + ' TCA':>14}" for s in SCALINGS))
    totals = {s: [] for s in SCALINGS}
    for path in reduced:
        name = f"{path.parent.name}-{path.stem}"
        ls, lt, *_ = read_pair(path)
        cells = []
        for s in SCALINGS:
            xs, xt = fuse([(g["source"]["features"], g["target"]["features"]), (ls, lt)], s)
            r = score(xs, xt, ys, yt, args.dims)
            totals[s].append(r)
            cells.append(f"{100 * r['none']:>16.2f}{100 * r['tca']:>14.2f}")
        print(f"{name:<16}" + "".join(cells), flush=True)
    print(f"{'mean':<16}" + "".join(
        f"{100 * np.mean([r['none'] for r in totals[s]]):>16.2f}{100 * np.mean([r['tca'] for r in totals[s]]):>14.2f}"
        for s in SCALINGS))


if __name__ == "__main__":
    main()
