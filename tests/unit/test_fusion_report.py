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

    from layerfuse.stages import _table_metrics

    same = pd.DataFrame({"accuracy": [0.5, 0.75], "balanced_accuracy": [0.5, 0.75]})
    assert _table_metrics(same) == ("accuracy",)
    differs = pd.DataFrame({"accuracy": [0.5, 0.75], "balanced_accuracy": [0.5, 0.7]})
    assert _table_metrics(differs) == ("accuracy", "balanced_accuracy")
