"""An unlabelled target (``labels: none``): images in any sub-folders, classes from the source, predictions out."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import h5py

from layerfuse.images import read_manifest

from .helpers import snakemake

pytestmark = pytest.mark.slow


def test_predictions_for_every_target_image(unlabelled_run):
    """One row per usable target image, named relative to the target folder, with a source class and a margin."""
    work, truth, _ = unlabelled_run
    pred = pd.read_csv(work / "results/field/predictions/imagenet.csv")
    assert sorted(pred["image"]) == sorted(truth)
    assert set(pred["predicted"]) <= {"circle", "square", "triangle"}
    assert pred["probability"].between(0, 1).all() and pred["margin"].notna().all() and pred["cell"].nunique() == 1 and set(pred["refine"]) == {"self_training"}
    assert "true" not in pred.columns
    confusion = pd.read_csv(work / "results/field/predictions/imagenet_confusion.csv", index_col=0)
    assert list(confusion.index) == ["unlabelled"] and confusion.to_numpy().sum() == len(truth)
    page = (work / "results/field/predictions/imagenet.html").read_text()
    assert pred["cell"].iloc[0].replace("/", " / ") in page and "Each criterion's vote" in page
    assert page.count("<figure") == min(len(truth), sum(min(n, 6) for n in pred["predicted"].value_counts()))


def test_no_accuracy_and_no_oracle_without_labels(unlabelled_run):
    work, _, _ = unlabelled_run
    scores = pd.read_csv(work / "results/field/accuracy.csv")
    assert scores["accuracy"].isna().all() and len(scores) == 3 * 6 * 3
    assert set(scores["center"]) == {"none", "domain", "prior"}
    priors = scores.loc[scores["center"] == "prior", "target_priors"].dropna()
    assert len(priors) == 3 * 5 + 1 and all(abs(sum(map(float, p.split(";"))) - 1) < 1e-3 for p in priors)
    skipped = scores[scores["failed"].notna()]
    assert set(skipped["adapter"]) == {"coral"} and set(skipped["featureset"]) == {"block1-flatten", "block1-pca"}
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


def _predict_cli(*args):
    return subprocess.run([sys.executable, "-m", "layerfuse", "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_saved_model_predicts_as_the_workflow(unlabelled_run, tmp_path):
    """``predict`` on the target folder with the exported model gives the workflow's predictions."""
    work, truth, _ = unlabelled_run
    model = work / "results/field/model/imagenet"
    record = json.loads((model / "model.json").read_text())
    assert sorted(p.name for p in model.iterdir() if not p.name.startswith(".")) == ["model.h5", "model.json"]
    assert record["classes"] == ["circle", "square", "triangle"] and record["format"] == 1
    workflow = pd.read_csv(work / "results/field/predictions/imagenet.csv")
    assert record["cell"]["featureset"] + "/" + record["cell"]["adapter"] + "/" + record["cell"]["center"] \
        == workflow["cell"].iloc[0]
    proc = _predict_cli(work / "data/target", "--model", model, "-o", tmp_path / "p.csv")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    ours = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert ours.loc[ours["image"] == "notes.txt", "status"].item() == "skipped"
    ours = ours[ours["status"] == "ok"].set_index("image").loc[workflow["image"]]
    assert list(ours["predicted"]) == list(workflow["predicted"])
    np.testing.assert_allclose(ours["margin"].astype(float), workflow["margin"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours["probability"].astype(float), workflow["probability"], atol=1e-3)
    assert record["cell"]["calibration"]["method"] == "platt" and np.isfinite(record["cell"]["calibration"]["a"])
    # the pick's SVM was refitted by target self-training (the default): the model keeps the last refit
    assert record["cell"]["refine"]["method"] == "self_training" and set(ours["refine"]) == {"self_training"}


FEATURESETS = ["global", "block1-flatten", "block1-pca"]
SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def _model_inputs(work, selection, predictions, adapters) -> dict:
    """export_model's inputs for the unlabelled run's three feature sets (its block1 maps are stored)."""
    res = work / "results/field"
    return {"selection": selection, "predictions": predictions,
            "fused": [res / f"fused/imagenet/{f}.h5" for f in FEATURESETS],
            "adapted": [res / f"adapted/imagenet/{f}/{a}.h5" for f in FEATURESETS for a in adapters],
            "reduced": [res / "reduced/imagenet/block1/pca.h5"], "maps": [res / "features/imagenet/source/block1.h5"],
            "global_store": res / "features/imagenet/target/global.h5",
            "source_manifest": res / "manifest/source.tsv", "target_manifest": res / "manifest/target.tsv",
            "weights": work / "resources/weights/imagenet.pth", "record": work / "resources/weights/imagenet.json"}


def _model_params(**more) -> dict:
    return {"classes": ["circle", "square", "triangle"], "layers": {"global": "flatten", "block1": "layer1.0"},
            "global_layer": "global", "image_size": 64, "max_file_mb": 64,
            "extract": {"batch_size": 4, "local_dtype": "float16"},
            "reducers": {"flatten": {"method": "flatten", "segment": 100}, "pca": {"method": "pca", "n_components": 8}},
            "fusion": {"scaling": "block-rms"}, "svm": SVM, **more}


@pytest.mark.parametrize("featureset", ["global", "block1-flatten", "block1-pca"])
def test_every_cell_exports_a_model_that_reproduces_it(unlabelled_run, tmp_path, featureset):
    """Each reducer, raw, TCA, a skada adapter or JDA, centred or not: the model's predictions equal the cell's in the
    workflow."""
    from layerfuse.model import predict
    from layerfuse.stages import export_model

    work, _, _ = unlabelled_run
    res = work / "results/field"
    fs = FEATURESETS
    inputs = _model_inputs(work, res / "selection/imagenet.csv", [res / f"scores/imagenet/{f}.h5" for f in fs],
                           ("tca", "sa", "coral", "jda"))
    params = _model_params()
    with h5py.File(res / f"scores/imagenet/{featureset}.h5") as f:
        cells, pred = json.loads(f.attrs["cells"]), f["pred"][()]
    images = [r["image_id"] for r in read_manifest(res / "manifest/target.tsv") if r["status"] == "ok"]
    cases = [("none", "domain"), ("tca-4", "none"), ("tca-6", "domain"), ("sa", "domain"), ("tca-4", "prior"),
             ("jda", "domain")]
    if featureset == "global":
        cases.append(("coral", "none"))
    else:                                   # CORAL skipped these (wider than max_features): no model
        with pytest.raises(ValueError, match=r"block1-.*/coral.h5: adapter coral failed on this feature set \(skipped: \d+ "):
            export_model(inputs, params, tmp_path / "coral", cell={"featureset": featureset, "adapter": "coral",
                                                                    "center": "none"})
    for adapter, center in cases:
        out = tmp_path / f"{adapter}-{center}"
        export_model(inputs, params, out, cell={"featureset": featureset, "adapter": adapter, "center": center})
        table = predict(out, [work / "data/target"], batch_size=3).set_index("image")
        got = table.loc[images, "predicted"].tolist()
        expected = [params["classes"][i] for i in pred[cells.index([adapter, center])]]
        assert got == expected, (featureset, adapter, center)


def test_predict_refuses_bad_models_in_one_line(unlabelled_run, tmp_path, capsys):
    """Each refusal is one ``error:`` line, exit status 1 and no output file: the first through a new
    interpreter (``python -m layerfuse``, as a user runs it), the rest through the CLI's ``main`` in this
    process (the same code without a new interpreter's torch import)."""
    from layerfuse.__main__ import main

    work, _, _ = unlabelled_run
    model = tmp_path / "model"
    shutil.copytree(work / "results/field/model/imagenet", model)
    target = work / "data/target"
    out = tmp_path / "p.csv"

    def error(*extra, images=target, model=model):
        capsys.readouterr()
        code = main(["predict", str(images), "--model", str(model), "-o", str(out), *map(str, extra)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and not out.exists(), lines
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    proc = _predict_cli(target, "--model", model, "-o", out, "--weights", tmp_path / "none.pth")
    assert proc.returncode == 1 and not out.exists(), proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [error("--weights", tmp_path / "none.pth")]
    assert "weights not found" in proc.stderr
    other = tmp_path / "other.pth"
    data = (work / "resources/weights/imagenet.pth").read_bytes()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "does not match the recorded" in error("--weights", other)
    record = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**record, "format": 99}))
    assert "model format 99" in error()
    (model / "model.json").write_text(json.dumps(record))
    with h5py.File(model / "model.h5", "a") as f:
        f["svm/intercept"][0] += 1
    assert "was modified" in error()
    (model / "model.json").unlink()
    assert "model.json: not found" in error()
    assert "no such file or folder" in error(images=tmp_path / "nope", model=work / "results/field/model/imagenet")
    if not __import__("torch").cuda.is_available():    # a GPU asked for where there is none
        assert error("--device", "cuda", model=work / "results/field/model/imagenet") == (
            "error: --device is cuda, but torch sees no CUDA device on this machine; use auto (a GPU where there is "
            "one) or cpu")


