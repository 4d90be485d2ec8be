"""Everything after extraction at size: TCA, the adapters, the SVM grid with the label-free criteria and the
per-image predictions, on generated global features of 1,000 to 100,000 images.

    python benchmarks/downstream.py [--images 10000 100000] [--features 2048] [--classes 10]
                                    [--adapters none tca coral sa ot jda] [--no-grid] [--out rows.csv]
                                    [--solvers auto liblinear newton] [--no-criteria] [--separation 34]
                                    [--criteria-at center both] [--local-width 7744]

Per size, a fused store like the workflow's ``fused/<backbone>/global.h5`` (60% source, 40% target;
Gaussian classes in ``--features`` dimensions, the target scaled, rotated in a few dimensions and moved),
then each stage exactly as its workflow job runs it (:mod:`layerfuse.stages`: ``fit_adapter`` of TCA with the
schema's defaults at 256 components, ``fit_adapter`` for each configured adapter, ``evaluate_svm`` over
every cell with the label-free criteria and the predictions store, once per ``--solvers`` entry (the
``svm.solver`` values; the first is the baseline of the printed ratios) and ``--criteria-at`` entry (the
criteria at ``svm.center``'s cells, as ``selection.scope: global`` scores them, or at both centrings); ``--no-grid``: the fits only;
``--no-criteria``: the grid without the label-free criteria), each in a fresh process: wall
seconds and peak RSS. Peak RSS against N says whether anything grows as N² (a 100,000 × 100,000 float64
matrix is 80 GB); the ratio column is each stage's time over the store's size in GB, so a size whose
ratios stay flat scales linearly.  ``--local-width W`` fuses a local block of ``W`` columns with the global
features as the workflow stores a flatten feature set (the block's pair extends the global pair, read
together by :func:`layerfuse.h5io.read_pair`); ``peak/pair`` is each stage's peak RSS over the fused
pair's size in memory (float32): near 1 where the pair is held once.  Its grid is then a local feature
set's: no class-proportion estimate (the global feature set's job makes it).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import measure

SPECS = {"coral": {"method": "coral"}, "sa": {"method": "subspace_alignment", "n_components": 64},
         "ot": {"method": "linear_ot"}, "jda": {"method": "jda", "n_components": 128}}
TCA = {"n_components": 256, "kernel": "rbf", "gamma": "median", "bandwidth_factor": 3.0, "mu": 1.0,
       "solver": "auto", "n_landmarks": 1000, "auto_threshold": 3000}
SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000, "center": "domain"}
SELECTION = {"criteria": ["entropy", "snd", "iwv", "dev", "circular", "mixval", "source"], "validation_size": 0.2,
             "seed": 0}
CRITERIA_AT = {"center": {"centerings": ["domain"]}, "both": {}}   # scope global scores svm.center's cells


def make_store(path: Path, n: int, d: int, classes: int, seed: int = 0, separation: float = 34.0,
               local_width: int = 0) -> None:
    """A fused pair of ``n`` images: class means about ``separation`` noise spreads apart in ``d`` dims
    (34: every class separable from every other; 2: overlapping, as real features' classes are), unit
    noise; the target scaled by 0.7, its first 16 dims rotated and every dim moved by 0.5."""
    import numpy as np

    from layerfuse.h5io import write_pair

    rng = np.random.default_rng(seed)
    means = rng.normal(0, separation / np.sqrt(2 * d), (classes, d)).astype(np.float32)
    ns = int(0.6 * n)
    ys, yt = rng.integers(0, classes, ns), rng.integers(0, classes, n - ns)
    xs = means[ys] + rng.standard_normal((ns, d), dtype=np.float32)
    xt = means[yt] + rng.standard_normal((n - ns, d), dtype=np.float32)
    rot, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    xt[:, :16] = xt[:, :16] @ rot.astype(np.float32)
    xt = 0.7 * xt + 0.5
    write_pair(path, xs, xt, ys, yt, {"layer": "global", "reducer": "", "scaling": "block-rms"})
    if local_width:                                  # a block's columns, stored apart from the global ones
        ls = rng.standard_normal((ns, local_width), dtype=np.float32)
        lt = rng.standard_normal((n - ns, local_width), dtype=np.float32)
        write_pair(path.with_name("block.h5"), ls, lt, ys, yt,
                   {"layer": "block1", "reducer": "flatten", "scaling": "block-rms", "global_pair": path.name,
                    "local_width": local_width})


def run_stage(name: str, work: Path, adapters: list[str], solver: str = "auto", criteria: bool = True,
              criteria_at: str = "center"):
    from layerfuse import stages

    local = (work / "block.h5").exists()
    fused = work / "block.h5" if local else work / "global.h5"
    if name == "tca":
        return stages.fit_adapter(fused, {"method": "tca", **TCA}, work / "tca.h5")
    if name in SPECS:
        return stages.fit_adapter(fused, SPECS[name], work / f"{name}.h5")
    features = {"none": fused}
    cells = ["none"] if "none" in adapters else []
    if "tca" in adapters:
        features["tca"] = work / "tca.h5"
        cells += [f"tca-{d}" for d in (256, 192, 128, 96, 64)]
    for key in adapters:
        if key in SPECS:
            features[key] = work / f"{key}.h5"
            cells.append(key)
    rows = stages.evaluate_svm(features, cells, {**SVM, "solver": solver},
                               {"experiment": "x", "backbone": "b", "featureset": "block1-flatten" if local else "global"},
                               work / "scores.csv",
                               predictions=work / "scores.h5",
                               selection={**SELECTION, **CRITERIA_AT[criteria_at]} if criteria else None)
    return len(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--features", type=int, default=2048)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--local-width", type=int, default=0,
                   help="fuse a local block of this many columns with the global features (a flatten feature set)")
    p.add_argument("--separation", type=float, default=34.0,
                   help="distance between class means in noise spreads (34: separable; 2: overlapping)")
    p.add_argument("--adapters", nargs="+", default=["none", "tca", "coral", "sa", "ot", "jda"])
    p.add_argument("--timeout", type=float, default=7200, help="seconds per stage")
    p.add_argument("--no-grid", action="store_true", help="fit TCA and the adapters only (no evaluate_svm)")
    p.add_argument("--out", type=Path, help="append the rows here (CSV)")
    p.add_argument("--solvers", nargs="+", default=["auto"], choices=["auto", "newton", "liblinear"],
                   help="svm.solver values for the grid, each its own run")
    p.add_argument("--no-criteria", action="store_true", help="the grid without the label-free criteria")
    p.add_argument("--criteria-at", nargs="+", default=["center"], choices=["center", "both"],
                   help="the criteria at svm.center's cells only (as selection.scope: global scores them) "
                        "or at both centrings; each its own run, the first the baseline of the ratios")
    args = p.parse_args(argv)
    rows = []
    for n in args.images:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            seconds, peak, err = measure(make_store, work / "global.h5", n, args.features, args.classes,
                                         separation=args.separation, local_width=args.local_width,
                                         timeout=args.timeout)
            gb = sum(f.stat().st_size for f in work.glob("*.h5")) / 1e9
            pair_gb = n * (args.features + args.local_width) * 4 / 2**30
            stages = [(a, {}) for a in args.adapters if a != "none"]
            stages += [] if args.no_grid else [("evaluate_svm", {"solver": s, "criteria": not args.no_criteria,
                                                                 "criteria_at": c})
                                               for s in args.solvers for c in args.criteria_at]
            for stage, grid_args in stages:
                seconds, peak, result = measure(run_stage, stage, work, args.adapters, timeout=args.timeout,
                                                **grid_args)
                failed = isinstance(result, str)
                name = stage
                if grid_args:
                    both = ", criteria at both centrings" if grid_args["criteria_at"] == "both" else ""
                    name = f"{stage} ({grid_args['solver']}{both})"
                rows.append({"images": n, "stage": name, "seconds": seconds, "peak_rss_gb": peak / 1024,
                             "peak/pair": peak / 1024 / pair_gb, "s_per_store_gb": seconds / gb,
                             "error": result if failed else ""})
                print(f"{n:>7} {name:<26} {seconds:8.1f} s  peak {peak / 1024:6.2f} GB "
                      f"({peak / 1024 / pair_gb:.2f} x the pair's {pair_gb:.2f} GB)"
                      + (f"  {result}" if failed else ""), flush=True)
            grid = [r for r in rows if r["images"] == n and r["stage"].startswith("evaluate_svm")]
            for r in grid[1:]:
                print(f"{n:>7} {r['stage']} / {grid[0]['stage']}: time {r['seconds'] / grid[0]['seconds']:.2f}, "
                      f"peak RSS {r['peak_rss_gb'] / grid[0]['peak_rss_gb']:.2f}", flush=True)
    import pandas as pd

    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".2f"))
    if args.out:
        table.to_csv(args.out, mode="a", header=not args.out.exists(), index=False)


if __name__ == "__main__":
    main()
