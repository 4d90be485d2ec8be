"""Real Snakemake runs on a tiny config: the full grid, incremental reruns, lint, bad config."""
from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from .helpers import PICK_ORANGE, REPO, SNAKEMAKE, assert_landing_page_shows, planned_jobs, snakemake, variant

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The tiny config run to completion once (real weights, real HDF5, real Snakemake)."""
    workdir = tmp_path_factory.mktemp("run")
    proc = snakemake(workdir)
    return workdir, proc


def test_full_grid(finished_run):
    """Every cell of the grid is scored and gathered: 2 backbones x 4 feature sets x (no TCA + 2 dims) x 2 centrings."""
    workdir, proc = finished_run
    df = pd.read_csv(workdir / "results/tiny/accuracy.csv")
    assert len(df) == 2 * 4 * 3 * 2 and set(df["center"]) == {"none", "domain"}
    assert set(df["backbone"]) == {"imagenet", "finetuned"}
    assert set(df["featureset"]) == {"global", "block1-pca", "block1-flatten", "block1-pool2d"}
    assert set(df["adapter"]) == {"none", "tca-6", "tca-4"}
    assert df["accuracy"].between(0, 1).all()
    # the label-free criteria only where the selection picks: scope global, the global feature set at svm.center
    crit, candidates = df.filter(like="crit_"), (df["featureset"] == "global") & (df["center"] == "domain")
    assert crit[candidates].notna().any(axis=1).all() and crit[~candidates].isna().all(axis=None)
    assert (df["n_target"] == 12).all() and (df["n_source"] == 15).all()
    tables = (workdir / "results/tiny/tables.md").read_text()
    assert "| Avg |" in tables and "block1 PCA" in tables
    assert "/ accuracy (%)" in tables and "balanced_accuracy (%)" not in tables   # 4 target images per class
    assert planned_jobs(workdir) == {}, "a finished run must have nothing left to do"
    report = (workdir / "results/report/tiny.md").read_text()
    assert "mean over 1 run(s)" in report
    for png in ("tiny_fusion_vs_global.png", "tiny_accuracy_vs_dims.png"):
        assert (workdir / "results/report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetuned_backbone(finished_run):
    """The fine-tuned backbone trains on the source, records its curve, and shares the frozen local layers."""
    import json

    workdir, _ = finished_run
    record = json.loads((workdir / "results/tiny/weights/finetuned.json").read_text())
    assert record["finetune"]["trainable"] == "conv3" and len(record["sha256"]) == 64
    curve = pd.read_csv(workdir / "results/tiny/finetune/finetuned_curve.csv")
    assert len(curve) == 3 and curve["loss"].notna().all()
    assert not (workdir / "results/tiny/features/finetuned/source/block1.h5").exists()
    # the source's fine-tuned global features come from the fine-tuning job's cache, not a second pass
    import h5py

    with h5py.File(workdir / "results/tiny/features/finetuned/source/global.h5") as f:
        assert f.attrs["computed_from"] == "fine-tuning cache"
        assert f.attrs["weights_sha256"] == record["sha256"]
        assert f["features"].shape == (15, 2048) and f["image_ids"].shape == (15,)
    assert not (workdir / "logs/tiny/extract_layer/finetuned/source/global.log").exists()
    assert (workdir / "logs/tiny/extract_layer/finetuned/target/global.log").exists()


def test_html_report(finished_run, tmp_path):
    """`snakemake --report` renders the landing summary, tables, figures and config of a finished run."""
    workdir, _ = finished_run
    out = tmp_path / "report.html"
    snakemake(workdir, "--report", str(out))
    html = out.read_text(errors="replace")
    assert out.stat().st_size > 100_000
    for name in ("tiny_fusion_vs_global.png", "tiny_accuracy_vs_dims.png", "config.yaml", "imagenet.html", "tiny.html",
                 "finetuned_confusion.png"):
        assert name in html
    # the landing page leads with each experiment's pick beside the source-only classifier (rule report_landing)
    assert "At a glance" in html and "source only" in html and "rule report_landing" not in html
    assert_landing_page_shows(out, tmp_path, "tiny", PICK_ORANGE)      # headless Chromium, where installed


def test_feature_store_attributes(finished_run):
    """Stores record model, weights hash, layer, preprocessing and image-list hash; no partial files."""
    import h5py

    workdir, _ = finished_run
    with h5py.File(workdir / "results/tiny/features/imagenet/source/block1.h5") as f:
        assert f["features"].shape == (15, 256, 15, 15)
        assert f["features"].chunks is None and f["features"].id.get_offset() % 4096 == 0  # compression: none
        assert f.attrs["direct_io"] in (True, False)
        attrs = dict(f.attrs)
    assert attrs["node"] == "layer1.0" and attrs["preprocessing"] == "caffe"
    assert len(attrs["weights_sha256"]) == 64 and len(attrs["image_list_sha256"]) == 64
    assert not list(workdir.rglob("*.partial"))


def test_reordered_config_reruns_nothing(finished_run, tmp_path):
    """The same config with its keys in another order (sorted by safe_dump) plans no job."""
    workdir, _ = finished_run
    assert planned_jobs(workdir, variant(tmp_path, "same")) == {}


def test_changing_svm_params_reruns_only_classification(finished_run, tmp_path):
    workdir, _ = finished_run
    jobs = planned_jobs(workdir, variant(tmp_path, "svm", **{"svm.C": 2.0}))
    assert set(jobs) == {"evaluate_svm", "select_configuration", "export_model", "aggregate_scores", "report_group",
                         "report_landing", "dump_config", "all"}
    assert jobs["evaluate_svm"] == 8                # one per feature set and backbone, every adapter


def test_changing_the_tables_centring_rescores_only_the_candidates(finished_run, tmp_path):
    """Both centrings' SVMs are in every cell; the label-free criteria are scored only where the selection
    picks (scope global: the global feature set at ``svm.center``), so ``svm.center`` reruns that job alone."""
    workdir, _ = finished_run
    jobs = planned_jobs(workdir, variant(tmp_path, "center", **{"svm.center": "none"}))
    assert set(jobs) == {"evaluate_svm", "select_configuration", "export_model", "aggregate_scores", "report_group",
                         "report_landing", "dump_config", "all"}
    assert jobs["evaluate_svm"] == 2                # the global feature set, once per backbone


def test_changing_tca_dims_reruns_only_tca_and_later(finished_run, tmp_path):
    workdir, _ = finished_run
    jobs = planned_jobs(workdir, variant(tmp_path, "dims", **{"tca.dims": [7, 4]}))
    assert set(jobs) == {"fit_adapter", "evaluate_svm", "select_configuration", "export_model", "aggregate_scores", "report_group",
                         "report_landing", "dump_config", "all"}


def test_unrelated_change_does_not_extract(finished_run, tmp_path):
    """Changing the fusion scaling reruns fusion and later, never extraction or reduction."""
    workdir, _ = finished_run
    jobs = planned_jobs(workdir, variant(tmp_path, "fusion", **{"fusion.scaling": "l2"}))
    assert not {"extract_features", "extract_layer", "reduce_layer", "prepare_images"} & set(jobs)
    assert jobs["fuse_features"] == 8


def test_one_pass_extraction_writes_every_layer(finished_run):
    """By default one job per (pretrained backbone, domain) writes every layer a feature set uses."""
    workdir, _ = finished_run
    logs = workdir / "logs/tiny/extract_features/imagenet"
    assert sorted(p.name for p in logs.iterdir()) == ["source.log", "target.log"]
    stores = workdir / "results/tiny/features/imagenet/source"
    assert sorted(p.name for p in stores.iterdir()) == ["block1.h5", "global.h5"]  # block2 is in no feature set


def test_adding_a_layer_reextracts_the_domains_in_one_pass(finished_run, tmp_path):
    """With one_pass (the default) a new layer re-extracts each domain once, every layer together."""
    workdir, _ = finished_run
    jobs = planned_jobs(workdir, variant(tmp_path, "layer", local_layers=["block1", "block2"]))
    assert jobs["extract_features"] == 2            # imagenet source and target: global, block1, block2
    assert "extract_layer" not in jobs and "finetune_backbone" not in jobs
    assert jobs["reduce_layer"] == 6                # both blocks x 3 reducers (block1's stores are rewritten)


def test_per_layer_jobs_give_the_one_pass_results_and_add_layers_alone(tmp_path, mini_baseline):
    """``one_pass: false``: one job per layer, the same accuracy CSV as one pass, byte for byte; a new
    layer then extracts only that layer."""
    import yaml

    from .conftest import FAULTS_CONFIG, seeded_workdir

    cfg = yaml.safe_load(FAULTS_CONFIG.read_text())
    cfg["extract"]["one_pass"] = False
    config = tmp_path / "per_layer.yaml"
    config.write_text(yaml.safe_dump(cfg))
    workdir = seeded_workdir(tmp_path, mini_baseline)
    snakemake(workdir, config=config)
    accuracy = "results/mini/accuracy.csv"
    assert (workdir / accuracy).read_bytes() == (mini_baseline / accuracy).read_bytes()
    assert len(list((workdir / "logs/mini/extract_layer/imagenet").rglob("*.log"))) == 4
    assert not (workdir / "logs/mini/extract_features").exists()
    cfg["layers"]["block2"] = "layer1.1"
    cfg["local_layers"] = ["block1", "block2"]
    config.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(workdir, config)
    assert jobs["extract_layer"] == 2               # block2, source and target
    assert "extract_features" not in jobs
    assert jobs["reduce_layer"] == 1 and jobs["fuse_features"] == 1 and jobs["fit_adapter"] == 1  # block2-pca


def test_lint_is_clean():
    proc = subprocess.run([SNAKEMAKE, "--lint", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("change,message", [
    ({"svm.C": -1}, "config error: svm.C: -1 is less than or equal to the minimum of 0"),
    ({"svm.gamma": 1}, "config error: svm: Additional properties are not allowed ('gamma' was unexpected)"),
    ({"local_layers": ["block9"]}, "local_layers: 'block9' is not a key of layers"),
    ({"tca.mu": "big"}, "config error: tca.mu: 'big' is not of type 'number'"),
])
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    proc = snakemake(tmp_path, "--dry-run", config=variant(tmp_path, "bad", **change), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_summary_is_a_few_lines(finished_run):
    """``python -m layerfuse summary`` (what ``make run`` ends with): the pick per backbone with its accuracy
    and the source-only classifier's (Global, no adapter, no centring), where predictions and models are; at
    most 10 lines."""
    import subprocess
    import sys

    workdir, _ = finished_run
    proc = subprocess.run([sys.executable, "-m", "layerfuse", "summary", str(workdir / "results/tiny")],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) <= 10, proc.stdout + proc.stderr
    assert sum("picked" in line and "source only (Global, no adaptation)" in line for line in lines) == 2
    assert "model/<backbone>" in lines[-1]


def test_pair_tables_document_runs_of_one_clean_commit(finished_run, tmp_path):
    """``benchmarks/pair_tables.py`` (docs/pairs.md): it states the runs' commit and writes each backbone's
    headline row and the run's tables; it refuses, in one line, runs outside a git clone or in a clone with
    local changes."""
    import shutil
    import sys

    workdir, _ = finished_run
    clone = tmp_path / "clone"
    shutil.copytree(workdir / "results/tiny", clone / "results/tiny")
    script = [sys.executable, str(REPO / "benchmarks/pair_tables.py"), str(clone / "results/tiny")]

    def generate():
        return subprocess.run(script, capture_output=True, text=True, timeout=120)

    outside = generate()
    assert outside.returncode == 1 and outside.stderr.strip().endswith("not inside a git clone; run the workflow "
                                                                        "in a clone of the commit to document")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (clone / "Snakefile").write_text("# the code\n")
    subprocess.run([*git, "add", "Snakefile"], check=True)
    subprocess.run([*git, "commit", "-qm", "code"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True).stdout.strip()
    proc = generate()
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert f"Runs of commit `{commit}`" in text
    rows = [line for line in text.split("\n## ")[0].splitlines() if line.startswith("| tiny |")]
    assert [r.split(" | ")[1] for r in rows] == ["finetuned", "imagenet"]
    assert "\n### tiny / imagenet / accuracy (%)" in text
    (clone / "Snakefile").write_text("# changed\n")
    dirty = generate()
    assert dirty.returncode == 1 and "local changes (Snakefile …)" in dirty.stderr
