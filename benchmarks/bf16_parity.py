"""bf16 vs fp32 extraction: feature error and grid accuracy, through the real workflow.

    python benchmarks/bf16_parity.py [--presets corel1000 office_amazon_webcam] [--layers global block1]
                                     [--finetuned]

Runs the workflow twice per preset (ImageNet backbone, the given layers, every
reducer, the configured TCA dims) in two work directories that differ only in
``extract.precision`` (fp32 / bf16, eager so that only the precision differs),
then prints the relative error of every feature store (‖bf16 − fp32‖ / ‖fp32‖
per image, median and max) and, per feature set and TCA dims, the accuracy
difference in points.  ``--finetuned`` adds the fine-tuned backbone, whose
frozen pass and tail training run in the same precision (``finetune.precision``).
``precision: auto`` turns bf16 on only where the CPU or
GPU computes it natively; on a CPU without it, bf16 is emulated (same
rounding, several times slower), so this check runs anywhere.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_workflow(preset: Path, work: Path, precision: str, layers: list[str], cores: int,
                 finetuned: bool = False) -> float:
    config = yaml.safe_load(preset.read_text())
    for exp in config["experiments"].values():  # data paths relative to the repository root
        for side in ("source", "target"):
            if side in exp:
                exp[side]["path"] = str((ROOT / exp[side]["path"]).resolve())
    all_layers = {"global": "flatten", "block1": "layer1.0", "block2": "layer1.1", "block3": "layer1.2"}
    config.update({
        "backbones": {"imagenet": {"weights": "keras-npm"},
                      **({"finetuned": {"finetune": {"base": "imagenet", "precision": precision}}}
                         if finetuned else {})},
        "layers": {k: all_layers[k] for k in layers},
        "local_layers": [k for k in layers if k != "global"],
        "extract": {"precision": precision, "compile": False},
    })
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                    str(work), "--configfile", str(work / "config.yaml"), "--cores", str(cores), "--quiet", "rules"],
                   check=True)
    return time.perf_counter() - start


def store_errors(a: Path, b: Path) -> dict[str, tuple[float, float]]:
    """{store: (median, max) per-image relative error} for every feature store of two runs (pools included)."""
    import h5py
    import hdf5plugin  # noqa: F401  the Blosc filter of the map stores

    out = {}
    for fa in sorted(a.glob("results/**/features/*/*/*.h5")):
        fb = b / fa.relative_to(a)
        with h5py.File(fa, "r") as x, h5py.File(fb, "r") as y:
            n = x["features"].shape[0]
            errs = []
            for lo in range(0, n, 64):
                u = x["features"][lo:lo + 64].astype(np.float32).reshape(min(64, n - lo), -1)
                v = y["features"][lo:lo + 64].astype(np.float32).reshape(len(u), -1)
                errs.append(np.linalg.norm(v - u, axis=1) / np.maximum(np.linalg.norm(u, axis=1), 1e-12))
        errs = np.concatenate(errs)
        out[str(fa.relative_to(a / "results"))] = (float(np.median(errs)), float(errs.max()))
    return out


def accuracies(work: Path) -> dict[tuple, float]:
    out = {}
    for path in work.glob("results/*/accuracy.csv"):
        with open(path) as f:
            for row in csv.DictReader(f):
                key = (path.parent.name, row["backbone"], row["featureset"], row["adapter"])
                out[key] = 100 * float(row["accuracy"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["corel1000", "office_amazon_webcam"])
    p.add_argument("--layers", nargs="+", default=["global", "block1"])
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "bf16_parity_work")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--finetuned", action="store_true", help="also the fine-tuned backbone (100 epochs)")
    args = p.parse_args(argv)
    seconds = {}
    for name in args.presets:
        preset = ROOT / "config" / "presets" / f"{name}.yaml"
        for precision in ("fp32", "bf16"):
            seconds[(name, precision)] = run_workflow(preset, args.work / precision / name, precision,
                                                      args.layers, args.cores, args.finetuned)
    print("workflow seconds (eager; bf16 emulated where the CPU lacks it):",
          ", ".join(f"{n} {pr} {s:.0f}" for (n, pr), s in seconds.items()))
    print(f"{'store':<52} {'median rel err':>15} {'max rel err':>12}")
    for name in args.presets:
        for store, (med, mx) in store_errors(args.work / "fp32" / name, args.work / "bf16" / name).items():
            print(f"{store:<52} {med:>15.2e} {mx:>12.2e}")
    for name in args.presets:
        a, b = accuracies(args.work / "fp32" / name), accuracies(args.work / "bf16" / name)
        diffs = {k: b[k] - a[k] for k in a if k in b}
        print(f"\n{name}: accuracy (%) fp32 -> bf16, {len(diffs)} cells")
        for k in sorted(diffs):
            print(f"  {k[1]:<10} {k[2]:<16} {k[3]:<9}  {a[k]:6.2f} -> {b[k]:6.2f}  ({diffs[k]:+.2f})")
        d = np.array(list(diffs.values()))
        print(f"  mean difference {d.mean():+.2f} points, mean |difference| {np.abs(d).mean():.2f}, "
              f"max |difference| {np.abs(d).max():.2f}; grid mean fp32 {np.mean([a[k] for k in diffs]):.2f} "
              f"bf16 {np.mean([b[k] for k in diffs]):.2f}")


if __name__ == "__main__":
    main()
