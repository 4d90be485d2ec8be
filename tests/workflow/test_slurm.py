"""The workflow on a real single-node SLURM started for the test, through profiles/slurm.

Needs root (to run slurmctld/slurmd) and Debian's ``slurm-wlm`` and ``munge``,
which the test installs with apt-get when they are missing.  It starts munged
(private key and socket), slurmctld and slurmd with a minimal config (no
accounting, ``proctrack/linuxproc``), runs ``faults.yaml`` with
``--profile profiles/slurm`` and checks the accuracy CSV equals a local run's
byte for byte, then stops exactly the daemons it started.

The config goes to /etc/slurm/slurm.conf because the jobstep plugin strips
``SLURM_CONF`` from the environment of the nested ``srun``; an existing file
not written by this test makes it skip rather than touch it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import FAULTS_CONFIG, seeded_workdir
from .helpers import REPO, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.system]

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by layerfuse tests/workflow/test_slurm.py"
PACKAGES = ["slurm-wlm", "munge"]


def _install() -> None:
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("slurmctld/slurmd are not installed and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env,
                              capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"could not install {' '.join(PACKAGES)}: {proc.stderr.strip()[-300:]}")


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 4000


def _config(run: Path, host: str, cpus: int) -> str:
    return "\n".join([
        MARKER,
        "ClusterName=layerfuse-test",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={run}/munge.socket",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "ReturnToService=2",
        "MinJobAge=600",                       # finished jobs stay visible to squeue (status command)
        f"StateSaveLocation={run}/state",
        f"SlurmdSpoolDir={run}/spool",
        f"SlurmctldPidFile={run}/slurmctld.pid",
        f"SlurmdPidFile={run}/slurmd.pid",
        f"SlurmctldLogFile={run}/slurmctld.log",
        f"SlurmdLogFile={run}/slurmd.log",
        "SlurmctldPort=16817",
        "SlurmdPort=16818",
        f"NodeName={host} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _pid(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    # The daemon creates the file before it writes the pid into it: wait for the content too.
    while not (path.exists() and path.read_text().split()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear or stayed empty")
        time.sleep(0.2)
    return int(path.read_text().split()[0])


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running single-node SLURM; yields the node's CPU count."""
    if os.environ.get("LAYERFUSE_SYSTEM_TESTS") != "1":
        pytest.skip("installs slurm-wlm and munge and writes /etc/slurm: set LAYERFUSE_SYSTEM_TESTS=1 (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        pytest.skip(f"{SLURM_CONF} exists and was not written by this test: not touching this machine's SLURM")
    _install()
    run = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (run / sub).mkdir()
    key = run / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host, cpus = socket.gethostname(), os.cpu_count() or 1
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(_config(run, host, cpus))
    pids = []
    try:
        subprocess.run(["munged", "--force", f"--socket={run}/munge.socket", f"--key-file={key}",
                        f"--pid-file={run}/munged.pid", f"--log-file={run}/munged.log",
                        f"--seed-file={run}/munge.seed"], check=True, timeout=30)
        pids.append(_pid(run / "munged.pid"))
        subprocess.run(["slurmctld", "-f", str(SLURM_CONF)], check=True, timeout=60)
        pids.append(_pid(run / "slurmctld.pid"))
        subprocess.run(["slurmd", "-f", str(SLURM_CONF)], check=True, timeout=60)
        pids.append(_pid(run / "slurmd.pid"))
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, (run / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield cpus
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        SLURM_CONF.unlink(missing_ok=True)


def test_profile_slurm_matches_a_local_run(tmp_path, slurm_cluster, mini_baseline):
    """Every job goes through sbatch, each extraction shard its own job (one thread each: two run at once on
    a 2-CPU node); the small jobs are packed into group jobs; results equal a local unsharded run's."""
    from .test_shards import STORES, sharded_config

    cpus = slurm_cluster
    workdir = seeded_workdir(tmp_path, mini_baseline)
    threads = min(4, cpus)
    proc = snakemake(workdir, "--profile", str(REPO / "profiles/slurm"),
                     "--set-threads", "extract_shard=1", f"finetune_backbone={threads}", f"fit_pca={threads}",
                     # a round of status checks every 2 s, not 10 (about 20 s of this test)
                     "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
                     config=sharded_config(tmp_path, shard_size=8), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Group job svm_grid" in log and "Group job adapt" in log
    jobs = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %T %k"], capture_output=True, text=True).stdout
    states = [line.split()[1] for line in jobs.splitlines()]
    # 1 demo data + 2 image sets + 4 extraction shards (8 images each: 2 per domain) + 2 gathers + 1 PCA
    # + 1 fuse/TCA group + 1 SVM group + 1 model export; the weights were seeded; config dump, selection,
    # aggregation and report are localrules
    assert states == ["COMPLETED"] * 13, jobs
    assert jobs.count("extract_shard") == 4, jobs
    for path in STORES + ["results/mini/accuracy.csv"]:
        assert (workdir / path).read_bytes() == (mini_baseline / path).read_bytes(), path
