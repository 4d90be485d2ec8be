"""Faults: kill -9 mid-stage then rerun, determinism across runs and core counts, unwritable outputs.

Every test drives real Snakemake subprocesses on ``faults.yaml`` (real weights, real HDF5).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pandas as pd
import pytest

from .conftest import FAULTS_CONFIG as CONFIG
from .conftest import seeded_workdir
from .helpers import snakemake, snakemake_cmd

pytestmark = pytest.mark.slow

ACCURACY = "results/mini/accuracy.csv"


def run(workdir: Path, cores: int = 2, *args: str):
    return snakemake(workdir, *args, config=CONFIG, cores=cores)


def assert_nothing_half_written(workdir: Path) -> None:
    """Every finished-looking output opens; only ``*.partial`` files may be incomplete."""
    for path in (workdir / "results").rglob("*"):
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                assert len(f.keys()) > 0, path
        elif path.suffix in (".csv", ".tsv"):
            assert len(pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")) > 0, path


# reduce_layer and the SVM grid write through the same `*.partial` path as fit_adapter (layerfuse.h5io)
@pytest.mark.parametrize("rule", ["extract_features", "fit_adapter"])
def test_kill_9_then_rerun_gives_identical_results(tmp_path, mini_baseline, rule):
    """SIGKILL the whole Snakemake process group as soon as a ``rule`` job starts; unlock, rerun, compare bytes."""
    workdir = seeded_workdir(tmp_path, mini_baseline)
    proc = subprocess.Popen(snakemake_cmd(workdir, config=CONFIG, cores=1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    logs = workdir / "logs" / "mini" / rule
    deadline = time.monotonic() + 300
    try:
        while not (logs.is_dir() and any(logs.rglob("*.log"))):
            assert proc.poll() is None, f"snakemake ended before any {rule} job started"
            assert time.monotonic() < deadline, f"no {rule} job started within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (workdir / ACCURACY).exists()
    assert_nothing_half_written(workdir)
    run(workdir, 2, "--unlock")
    run(workdir)
    assert (workdir / ACCURACY).read_bytes() == (mini_baseline / ACCURACY).read_bytes()
    assert not list((workdir / "results").rglob("*.partial"))


def test_results_folder_that_is_a_file_fails_in_one_line(tmp_path, mini_baseline):
    """An unwritable results location stops the run with a one-line error naming the path."""
    workdir = seeded_workdir(tmp_path, mini_baseline)
    (workdir / "results").write_text("not a folder")
    proc = snakemake(workdir, config=CONFIG, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: results: exists but is not a folder" in out and "Traceback" not in out
