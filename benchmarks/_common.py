"""Helpers shared by the benchmarks: timing and peak memory of a call in a child process."""
from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import resource
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def preset_of(experiment: str) -> tuple[str, dict] | None:
    """``(file name, entry)`` of the preset that names ``experiment`` under ``experiments``; None for none."""
    import yaml

    for preset in sorted((REPO / "config" / "presets").glob("*.yaml")):
        entry = ((yaml.safe_load(preset.read_text()) or {}).get("experiments") or {}).get(experiment)
        if entry is not None:
            return preset.name, entry
    return None


def run_command(experiment: str) -> str:
    """The command whose run writes ``results/<experiment>``: the preset that names it, or ``make run``."""
    found = preset_of(experiment)
    if found:
        return f".venv/bin/snakemake --cores 2 --configfile config/presets/{found[0]}"
    if experiment == "demo":
        return "make run"
    return f"the workflow with a config naming experiment {experiment!r}"


def require_run(experiment_dir: Path, *paths: str) -> None:
    """Exit with one line naming the run to make where ``experiment_dir`` (``results/<experiment>``) lacks one of
    ``paths`` (relative to it), instead of a traceback from the first read."""
    for path in paths:
        if not (Path(experiment_dir) / path).exists():
            raise SystemExit(f"{experiment_dir}: no finished run ({Path(experiment_dir) / path} is missing); "
                             f"run `{run_command(Path(experiment_dir).name)}` first")


def run_seconds(root: Path) -> float:
    """The experiment's recorded job seconds (Snakemake's ``benchmarks/<experiment>/**.tsv`` beside its
    ``results/``), 0 where there are none."""
    import pandas as pd

    tsvs = (root.parents[1] / "benchmarks" / root.name).rglob("*.tsv")
    return float(sum(pd.read_csv(p, sep="\t")["s"].sum() for p in tsvs))


def pair_means(by_pair: dict, name: str, reference: str, floor: str = "floor") -> tuple[float, float, float, float]:
    """Over pairs (a pair's runs, e.g. Corel-1000's seeds, averaged first): the mean accuracy and balanced
    accuracy of setting ``name``, its mean gap to setting ``reference`` (reference - name: a regret where the
    reference is the best cell) and its largest fall below ``floor`` over every run."""
    import numpy as np

    per_pair = [np.mean([[r[name][0], r[name][1], r[reference][0] - r[name][0]] for r in runs], axis=0)
                for runs in by_pair.values()]
    acc, bal, gap = np.mean(per_pair, axis=0)
    worst = min(min(r[name][0] - r[floor][0] for r in runs) for runs in by_pair.values())
    return float(acc), float(bal), float(gap), float(worst)


def scores_over_dims(z, n_source: int, ys, yt, dims, center: str = "none") -> list[dict]:
    """The workflow's SVM metrics on the first ``d`` components of a TCA embedding, for each ``d`` in ``dims``."""
    from layerfuse.evaluate import evaluate_svm

    return [evaluate_svm(z[:n_source, :d], ys, z[n_source:, :d], yt, center=center)[0] for d in dims]


def fused_parser(doc: str) -> argparse.ArgumentParser:
    """Arguments of the benchmarks that refit TCA on a finished experiment's fused stores with the
    workflow's defaults: the experiment folder, --dims, --bandwidth-factor, --mu."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment_dir", type=Path)
    p.add_argument("--dims", type=int, nargs="+", default=[256, 192, 128, 96, 64])
    p.add_argument("--bandwidth-factor", type=float, default=3.0)
    p.add_argument("--mu", type=float, default=1.0)
    return p


def fused_stores(experiment_dir: Path, backbone: str = "*") -> list[Path]:
    """The fused feature stores of a finished experiment (one backbone, or all), or exit saying to run it."""
    paths = sorted(experiment_dir.glob(f"fused/{backbone}/*.h5"))
    if not paths:
        require_run(experiment_dir, f"fused/{backbone}/global.h5")
    return paths


def image_parser(doc: str, images: int, data: str = "corel1000") -> argparse.ArgumentParser:
    """Arguments shared by the benchmarks that read a folder of images: --images and --data."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=images, help="images to use (a spread subset of --data)")
    p.add_argument("--data", type=Path, default=SHARED_DATA / data,
                   help="a <class>/<image> folder; synthetic images where it does not exist")
    return p


def _child(conn, fn, args, kwargs):
    try:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        elapsed = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(("ok", elapsed, peak_mb, result))
    except Exception as exc:  # report, don't crash the benchmark
        conn.send(("error", 0.0, 0.0, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def measure(fn, *args, timeout: float = 900, **kwargs):
    """Run ``fn(*args)`` in a fresh process: (seconds, peak RSS in MB, result or error string)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    if not parent.poll(timeout):
        proc.kill()
        proc.join()
        return float("nan"), float("nan"), "timeout"
    status, elapsed, peak, result = parent.recv()
    proc.join()
    if status != "ok":
        return float("nan"), float("nan"), result
    return elapsed, peak, result
