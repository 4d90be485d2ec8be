"""Changed inputs rerun exactly what depends on them: image folders and a user's .pth, by content, not mtime.

A real run on image folders and a user weight file inside the working directory
(relative paths, so a copied working directory is the same run); each case
changes one input of a copy and asserts the dry run's job list.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from layerfuse.synthetic import make_demo_dataset

from .helpers import planned_jobs, snakemake

pytestmark = pytest.mark.slow

CONFIG = {
    "experiments": {"folders": {"source": {"path": "data/source"}, "target": {"path": "data/target"}}},
    "image_size": 64,
    "backbones": {"imagenet": {"weights": "data/imagenet.pth", "architecture": "keras", "preprocessing": "caffe"}},
    "layers": {"global": "flatten", "block1": "layer1.0"},
    "local_layers": ["block1"],
    "extract": {"batch_size": 4, "store_maps": True},
    "reducers": {"flatten": {"method": "flatten", "segment": 100}},
    "tca": {"dims": [4]},
}
# What a change of one domain's folder reruns: that domain's preparation and extraction, then every
# step that reads both domains; the other domain's images and features stay.
TARGET_CHAIN = {"prepare_images": 1, "extract_features": 1, "reduce_layer": 1, "fuse_features": 2, "fit_adapter": 2,
                "evaluate_svm": 2, "select_configuration": 1, "export_model": 1, "aggregate_scores": 1, "report_group": 1,
                "report_landing": 1, "all": 1}
WEIGHTS_CHAIN = {"prepare_weights": 1, "extract_features": 2, "reduce_layer": 1, "fuse_features": 2, "fit_adapter": 2,
                 "evaluate_svm": 2, "select_configuration": 1, "export_model": 1, "aggregate_scores": 1, "report_group": 1,
                "report_landing": 1, "all": 1}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, mini_baseline):
    """The folder experiment run to completion once; its config file sits outside the working directory."""
    root = tmp_path_factory.mktemp("changed")
    work = root / "work"
    make_demo_dataset(work / "data", n_classes=3, n_source=4, n_target=3, size=64, seed=3)
    shutil.copyfile(mini_baseline / "resources/weights/imagenet.pth", work / "data/imagenet.pth")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    snakemake(work, config=config)
    assert planned_jobs(work, config) == {}
    return work, config


@pytest.fixture
def copy(folder_run, tmp_path):
    """A copy of the finished working directory (mtimes kept): by itself it has nothing to do."""
    work, config = folder_run
    dest = tmp_path / "work"
    shutil.copytree(work, dest, symlinks=True)
    return dest, config


def _replace_keeping_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_copy_and_a_touch_rerun_nothing(copy):
    """Content, not mtime: a copied working directory and a touched image and .pth plan no job."""
    work, config = copy
    assert planned_jobs(work, config) == {}
    for path in (work / "data/target/circle/000.png", work / "data/imagenet.pth"):
        os.utime(path)
    assert planned_jobs(work, config) == {}


def test_a_deleted_report_page_is_remade(copy):
    """Every output of the selection job is a target of `all`: deleting its Predictions page alone reruns it."""
    work, config = copy
    (work / "results/folders/predictions/imagenet.html").unlink()
    jobs = planned_jobs(work, config)
    assert jobs.get("select_configuration") == 1 and "evaluate_svm" not in jobs, jobs


@pytest.mark.parametrize("domain", ["source", "target"])
def test_added_image_reruns_its_domain_chain(copy, domain):
    """One image more in a domain: that domain's images and features, then what reads both (same counts)."""
    work, config = copy
    shutil.copyfile(work / f"data/{domain}/circle/000.png", work / f"data/{domain}/circle/extra.png")
    assert planned_jobs(work, config) == TARGET_CHAIN


def test_removed_target_image_reruns_the_target_chain(copy):
    work, config = copy
    (work / "data/target/circle/001.png").unlink()
    assert planned_jobs(work, config) == TARGET_CHAIN


def test_changed_content_with_the_old_mtime_reruns(copy):
    """An image replaced by other bytes with its mtime set back (``cp -p``, ``rsync -t``) is still seen."""
    work, config = copy
    other = (work / "data/target/square/000.png").read_bytes()
    _replace_keeping_mtime(work / "data/target/circle/000.png", other)
    assert planned_jobs(work, config) == TARGET_CHAIN


def test_changed_user_weights_rerun_from_the_weights(copy):
    """Other weights under the same .pth name (mtime kept) rerun the conversion and everything after it."""
    import torch

    work, config = copy
    pth = work / "data/imagenet.pth"
    sd = torch.load(pth, weights_only=True)
    sd["fc.bias"] = sd["fc.bias"] + 1
    st = pth.stat()
    torch.save(sd, pth)
    os.utime(pth, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert planned_jobs(work, config) == WEIGHTS_CHAIN


def test_changed_class_map_reruns_both_domains(copy, tmp_path):
    """A class map that drops a folder changes the class set: both domains are prepared again."""
    work, config = copy
    cfg = yaml.safe_load(config.read_text())
    cfg["experiments"]["folders"]["target"]["class_map"] = {"triangle": None}
    changed = tmp_path / "class_map.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(work, changed)
    assert jobs["prepare_images"] == 2 and jobs["extract_features"] == 2 and jobs["evaluate_svm"] == 2