def test_unlabelled_target_without_images_is_refused_in_one_line(tmp_path):
    from PIL import Image

    from .helpers import CONFIG

    for cls in ("a", "b"):
        (tmp_path / "s" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 80, 0, 0)).save(tmp_path / "s" / cls / f"{i}.png")
    (tmp_path / "t/sub").mkdir(parents=True)
    (tmp_path / "t/sub/notes.txt").write_text("no image here")
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["experiments"] = {"x": {"source": {"path": str(tmp_path / "s")},
                                "target": {"path": str(tmp_path / "t"), "labels": "none"}}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "w", "--dry-run", config=config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "config error: experiments.x: 6 source and 0 target images found" in out
    assert "the target anywhere below its folder" in out


def test_a_new_adapter_is_a_module_and_a_schema_entry(unlabelled_run, tmp_path):
    """A contributor's adapter (``tests/support/mean_match.py``), registered and named in a copy of the schema,
    is checked like the built-in ones and goes through fitting, scoring with the label-free criteria, the
    selection, the model export and ``predict``, whose predictions are the scored cell's."""
    from types import SimpleNamespace

    from layerfuse import adapt
    from layerfuse.config import check_config, validate_config
    from layerfuse.model import predict
    from layerfuse.stages import evaluate_svm, export_model, fit_adapter, select_configuration

    work, _, _ = unlabelled_run
    res = work / "results/field"
    schema = yaml.safe_load((Path(__file__).parents[2] / "schemas/config.schema.yaml").read_text())
    schema["properties"]["adapters"]["additionalProperties"]["properties"]["method"]["enum"].append("mean_match")
    schema["properties"]["adapters"]["additionalProperties"]["properties"]["scale"] = {"type": "boolean"}
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    adapt.register_method("mean_match", "tests.support.mean_match:MeanMatchAdapter", "affine")
    try:
        cfg = {"experiments": {"x": {"synthetic": {}}}, "adapters": {"mm": {"method": "mean_match", "scale": True}}}
        check_config(validate_config(cfg, tmp_path / "schema.yaml"))
        fused = res / "fused/imagenet/global.h5"
        store = tmp_path / "adapted/imagenet/global/mm.h5"
        fit_adapter(fused, cfg["adapters"]["mm"], store)
        scores, preds = tmp_path / "scores/imagenet/global.csv", tmp_path / "scores/imagenet/global.h5"
        selection = {"criteria": ["dev", "source"], "default": "dev", "validation_size": 0.2, "seed": 0,
                     "scope": "all"}
        evaluate_svm({"none": fused, "mm": store}, ["none", "mm"], {"C": 1.0, "class_weight": "balanced",
                     "max_iter": 20000}, {"experiment": "field", "backbone": "imagenet", "featureset": "global"},
                     scores, predictions=preds, selection=selection)
        outputs = SimpleNamespace(**{k: tmp_path / f"out_{k}.csv" for k in ("selection", "predictions", "confusion")},
                                  figure=tmp_path / "confusion.png")
        picks = select_configuration([scores], [preds], res / "manifest/source.tsv", res / "manifest/target.tsv",
                                     {"selection": selection, "center": "domain", "global_layer": "global"}, outputs)
        assert {"none", "mm"} >= set(picks.loc[picks["kind"] == "criterion", "adapter"])
        inputs = {"selection": outputs.selection, "predictions": [preds], "fused": [fused], "adapted": [store],
                  "reduced": [], "maps": [], "global_store": res / "features/imagenet/target/global.h5",
                  "source_manifest": res / "manifest/source.tsv", "target_manifest": res / "manifest/target.tsv",
                  "weights": work / "resources/weights/imagenet.pth", "record": work / "resources/weights/imagenet.json"}
        params = {"classes": ["circle", "square", "triangle"], "layers": {"global": "flatten"},
                  "global_layer": "global", "image_size": 64, "max_file_mb": 64,
                  "extract": {"batch_size": 4, "local_dtype": "float16"}, "reducers": {},
                  "fusion": {"scaling": "block-rms"}, "svm": {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}}
        model = tmp_path / "model"
        record = export_model(inputs, params, model, cell={"featureset": "global", "adapter": "mm", "center": "domain"})
        assert record["adapter"] == {"name": "mm", "method": "mean_match"}
        with h5py.File(preds) as f:
            expected = f["pred"][json.loads(f.attrs["cells"]).index(["mm", "domain"])]
        images = [r["image_id"] for r in read_manifest(res / "manifest/target.tsv") if r["status"] == "ok"]
        table = predict(model, [work / "data/target"], batch_size=3).set_index("image")
        assert table.loc[images, "predicted"].tolist() == [params["classes"][i] for i in expected]
    finally:
        del adapt.METHODS["mean_match"]


def test_a_vote_across_feature_sets_exports_a_model_that_votes_as_the_workflow(unlabelled_run, tmp_path):
    """``selection.combine.members: all``: the Global, flatten and PCA feature sets' cells vote; the saved model holds
    each feature set's reducer and fusion (``featuresets``) and ``predict`` gives the workflow's predictions and
    probabilities."""
    from types import SimpleNamespace

    from layerfuse.model import predict
    from layerfuse.stages import evaluate_svm, export_model, select_configuration

    work, _, _ = unlabelled_run
    res = work / "results/field"
    fs = FEATURESETS
    refine = {"method": "self_training", "rounds": 2, "final_share": 1.0, "balance": "uniform"}
    # entropy: DEV's own held-out fits need more than these 5 source images per class
    selection = {"criteria": ["entropy"], "default": "entropy", "validation_size": 0.2, "seed": 0, "scope": "global",
                 "centerings": ["domain"], "refine": refine, "combine": {"method": "criterion", "members": "all"}}
    scores, preds = [tmp_path / f"{f}.csv" for f in fs], [tmp_path / f"{f}.h5" for f in fs]
    for f, csv, h5 in zip(fs, scores, preds):
        evaluate_svm({"none": res / f"fused/imagenet/{f}.h5", "tca": res / f"adapted/imagenet/{f}/tca.h5"},
                     ["none", "tca-4"], SVM, {"experiment": "field", "backbone": "imagenet", "featureset": f}, csv,
                     predictions=h5, selection=selection)
    outputs = SimpleNamespace(**{k: tmp_path / f"out_{k}.csv" for k in ("selection", "predictions", "confusion")},
                              figure=tmp_path / "confusion.png")
    select_configuration(scores, preds, res / "manifest/source.tsv", res / "manifest/target.tsv",
                         {"selection": selection, "center": "domain", "global_layer": "global"}, outputs)
    workflow = pd.read_csv(outputs.predictions)
    assert set(workflow["cell"]) == {"all/ensemble/domain"}
    record = export_model(_model_inputs(work, outputs.selection, preds, ("tca",)),
                          _model_params(refine=refine, seed=0), tmp_path / "model")
    assert record["cell"]["featureset"] == "all" and sorted(record["featuresets"]) == sorted(fs)
    assert sorted({m["featureset"] for m in record["cell"]["members"]}) == sorted(fs)
    table = predict(tmp_path / "model", [work / "data/target"], batch_size=3).set_index("image")
    ours = table.loc[workflow["image"]]
    assert ours["predicted"].tolist() == workflow["predicted"].tolist()
    np.testing.assert_allclose(ours["probability"].astype(float), workflow["probability"], atol=1e-3)
