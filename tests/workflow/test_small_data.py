"""An own-data run on small folders with the defaults (5 classes x 10 labelled source images, 40 unlabelled
target images), in the folder of another config's finished run (tests/workflow/conftest.py's
``unlabelled_run``): each report describes its own run only."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from layerfuse.synthetic import make_demo_dataset

from .helpers import COUNTS_BLUE, assert_landing_page_shows, snakemake

pytestmark = pytest.mark.slow


def own_config(root: Path, name: str, experiment: str, **extra) -> Path:
    """The README's "Classify your own images" config, plus ``extra`` keys."""
    cfg = {"experiments": {experiment: {"source": {"path": "shop/source"},
                                        "target": {"path": "shop/target", "labels": "none"}}}, **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# small images, one backbone and one local block keep the run short; every size the data limits is the default
QUICK = {"image_size": 64, "backbones": {"imagenet": {"weights": "keras-npm"}}, "local_layers": ["block1"]}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, unlabelled_run):
    root = tmp_path_factory.mktemp("small")
    work = unlabelled_run[0]
    make_demo_dataset(root / "demo", n_classes=5, n_source=10, n_target=8, seed=3, size=64)
    (work / "shop/target").mkdir(parents=True)
    for i, path in enumerate(sorted((root / "demo/target").glob("*/*.png"))):
        shutil.copyfile(path, work / f"shop/target/img{i:02d}.png")
    shutil.copytree(root / "demo/source", work / "shop/source")
    config = own_config(root, "shop", "shopone", **QUICK)
    proc = snakemake(work, config=config)
    return root, work, config, proc


def test_the_readme_config_plans_on_small_folders(small_run):
    """The README's own-data config, nothing but the folders: no refusal, the capped defaults named once each."""
    root, work, _, _ = small_run
    proc = snakemake(work, "--dry-run", config=own_config(root, "readme", "readme"))
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: tca.dims: the default [256, 192, 128, 96, 64] capped to [90, 64] (experiment 'readme' has 90 images, "
        "source + target)",
        "note: reducers.pca.n_components: the default 256 capped to 49 (experiment 'readme' has 50 source images)"]


def test_a_value_written_too_large_is_still_refused(small_run):
    root, work, _, _ = small_run
    proc = snakemake(work, "--dry-run", config=own_config(root, "big", "big", tca={"dims": [128, 64]}), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert ("config error: tca.dims: 128 components exceed the 90 images of experiment 'big' (source + target); "
            "use at most 90") in proc.stdout + proc.stderr


def test_a_mapping_that_drops_defaults_is_named(small_run):
    root, work, _, _ = small_run
    proc = snakemake(work, "--dry-run", config=own_config(root, "pcaonly", "pcaonly",
                                                            reducers={"pca": {"method": "pca"}}))
    assert ("note: reducers: your mapping replaces the default one and leaves out flatten, pool2d "
            "(add them to keep them)") in proc.stderr


def test_small_folders_run_with_the_defaults(small_run):
    """The run uses the capped values, records them (config dump, PCA model, tables.md) and classifies every image."""
    _, work, _, proc = small_run
    assert "note: tca.dims: the default [256, 192, 128, 96, 64] capped to [90, 64]" in proc.stderr
    pred = pd.read_csv(work / "results/shopone/predictions/imagenet.csv")
    assert len(pred) == 40 and set(pred["predicted"]) <= {"circle", "cross", "square", "star", "triangle"}
    scores = pd.read_csv(work / "results/shopone/accuracy.csv")
    assert {"tca-90", "tca-64"} <= set(scores["adapter"])
    assert set(scores["featureset"]) == {"global", "block1-pca", "block1-flatten", "block1-pool2d"}
    with h5py.File(work / "results/shopone/pca/imagenet/block1/pca.h5") as f:
        assert f["explained_variance"].shape == (49,)
    dump = yaml.safe_load((work / "results/report/runs/shopone/config.yaml").read_text())
    assert dump["tca"]["dims"] == [90, 64] and dump["reducers"]["pca"]["n_components"] == 49
    tables = (work / "results/shopone/tables.md").read_text()
    assert "**Defaults capped to the data**" in tables and "capped to [90, 64]" in tables


def test_each_config_reports_its_own_run(small_run, unlabelled_run, tmp_path):
    """Two configs' runs in one folder: each report's landing page and results are its own experiment's only; a
    config without a finished run, or changed since its run, is refused in one line."""
    root, work, first, _ = small_run
    second = unlabelled_run[0].parent / "config.yaml"                 # experiment "field", finished there
    pages = {}
    for config, name in ((first, "shopone"), (second, "field")):
        out = tmp_path / f"{name}.html"
        snakemake(work, "--report", str(out), config=config)
        pages[name] = out.read_text(errors="replace")
        assert (work / f"results/report/runs/{name}/workflow.rst").exists()
    assert "Experiments in this run: shopone." in pages["shopone"] and "results/field/" not in pages["shopone"]
    assert "Experiments in this run: field." in pages["field"] and "shopone" not in pages["field"]
    assert "results/shopone/" in pages["shopone"] and "results/field/" in pages["field"]
    assert_landing_page_shows(tmp_path / "shopone.html", tmp_path, "shopone", COUNTS_BLUE)   # unlabelled: counts
    never = own_config(root, "never", "shopthree", **QUICK)
    for config, args, why in ((never, (), "no finished run of this config to report"),
                              (first, ("--config", "svm={C: 0.5}"), "the results were made with another config")):
        proc = snakemake(work, "--report", str(tmp_path / "x.html"), *args, config=config, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and f"error: {why}" in out and "Traceback" not in out
        assert not (tmp_path / "x.html").exists()
