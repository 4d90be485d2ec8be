"""Maps off the disk (`extract.store_maps: false`): the reducers run in the extraction pass, PCA projects onto
loadings fitted on a sample of the source, and the results are those of a run that stores every map."""
from __future__ import annotations

import json

import h5py
import pytest
import yaml

from .conftest import FAULTS_CONFIG, seeded_workdir
from .helpers import snakemake

pytestmark = pytest.mark.slow


def no_maps_config(tmp_path, experiments=None, **extract):
    """faults.yaml (15 source and 12 target images, PCA of block1) without stored maps."""
    cfg = yaml.safe_load(FAULTS_CONFIG.read_text())
    cfg["extract"].update({"store_maps": False, **extract})
    if experiments:
        cfg["experiments"] = experiments
    path = tmp_path / "no_maps.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_one_core_sharded_run_without_maps_writes_the_baseline_csv(tmp_path, mini_baseline):
    """At --cores 1 (one torch thread), sharded, with the maps reduced in the pass: the accuracy CSV of the
    baseline (--cores 2, one pass, maps stored), byte for byte; no map is left on the disk; the saved PCA
    model predicts as the workflow."""
    from layerfuse.images import read_manifest
    from layerfuse.model import predict
    from layerfuse.stages import export_model

    workdir = seeded_workdir(tmp_path, mini_baseline)
    config = no_maps_config(tmp_path, shard_size=8)
    snakemake(workdir, config=config, cores=1)
    res = workdir / "results/mini"
    assert (res / "accuracy.csv").read_bytes() == (mini_baseline / "results/mini/accuracy.csv").read_bytes()
    stores = sorted(p.relative_to(res).as_posix() for p in (res / "features").rglob("*.h5"))
    assert stores == [f"features/imagenet/{d}/{k}.h5" for d in ("source", "target") for k in ("block1-pca", "global")]
    with h5py.File(res / "pca/imagenet/block1/pca.h5") as f:           # pca_sample 2000: capped at the source
        assert (f.attrs["n_sample"], f.attrs["n_source"]) == (15, 15)
    assert not (res / "reduced").exists()       # fusion reads the pass's vector stores: no second copy
    assert ("**PCA fitted on** (maps not stored, `extract.pca_sample`): 15 of 15 source images (imagenet block1)."
            in (res / "tables.md").read_text())
    model = tmp_path / "model"
    inputs = {"selection": res / "selection/imagenet.csv",
              "predictions": [res / f"scores/imagenet/{fs}.h5" for fs in ("global", "block1-pca")],
              "fused": [res / f"fused/imagenet/{fs}.h5" for fs in ("global", "block1-pca")],
              "adapted": [res / f"adapted/imagenet/{fs}/tca.h5" for fs in ("global", "block1-pca")],
              "reduced": [], "maps": [],
              "pca": [res / "pca/imagenet/block1/pca.h5"],
              "global_store": res / "features/imagenet/target/global.h5",
              "source_manifest": res / "manifest/source.tsv", "target_manifest": res / "manifest/target.tsv",
              "weights": workdir / "resources/weights/imagenet.pth",
              "record": workdir / "resources/weights/imagenet.json"}
    params = json.loads(json.dumps(yaml.safe_load(config.read_text())))
    cfg = {"classes": sorted(p.name for p in (workdir / "results/mini/demo_data/source").iterdir()),
           "layers": params["layers"], "global_layer": "global", "image_size": 64, "max_file_mb": 64,
           "extract": {"batch_size": 4, "local_dtype": "float16"}, "reducers": params["reducers"],
           "fusion": {"scaling": "block-rms"}, "svm": {"C": 1.0, "class_weight": "balanced", "max_iter": 20000},
           "tca": {"kernel": "rbf"}}
    export_model(inputs, cfg, model, cell={"featureset": "block1-pca", "adapter": "tca-4", "center": "domain"})
    images = [r["image_id"] for r in read_manifest(res / "manifest/target.tsv") if r["status"] == "ok"]
    got = predict(model, [workdir / "results/mini/demo_data/target"], batch_size=3).set_index("image")
    with h5py.File(res / "scores/imagenet/block1-pca.h5") as f:
        cells, pred = json.loads(f.attrs["cells"]), f["pred"][()]
    expected = [cfg["classes"][i] for i in pred[cells.index(["tca-4", "domain"])]]
    assert got.loc[images, "predicted"].tolist() == expected


@pytest.mark.parametrize("extract,experiments,message", [
    ({"one_pass": False}, None, "config error: extract.store_maps: false reduces the maps inside the one-pass "
                                "extraction; set extract.one_pass: true or store_maps: true"),
    ({}, {"pooled": {"source": {"path": "data"}, "split": {"test_size": 0.5, "seed": 0}}},
     "config error: extract.store_maps: false is not available for experiments that split one dataset (pooled)"),
])
def test_what_maps_off_the_disk_cannot_do_is_one_config_line(tmp_path, extract, experiments, message):
    (tmp_path / "data" / "a").mkdir(parents=True)
    proc = snakemake(tmp_path, "--dry-run", config=no_maps_config(tmp_path, experiments, **extract), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert message in out, out[-2000:]
