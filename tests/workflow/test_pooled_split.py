"""Seeded splits of one dataset share one pool: images decoded and features extracted once."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from layerfuse.fusion import fuse
from layerfuse.h5io import read_pair
from layerfuse.images import read_manifest
from layerfuse.reduce import flatten_pool
from layerfuse.synthetic import make_demo_dataset

from .conftest import seeded_workdir
from .helpers import planned_jobs, snakemake

pytestmark = pytest.mark.slow


def split_config(tmp_path, seeds=(0, 1), finetuned=True):
    data = make_demo_dataset(tmp_path / "data", n_classes=3, n_source=6, n_target=1, size=64, seed=3)["source"]
    backbones = {"imagenet": {"weights": "keras-npm"}}
    if finetuned:
        backbones["finetuned"] = {"finetune": {"base": "imagenet", "epochs": 1, "batch_size": 8}}
    cfg = {
        "experiments": {f"s{seed}": {"group": "split", "source": {"path": str(data)},
                                     "split": {"test_size": 0.34, "seed": seed}} for seed in seeds},
        "image_size": 64,
        "backbones": backbones,
        "layers": {"global": "flatten", "block1": "layer1.0"},
        "local_layers": ["block1"],
        "extract": {"batch_size": 4},
        "reducers": {"pca": {"method": "pca", "n_components": 4}, "flatten": {"method": "flatten", "segment": 100}},
        "tca": {"dims": [4]},
    }
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def test_seeds_extract_the_pretrained_layers_once(tmp_path):
    """Five seeds plan one decode of the dataset and one extraction per pretrained layer; only the
    fine-tuned global layer (trained on each seed's source) is per experiment: the fine-tuning job
    writes the source's from its cache, and only the target is extracted."""
    config, _ = split_config(tmp_path, seeds=range(5))
    jobs = planned_jobs(tmp_path / "work", config)
    assert jobs["prepare_pool_images"] == 1
    assert jobs["extract_pool_features"] == 1                     # imagenet: global + block1 in one pass, all seeds
    assert jobs["extract_layer"] == 5                             # finetuned global of each seed's target
    assert jobs["finetune_backbone"] == 5
    assert jobs["reduce_layer"] == 5                              # PCA is fitted on each seed's source
    assert jobs["reduce_pool_layer"] == 1                         # flatten is per image: once
    assert jobs["evaluate_svm"] == 5 * 2 * 3                      # seeds x backbones x feature sets


def test_pooled_run_reads_each_seeds_rows(tmp_path, mini_baseline):
    """A real run: each seed's fused features are the pool's rows listed in its manifests, and
    changing a seed re-extracts and re-reduces nothing but that seed's PCA."""
    config, cfg = split_config(tmp_path, finetuned=False)
    workdir = seeded_workdir(tmp_path, mini_baseline)
    snakemake(workdir, config=config)
    pools = list((workdir / "results/pools").iterdir())
    assert len(pools) == 1 and pools[0].name.startswith("source-")
    assert not (workdir / "results/s0/features").exists()
    with h5py.File(pools[0] / "features/imagenet/source/block1.h5") as f:
        maps = f["features"][()]
        index = {image_id: i for i, image_id in enumerate(f["image_ids"].asstr()[()])}
    with h5py.File(pools[0] / "features/imagenet/source/global.h5") as f:
        glob = f["features"][()]
    with h5py.File(pools[0] / "reduced/imagenet/block1/flatten.h5") as f:
        flat = f["features"][()]
    assert len(index) == 18
    np.testing.assert_array_equal(flat, flatten_pool(maps, 100))
    for exp in ("s0", "s1"):
        rows = {d: [index[r["image_id"]] for r in read_manifest(workdir / f"results/{exp}/manifest/{d}.tsv")
                    if r["status"] == "ok"] for d in ("source", "target")}
        expected = fuse([(glob[rows["source"]], glob[rows["target"]]), (flat[rows["source"]], flat[rows["target"]])],
                        "block-rms")
        fused = read_pair(workdir / f"results/{exp}/fused/imagenet/block1-flatten.h5")
        for got, want in zip(fused[:2], expected):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        scores = pd.read_csv(workdir / f"results/{exp}/accuracy.csv")
        assert len(scores) == 3 * 2 * 2 and (scores["n_target"] == 7).all() and (scores["n_source"] == 11).all()
    cfg["experiments"]["s1"]["split"]["seed"] = 7
    config.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(workdir, config)
    assert not {"extract_pool_features", "extract_pool_layer", "prepare_pool_images"} & set(jobs)
    assert "reduce_pool_layer" not in jobs
    assert jobs["reduce_layer"] == 1 and jobs["prepare_images"] == 2
