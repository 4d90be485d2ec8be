"""Sharded extraction (`extract.shard_size`): one job per shard, gathered into the one-pass stores byte for byte,
a killed shard rerun alone, bad shard sizes refused in one line."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import FAULTS_CONFIG, seeded_workdir
from .helpers import planned_jobs, snakemake, snakemake_cmd

pytestmark = pytest.mark.slow

STORES = [f"results/mini/features/imagenet/{d}/{layer}.h5" for d in ("source", "target") for layer in ("global", "block1")]


def sharded_config(tmp_path: Path, **extract) -> Path:
    """faults.yaml (15 source and 12 target images, batches of 4) with ``extract`` changed."""
    cfg = yaml.safe_load(FAULTS_CONFIG.read_text())
    cfg["extract"].update(extract)
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_shards_gather_into_the_one_pass_stores_and_a_killed_shard_reruns_alone(tmp_path, mini_baseline):
    """Shards of 8 images: 2 per domain.  SIGKILL the run when the third shard starts, rerun: the two finished
    shards are not extracted again, and every store equals the unsharded run's bytes (the SLURM test checks
    the accuracy table of a sharded run)."""
    config = sharded_config(tmp_path, shard_size=8)
    workdir = seeded_workdir(tmp_path, mini_baseline)
    assert planned_jobs(workdir, config)["extract_shard"] == 4
    proc = subprocess.Popen(snakemake_cmd(workdir, *STORES, config=config, cores=1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    logs = workdir / "logs/mini/extract_shard"
    deadline = time.monotonic() + 300
    try:
        while not (logs.is_dir() and len(list(logs.rglob("*.log"))) >= 3):
            assert proc.poll() is None, "snakemake ended before the third shard started"
            assert time.monotonic() < deadline, "the third shard did not start within 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(p for p in (workdir / "benchmarks/mini/extract_shard").rglob("*.tsv"))
    assert len(done) == 2                       # the shards that finished before the kill
    finished_at = {p: p.stat().st_mtime_ns for p in done}
    snakemake(workdir, "--unlock", config=config)
    snakemake(workdir, *STORES, config=config)
    assert {p: p.stat().st_mtime_ns for p in done} == finished_at
    assert len(list((workdir / "benchmarks/mini/extract_shard").rglob("*.tsv"))) == 4
    for path in STORES:
        assert (workdir / path).read_bytes() == (mini_baseline / path).read_bytes(), path
    assert not list((workdir / "results/mini/features").rglob("shards/*/*.h5"))    # temporary: removed


@pytest.mark.parametrize("extract,message", [
    ({"shard_size": 0}, "config error: extract.shard_size: 0 is less than the minimum of 1"),
    ({"shard_size": 6}, "config error: extract.shard_size: 6 is not a multiple of extract.batch_size 4 (a shard "
                        "starts on a batch); use 4 or 8"),
    ({"shard_size": 8, "one_pass": False}, "config error: extract.shard_size: shards split the one-pass extraction"),
])
def test_bad_shard_sizes_are_one_config_line(tmp_path, extract, message):
    proc = snakemake(tmp_path, "--dry-run", config=sharded_config(tmp_path, **extract), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert message in out, out[-2000:]


def test_a_shard_larger_than_the_domain_is_one_shard(tmp_path, mini_baseline):
    workdir = seeded_workdir(tmp_path, mini_baseline)
    assert planned_jobs(workdir, sharded_config(tmp_path, shard_size=400))["extract_shard"] == 2
