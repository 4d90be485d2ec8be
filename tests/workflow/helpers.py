"""Helpers for the workflow tests: real Snakemake subprocesses on small configs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("config.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake_cmd(workdir: Path, *args: str, config: Path = CONFIG, cores: int = 2) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(config), "--cores", str(cores), *args]


def snakemake(workdir: Path, *args: str, config: Path = CONFIG, check: bool = True,
              cores: int = 2) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, config=config, cores=cores)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(workdir: Path, config: Path = CONFIG, *extra: str) -> dict[str, int]:
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workdir, "--dry-run", *extra, config=config).stdout
    jobs = {}
    if "Job stats:" not in out:
        return jobs
    table = out.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def variant(tmp_path: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load(CONFIG.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
