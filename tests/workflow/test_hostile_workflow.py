"""Hostile cases seen through Snakemake: a job orphaned by a killed Snakemake, a duplicate config key."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest

from .helpers import CONFIG, snakemake

ORPHAN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    Path("logs").mkdir(exist_ok=True)
    sys.stderr = open("logs/orphan.log", "w", buffering=1)
    from layerfuse._snakemake import run
    run(lambda: (print("started", file=sys.__stdout__, flush=True), time.sleep(120)))
""")


@pytest.mark.slow                                  # waits for a job to start: the full suite's
def test_a_rerun_names_a_job_still_running_from_a_killed_snakemake(tmp_path):
    """A job still writing holds its lock: the next run names it as live (pid, start time), with no advice to kill
    it; a dry run is not blocked."""
    job = subprocess.Popen([sys.executable, "-c", ORPHAN], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "started"
        assert snakemake(tmp_path, "--dry-run").returncode == 0
        proc = snakemake(tmp_path, "dump_config", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert re.search(rf"error: a run is live in this folder: job pid {job.pid} since \d{{4}}-\d\d-\d\d "
                         rf"\d\d:\d\d:\d\d \(log logs/orphan.log\)", out), out
        assert "kill" not in out and "Traceback" not in out
    finally:
        job.kill()
        job.wait()
    time.sleep(0.1)
    assert snakemake(tmp_path, "--dry-run").returncode == 0          # the lock died with the job


def test_duplicate_config_key_is_named(tmp_path):
    """YAML keeps the last of two equal keys; layerfuse refuses the file instead, naming the key and line."""
    text = CONFIG.read_text() + "svm: {C: 0.5}\n"       # a second top-level `svm`
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(text)
    proc = snakemake(tmp_path, "--dry-run", config=cfg, check=False)
    out = proc.stdout + proc.stderr
    line = len(CONFIG.read_text().splitlines()) + 1
    assert proc.returncode != 0
    assert f"config error: {cfg}:{line}: key 'svm' is given twice" in out and "Traceback" not in out
