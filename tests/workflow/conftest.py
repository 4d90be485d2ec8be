"""Fixtures shared by the workflow tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import snakemake

FAULTS_CONFIG = Path(__file__).with_name("faults.yaml")


@pytest.fixture(scope="session")
def mini_baseline(tmp_path_factory):
    """``faults.yaml`` run to completion locally at --cores 2: the reference other runs must equal."""
    workdir = tmp_path_factory.mktemp("baseline")
    snakemake(workdir, config=FAULTS_CONFIG)
    return workdir


def seeded_workdir(tmp_path: Path, baseline: Path) -> Path:
    """A fresh working directory holding only the baseline's converted weights (not under test)."""
    workdir = tmp_path / "work"
    shutil.copytree(baseline / "resources", workdir / "resources")
    return workdir
