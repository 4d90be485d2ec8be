"""Fusion scalings, the SVM evaluation and the paper-layout table."""
import numpy as np
import pandas as pd
import pytest

from layerfuse.evaluate import evaluate_svm
from layerfuse.fusion import fuse
from layerfuse.report import paper_table, table_markdown


def test_block_rms_equalises_blocks(rng):
    """After block-rms each block has mean squared norm 1 on the source."""
    g = (rng.rand(20, 30) * 100, rng.rand(5, 30) * 100)
    l = (rng.rand(20, 7) * 0.01, rng.rand(5, 7) * 0.01)
    xs, xt = fuse([g, l], "block-rms")
    assert xs.shape == (20, 37) and xt.shape == (5, 37)
    for sl in (slice(0, 30), slice(30, 37)):
        assert np.mean(np.sum(xs[:, sl] ** 2, 1)) == pytest.approx(1.0, rel=1e-5)


def test_l2_and_none(rng):
    a = (rng.rand(4, 3) + 1, rng.rand(2, 3) + 1)
    xs, _ = fuse([a], "l2")
    np.testing.assert_allclose(np.linalg.norm(xs, axis=1), 1, rtol=1e-6)
    xs, _ = fuse([a], "none")
    np.testing.assert_allclose(xs, a[0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown fusion scaling"):
        fuse([a], "zscore")


def test_evaluate_svm_metrics(rng):
    """Balanced accuracy differs from accuracy on an imbalanced target."""
    xs = np.r_[rng.randn(20, 2) - 2, rng.randn(20, 2) + 2]
    ys = np.r_[np.zeros(20), np.ones(20)]
    xt = np.r_[rng.randn(16, 2) - 2, np.array([[-2.0, -2.0]] * 4)]
    yt = np.r_[np.zeros(16), np.ones(4)]
    m, pred = evaluate_svm(xs, ys, xt, yt, center="none")
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_svm(xs, np.zeros(40), xt, yt)


def test_paper_table_layout():
    rows = []
    for fs, base in (("global", 0.9), ("block1-pca", 0.95), ("block1-flatten", 0.8)):
        for dims in (256, 64):
            rows.append({"featureset": fs, "adapter": f"tca-{dims}", "n_components": dims, "accuracy": base})
        rows.append({"featureset": fs, "adapter": "none", "n_components": None, "accuracy": base - 0.1})
    table = paper_table(pd.DataFrame(rows))
    assert list(table.index) == ["256", "64", "Avg", "no TCA"]
    assert list(table.columns) == ["Global", "block1 PCA", "block1 Flatten"]
    assert table.loc["Avg", "block1 PCA"] == pytest.approx(95.0)
    md = table_markdown(table)
    assert "**95.00**" in md and "**80.00**" not in md


def test_domain_centering_removes_a_domain_offset(rng):
    """A target translated far along the class axis is misread by the plain SVM; centring each domain
    on its own mean restores it, and an unknown centring is named."""
    xs = np.r_[rng.randn(30, 2) - [2, 0], rng.randn(30, 2) + [2, 0]]
    ys = np.r_[np.zeros(30), np.ones(30)]
    xt = np.r_[rng.randn(30, 2) - [2, 0], rng.randn(30, 2) + [2, 0]] + [3.5, 1.0]
    yt = ys.copy()
    plain, _ = evaluate_svm(xs, ys, xt, yt, center="none")
    centred, _ = evaluate_svm(xs, ys, xt, yt, center="domain")
    assert plain["accuracy"] < 0.7
    assert centred["accuracy"] > 0.9
    with pytest.raises(ValueError, match="svm.center"):
        evaluate_svm(xs, ys, xt, yt, center="target")


def test_balanced_accuracy_table_only_where_it_differs():
    import pandas as pd

    from layerfuse.report import table_metrics

    same = pd.DataFrame({"accuracy": [0.5, 0.75], "balanced_accuracy": [0.5, 0.75]})
    assert table_metrics(same) == ("accuracy",)
    differs = pd.DataFrame({"accuracy": [0.5, 0.75], "balanced_accuracy": [0.5, 0.7]})
    assert table_metrics(differs) == ("accuracy", "balanced_accuracy")


@pytest.mark.parametrize("scaling", ["block-rms", "l2"])
def test_a_fused_block_stores_its_own_columns_and_reads_back_after_the_global_ones(tmp_path, scaling):
    """The global vector is stored once (the global feature set's pair); a block's fused pair holds the
    block's scaled columns, and read_pair returns exactly what fusing both blocks in memory gives."""
    import h5py

    from layerfuse.h5io import read_pair, read_stacked_pair, write_arrays
    from layerfuse.stages import fuse_features

    rng = np.random.default_rng(0)
    ys, yt = rng.integers(0, 3, 12), rng.integers(0, 3, 8)
    gs, gt = rng.normal(size=(12, 6)).astype(np.float32), rng.normal(size=(8, 6)).astype(np.float32)
    ls, lt = rng.normal(size=(12, 4)).astype(np.float32) * 9, rng.normal(size=(8, 4)).astype(np.float32) * 9
    for name, (s, t) in {"global": (gs, gt), "block": (ls, lt)}.items():
        for domain, x, y in (("source", s, ys), ("target", t, yt)):
            write_arrays(tmp_path / f"{name}_{domain}.h5", {"features": x, "labels": y,
                                                            "image_ids": np.array([f"{i}.png" for i in range(len(y))])})
    fused = tmp_path / "fused"
    fuse_features(tmp_path / "global_source.h5", tmp_path / "global_target.h5", None, scaling, fused / "global.h5")
    fuse_features(None, None, None, scaling, fused / "block1-flatten.h5",
                  local_stores=(tmp_path / "block_source.h5", tmp_path / "block_target.h5"),
                  global_pair=fused / "global.h5")
    with h5py.File(fused / "block1-flatten.h5") as f:
        assert f["source"].shape == (12, 4) and f["target"].shape == (8, 4)
        assert f.attrs["global_pair"] == "global.h5" and f.attrs["global_width"] == 6
    xs, xt, rys, ryt, attrs = read_pair(fused / "block1-flatten.h5")
    want_s, want_t = fuse([(gs, gt), (ls, lt)], scaling)
    assert xs.dtype == np.float32 and np.array_equal(xs, want_s) and np.array_equal(xt, want_t)
    assert np.array_equal(rys, ys) and np.array_equal(ryt, yt) and attrs["local_width"] == 4
    # both domains are rows of one array, each stored part read into its place (TCA fits on the stack)
    stacked, n_source, *_ = read_stacked_pair(fused / "block1-flatten.h5")
    assert n_source == 12 and np.array_equal(stacked, np.vstack([want_s, want_t])) and xs.base is not None
    # a global pair rewritten with other rows is caught, naming both files
    write_arrays(fused / "global.h5", {"source": gs[:11], "target": gt, "source_labels": ys[:11], "target_labels": yt},
                 {"scaling": scaling, "blocks": 1})
    with pytest.raises(ValueError, match=r"block1-flatten\.h5: its rows do not match .*global\.h5"):
        read_pair(fused / "block1-flatten.h5")


def test_report_landing_puts_each_experiments_pick_beside_source_only_and_the_paper(tmp_path):
    """The report's landing page: report/workflow.rst with, at its marked line, a row per experiment and
    backbone (the pick, source only, the best cell, the paper's Global average where it has a table); the
    page renders as reStructuredText with the table in it."""
    from pathlib import Path

    from docutils.core import publish_parts

    from layerfuse.select import selection_table
    from layerfuse.stages import LANDING_MARK, report_landing

    cells = pd.DataFrame({"featureset": ["global"] * 4, "adapter": ["none", "none", "tca-8", "tca-8"],
                          "center": ["none", "domain"] * 2, "accuracy": [0.912, 0.936, 0.90, 0.956],
                          "balanced_accuracy": [0.92, 0.94, 0.90, 0.959], "crit_dev": [0.0, 0.1, 0.2, 0.9]})
    paths = []
    for experiment, backbone in (("officeaw", "imagenet"), ("officeaw", "finetuned"), ("mine", "imagenet")):
        path = tmp_path / "results" / experiment / "selection" / f"{backbone}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = selection_table(cells, ["dev"], default="dev", center="domain", global_layer="global")
        if experiment == "mine":                           # an unlabelled target: no accuracy, no oracle
            table = table[table["kind"] != "oracle"].assign(accuracy=np.nan, balanced_accuracy=np.nan)
        table.to_csv(path, index=False)
        paths.append(str(path))
    intro = Path(__file__).parents[2] / "report" / "workflow.rst"
    assert LANDING_MARK in intro.read_text()
    out = tmp_path / "landing.rst"
    report_landing(intro, paths, {"paper_tables": {"officeaw": "II", "mine": None}, "finetuned": ["finetuned"]}, out)
    text = out.read_text()
    assert LANDING_MARK not in text and text.startswith(intro.read_text().split(LANDING_MARK)[0])
    rows = text.split("   * - ")[1:]
    assert len(rows) == 4 and rows[0].startswith("experiment")
    assert rows[1].split() == ["mine", "-", "imagenet", "-", "global", "/", "tca-8", "/", "domain", "(dev)",
                               "-", "unlabelled", "target", "(see", "the", "figure)", "-", "–", "-", "–", "-", "–"]
    assert ("global / tca-8 / domain (dev)\n     - 95.6 (95.9)\n     - 91.2\n     - 95.6\n     - 50.4 (Table II)"
            in rows[2])
    assert "51.2 (Table II)" in rows[3]                 # the paper's ImageNet Global average with TCA
    html = publish_parts(text.replace('{{ snakemake.config["experiments"] | join(", ") }}', "mine, officeaw"),
                         writer="html")["html_body"]
    assert "<table" in html and "95.6 (95.9)" in html and "Where to look" in html
    # a picture first: the figure, embedded (the report is one file), before the table; the rule graph moved below
    assert "<style>" in html and "#rulegraph" in html and html.index("<img") < html.index("<table")
    import base64

    src = html.split('<img', 1)[1].split('src="', 1)[1].split('"', 1)[0]
    assert src.startswith("data:image/png;base64,") and max(map(len, text.splitlines())) < 1000
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_landing_panels_show_the_pick_beside_its_references_or_what_an_unlabelled_target_got():
    from layerfuse.report import landing_panels
    from layerfuse.select import selection_table

    cells = pd.DataFrame({"featureset": ["global"] * 4, "adapter": ["none", "none", "tca-8", "tca-8"],
                          "center": ["none", "domain"] * 2, "accuracy": [0.912, 0.936, 0.90, 0.956],
                          "balanced_accuracy": [0.92, 0.94, 0.90, 0.959], "crit_dev": [0.0, 0.1, 0.2, 0.9],
                          "crit_snd": [0.5, 0.1, 0.2, 0.0]})
    labelled = selection_table(cells, ["dev", "snd"], default="dev", center="domain", global_layer="global")
    unlabelled = labelled[labelled["kind"] != "oracle"].assign(accuracy=np.nan, balanced_accuracy=np.nan)
    predictions = pd.DataFrame({"predicted": ["a", "b", "b", "c", "b"]})
    panels = landing_panels({("officeaw", "imagenet"): labelled, ("mine", "imagenet"): unlabelled},
                            {"officeaw": "II"}, (), {("mine", "imagenet"): predictions}, {"mine": 3})
    mine, office = panels
    assert mine["title"] == "mine / imagenet" and mine["counts"].to_dict() == {"b": 3, "a": 1, "c": 1}
    assert mine["skipped"] == 3 and mine["agreement"] == "1 of 2 criteria pick global / tca-8 / domain"
    labels, values, picks = zip(*office["bars"])
    assert picks == (False, True, False, False) and labels[1] == "global / tca-8 / domain (dev): the pick"
    assert values == pytest.approx((91.2, 95.6, 95.6, 51.25))
    assert labels[3] == "paper, Global with TCA (Table II)"
    # the candidates' vote: its bar beside the default criterion's own cell, which the agreement counts
    from layerfuse.select import add_combined_row

    voted = labelled.copy()
    add_combined_row(voted, cells, [("global", "none", "domain", 0.4), ("global", "tca-8", "domain", 0.6)],
                     np.array([[0.0, 1.0]] * 4), np.array([1, 1, 1, 0]), method="criterion", refine="self_training")
    vote = landing_panels({("officeaw", "imagenet"): voted}, {}, ())[0]
    labels = [label for label, _, _ in vote["bars"]]
    assert labels[1] == "global / tca-8 / domain (dev)" and labels[2].startswith("global / ensemble / domain (")
    assert vote["agreement"] == "1 of 2 criteria pick global / tca-8 / domain"
    from layerfuse.report import predictions_html

    page = predictions_html("officeaw / imagenet", voted, pd.DataFrame(
        {"image": ["a.png"], "predicted": ["b"], "probability": [0.9], "margin": [1.0],
         "cell": ["global/ensemble/domain"], "refine": ["self_training"]}), {}, None, 6)
    assert "come from the vote of 2 candidate cells" in page and "picked without target labels" not in page


@pytest.mark.parametrize("counts", [[[20, 20]], [[12, 28]], [[5, 0], [1, 6]]])
def test_confusion_cells_are_shaded_from_zero(tmp_path, counts):
    """Equal counts (an unlabelled target's single row) are drawn shaded, not white: the scale starts at 0."""
    from PIL import Image

    from layerfuse.report import plot_confusion

    confusion = pd.DataFrame(counts, columns=["a", "b"], index=["x", "y"][:len(counts)])
    plot_confusion(confusion, tmp_path / "c.png")
    rgb = np.asarray(Image.open(tmp_path / "c.png").convert("RGB")).astype(int)
    blue = (rgb[..., 2] - rgb[..., 0] > 60).mean()             # "Blues" cells past its pale end
    top = np.max(counts)
    assert blue > 0.05 * sum(v / top for row in counts for v in row) / (len(counts) * 2)


def test_the_dims_figure_marks_the_default_criterions_picks(tmp_path):
    """group_picks finds the cells the default criterion picked (accuracy.csv's selected_by) as the tables label
    them; the figure draws a panel per backbone and reducer."""
    from PIL import Image

    from layerfuse.report import group_picks, plot_accuracy_vs_dims

    df = pd.DataFrame({"backbone": ["imagenet", "imagenet", "imagenet", "finetuned"],
                       "featureset": ["global", "global", "block1-pca", "global"],
                       "adapter": ["tca-64", "none", "tca-64", "none"],
                       "center": ["domain", "domain", "domain", "none"],
                       "selected_by": ["snd;dev", "entropy", np.nan, "dev"]})
    params = {"center": "domain", "global_layer": "global", "default": "dev"}
    assert group_picks(df, params) == {"imagenet": [("Global", "64")]}          # finetuned's is at another centring
    table = pd.DataFrame({"Global": [90.0, 91.0, 88.0], "block1 PCA": [89.0, 90.0, 87.0],
                          "block1 Flatten": [88.0, 92.0, 86.0]}, index=["128", "64", "no TCA"])
    plot_accuracy_vs_dims({"imagenet": table, "finetuned": table}, tmp_path / "d.png", "g",
                          picks=group_picks(df, params))
    width, height = Image.open(tmp_path / "d.png").size
    assert width > height > 0                                     # 2 backbones x 2 reducers, side by side
