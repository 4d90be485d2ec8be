"""An unlabelled target (``labels: none``): images in any sub-folders, classes from the source, predictions out."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml

from layerfuse.synthetic import make_demo_dataset

from .conftest import seeded_workdir
from .helpers import snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory, mini_baseline):
    """The demo's target images moved into a flat folder and a nested one, their class folders gone."""
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
           "extract": {"batch_size": 4}, "reducers": {"flatten": {"method": "flatten", "segment": 100}},
           "tca": {"dims": [6, 4]}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, config=config)
    return work, truth, proc


def test_predictions_for_every_target_image(unlabelled_run):
    """One row per usable target image, named relative to the target folder, with a source class and a margin."""
    work, truth, _ = unlabelled_run
    pred = pd.read_csv(work / "results/field/predictions/imagenet.csv")
    assert sorted(pred["image"]) == sorted(truth)
    assert set(pred["predicted"]) <= {"circle", "square", "triangle"}
    assert pred["confidence"].notna().all() and pred["cell"].nunique() == 1
    assert "true" not in pred.columns
    confusion = pd.read_csv(work / "results/field/predictions/imagenet_confusion.csv", index_col=0)
    assert list(confusion.index) == ["unlabelled"] and confusion.to_numpy().sum() == len(truth)


def test_no_accuracy_and_no_oracle_without_labels(unlabelled_run):
    work, _, _ = unlabelled_run
    scores = pd.read_csv(work / "results/field/accuracy.csv")
    assert scores["accuracy"].isna().all() and len(scores) == 2 * 3 * 2
    selection = pd.read_csv(work / "results/field/selection/imagenet.csv")
    assert "oracle" not in set(selection["kind"]) and selection["default"].sum() == 1
    tables = (work / "results/field/tables.md").read_text()
    assert "The target is unlabelled" in tables and "Label-free selection" in tables
    assert "`notes.txt` | not an image extension (.txt)" in tables


def test_unlabelled_source_is_refused_in_one_line(tmp_path):
    from .helpers import CONFIG

    cfg = yaml.safe_load(CONFIG.read_text())
    (tmp_path / "s/a").mkdir(parents=True)
    cfg["experiments"] = {"x": {"source": {"path": str(tmp_path / "s"), "labels": "none"},
                                "target": {"path": str(tmp_path / "s")}}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--dry-run", config=config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "config error: experiments.x.source.labels: the source must be labelled" in out
