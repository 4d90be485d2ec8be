"""Fixtures shared by the workflow tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from layerfuse.synthetic import make_demo_dataset

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


@pytest.fixture(scope="session")
def unlabelled_run(tmp_path_factory, mini_baseline):
    """The demo's target images moved into a flat folder and a nested one, their class folders gone
    (tests/workflow/test_unlabelled.py; test_small_data.py runs a second config in the same folder).
    ``(workdir, truth, process)``; the config is ``workdir.parent / "config.yaml"``."""
    root = tmp_path_factory.mktemp("unlabelled")
    work = seeded_workdir(root, mini_baseline)
    make_demo_dataset(root / "demo", n_classes=3, n_source=5, n_target=4, seed=4, size=64)
    target = work / "data/target"
    (target / "batch2/more").mkdir(parents=True)
    truth = {}
    for i, path in enumerate(sorted((root / "demo/target").glob("*/*.png"))):
        rel = f"img{i:02d}.png" if i % 2 else f"batch2/more/img{i:02d}.png"
        shutil.copyfile(path, target / rel)
        truth[rel] = path.parent.name
    (target / "notes.txt").write_text("not an image")
    shutil.copytree(root / "demo/source", work / "data/source")
    cfg = {"experiments": {"field": {"source": {"path": "data/source"},
                                     "target": {"path": "data/target", "labels": "none"}}},
           "image_size": 64, "backbones": {"imagenet": {"weights": "keras-npm"}},
           "layers": {"global": "flatten", "block1": "layer1.0"}, "local_layers": ["block1"],
           "extract": {"batch_size": 4, "store_maps": True}, "reducers": {"flatten": {"method": "flatten", "segment": 100},
                                                      "pca": {"method": "pca", "n_components": 8}},
           "tca": {"dims": [6, 4]}, "svm": {"center": "prior"},      # prior centring: the grid gains its cells
           # skada's adapters: CORAL fits the 2048-d global features only (the fusions are wider: skipped);
           # JDA, a kernel map like TCA's
           "adapters": {"sa": {"method": "subspace_alignment", "n_components": 4},
                        "coral": {"method": "coral", "max_features": 2048},
                        "jda": {"method": "jda", "n_components": 4, "n_iter": 2}}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, config=config)
    return work, truth, proc
