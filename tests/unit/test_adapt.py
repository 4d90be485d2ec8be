"""Adapters in the grid (skada's, JDA): fitted on a feature set, their target map read off, failures recorded."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerfuse import adapt
from layerfuse.adapt import METHODS, AdapterFailure, check_adapter, make_adapter
from layerfuse.h5io import read_arrays, write_pair

SPECS = {"coral": {"method": "coral"}, "subspace_alignment": {"method": "subspace_alignment", "n_components": 5},
         "linear_ot": {"method": "linear_ot"}}


def fit_adapter(xs, ys, xt, spec):
    """:func:`layerfuse.adapt.fit_adapter` on the two domains stacked, as the workflow reads them."""
    return adapt.fit_adapter(np.vstack([xs, xt]), len(xs), ys, spec)


def _shifted_pair(rng, n=60, d=12, classes=3):
    """Gaussian classes; the target is the source scaled, rotated and moved (an affine shift)."""
    means = rng.normal(0, 3, (classes, d))
    ys = np.arange(n) % classes
    yt = rng.permutation(ys)
    xs = means[ys] + rng.normal(0, 1, (n, d))
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    xt = 0.5 * (means[yt] + rng.normal(0, 1, (n, d))) @ rot + 4.0
    return xs, ys, xt, yt


@pytest.mark.parametrize("method", [m for m, v in METHODS.items() if v.target_map == "affine"])
def test_target_map_is_skadas_transform(rng, method):
    """The stored affine map gives skada's own transform of new target rows (what a saved model applies)."""
    xs, ys, xt, _ = _shifted_pair(rng)
    fitted = fit_adapter(xs, ys, xt, SPECS[method])
    assert fitted["source"].shape[0] == len(xs) and fitted["target"].shape == (len(xt), fitted["source"].shape[1])
    assert fitted["attrs"]["method"] == method
    adapter = make_adapter(SPECS[method], n_source=len(xs), n_target=len(xt))
    X = np.vstack([xs, xt])
    adapter.fit_transform(X, np.r_[ys, -np.ones(len(xt), int)], sample_domain=np.r_[np.ones(len(xs)), -np.ones(len(xt))])
    new = xt[:7] * 1.1 - 0.3
    expected = adapter.transform(new, sample_domain=-np.ones(len(new), int))
    arrays = fitted["arrays"]
    np.testing.assert_allclose(new @ arrays["target_weight"] + arrays["target_bias"], expected, atol=1e-8)


@pytest.mark.parametrize("balance", [None, 0.5])
def test_jda_cell_is_the_estimator_and_its_kernel_map_reproduces_the_target(rng, balance):
    """A ``method: jda`` entry fits :class:`layerfuse.tca.JDA` (BDA with ``balance``); its stored basis rows
    and coefficients map the target's rows onto their embedding (what a saved model applies)."""
    from layerfuse.tca import JDA, rbf_kernel

    xs, ys, xt, _ = _shifted_pair(rng)
    spec = {"method": "jda", "n_components": 6, "n_iter": 3, "balance": balance}
    check_adapter("jda", spec)
    fitted = fit_adapter(xs, ys, xt, spec)
    X = np.vstack([xs, xt])
    ref = JDA(6, n_iter=3, balance=balance).fit(X, np.r_[ys, -np.ones(len(xt), int)],
                                                 sample_domain=np.r_[np.ones(len(xs)), -np.ones(len(xt))])
    np.testing.assert_allclose(np.vstack([fitted["source"], fitted["target"]]), ref.embedding_, atol=1e-8)
    assert len(ref.history_) > 1                             # pseudo-labels were used: it is not TCA
    a, info = fitted["arrays"], fitted["attrs"]
    mapped = rbf_kernel(xt, X[a["basis_rows"]], info["gamma_"]) @ a["coef"]
    np.testing.assert_allclose(mapped, fitted["target"], atol=1e-6 * np.abs(fitted["target"]).max())


def test_coral_aligns_second_order_statistics(rng):
    """After CORAL the source's covariance is the target's (both centred), as the method promises."""
    xs, ys, xt, _ = _shifted_pair(rng, n=400, d=6)
    fitted = fit_adapter(xs, ys, xt, {"method": "coral", "reg": 0.0})
    np.testing.assert_allclose(np.cov(fitted["source"].T), np.cov(xt.T), atol=1e-6)


def test_subspace_alignment_components_capped_by_the_smaller_domain(rng):
    xs, ys, xt, _ = _shifted_pair(rng, n=30, d=40)
    fitted = fit_adapter(xs, ys, xt[:9], {"method": "subspace_alignment", "n_components": 64})
    assert fitted["source"].shape[1] == 9


def test_too_many_features_is_a_recorded_skip(rng):
    xs, ys, xt, _ = _shifted_pair(rng, d=20)
    with pytest.raises(AdapterFailure, match=r"^skipped: 20 features > max_features 10 "):
        fit_adapter(xs, ys, xt, {"method": "coral", "max_features": 10})


def test_numerical_failure_is_one_line(rng):
    """CORAL without shrinkage on fewer images than features: a singular covariance has no inverse root."""
    xs, ys, xt, _ = _shifted_pair(rng, n=6, d=30)
    with pytest.raises(AdapterFailure) as exc:
        fit_adapter(xs, ys, xt, {"method": "coral", "reg": None})
    assert "\n" not in str(exc.value) and "coral" in str(exc.value)


def test_failed_adapter_cells_are_recorded_and_the_grid_goes_on(rng, tmp_path):
    """fit_adapter's failed store gives rows without scores and with the reason; tables show '–' and
    list the reason; the other adapters' cells are scored."""
    from layerfuse.report import paper_table, table_markdown
    from layerfuse.stages import aggregate_scores, evaluate_svm, fit_adapter as fit_stage

    xs, ys, xt, yt = _shifted_pair(rng, d=20)
    fused = tmp_path / "fused/imagenet/global.h5"
    write_pair(fused, xs, xt, ys, yt, {"local_width": 0})
    adapted = {}
    for key, spec in {"sa": SPECS["subspace_alignment"], "coral": {"method": "coral", "max_features": 10}}.items():
        adapted[key] = tmp_path / f"adapted/imagenet/global/{key}.h5"
        fit_stage(fused, spec, adapted[key])
    _, attrs = read_arrays(adapted["coral"], [])
    assert attrs["failed"].startswith("skipped: 20 features")
    meta = {"experiment": "x", "backbone": "imagenet", "featureset": "global"}
    scores = tmp_path / "scores.csv"
    rows = evaluate_svm({"none": fused, **adapted}, ["none", "sa", "coral"], {"C": 1.0, "class_weight": "balanced",
                        "max_iter": 2000}, meta, scores, predictions=tmp_path / "pred.h5",
                        selection={"criteria": ["entropy"], "validation_size": 0.2, "seed": 0})
    by = {(r["adapter"], r["center"]): r for r in rows}
    assert 0 <= by[("sa", "domain")]["accuracy"] <= 1 and by[("sa", "domain")]["failed"] == ""
    assert np.isnan(by[("coral", "none")]["accuracy"]) and np.isnan(by[("coral", "none")]["crit_entropy"])
    assert by[("coral", "domain")]["failed"].startswith("skipped")
    md = aggregate_scores([scores], tmp_path / "accuracy.csv", tmp_path / "tables.md")
    table = paper_table(pd.read_csv(tmp_path / "accuracy.csv").query("center == 'domain'"))
    assert list(table.index) == ["no TCA", "sa", "coral"] and np.isnan(table.loc["coral", "Global"])
    assert "| coral | – |" in table_markdown(table) and "**Adapter cells not scored**" in md
    assert "imagenet global coral: skipped: 20 features > max_features 10" in md
    with pytest.raises(ValueError, match=r"global/coral.h5: adapter coral failed on this feature set \(skipped"):
        from layerfuse.model import _adapter_arrays

        _adapter_arrays({"adapted": list(adapted.values())}, "global", "coral", xs, xt)


def test_an_adapter_whose_map_is_not_affine_is_scored_but_never_picked_or_exported(rng, tmp_path):
    """A registered method whose target map is not affine: its cells get accuracies but no criteria (the
    label-free pick cannot take them), and exporting one is refused in one line."""
    from layerfuse.model import _adapter_arrays
    from layerfuse.stages import evaluate_svm, fit_adapter as fit_stage

    adapt.register_method("square", "tests.support.mean_match:SquareAdapter", "affine")
    try:
        xs, ys, xt, yt = _shifted_pair(rng)
        fused, store = tmp_path / "fused/b/global.h5", tmp_path / "adapted/b/global/sq.h5"
        write_pair(fused, xs, xt, ys, yt, {"local_width": 0})
        fit_stage(fused, {"method": "square"}, store)
        assert "not affine" in read_arrays(store, [])[1]["map_error"]
        rows = evaluate_svm({"none": fused, "sq": store}, ["none", "sq"], {"C": 1.0, "max_iter": 2000},
                            {"experiment": "x", "backbone": "b", "featureset": "global"}, tmp_path / "s.csv",
                            selection={"criteria": ["entropy"], "validation_size": 0.2, "seed": 0})
        sq = [r for r in rows if r["adapter"] == "sq"]
        assert all(0 <= r["accuracy"] <= 1 and np.isnan(r["crit_entropy"]) for r in sq)
        assert all(np.isfinite(r["crit_entropy"]) for r in rows if r["adapter"] == "none")
        with pytest.raises(ValueError, match=r"sq.h5: adapter sq: its target transform is not affine"):
            _adapter_arrays({"adapted": [store]}, "global", "sq", xs, xt)
    finally:
        del adapt.METHODS["square"]


def test_cell_names_are_read_in_one_place():
    """``tca-<d>`` is TCA's nested cell; every other name is its own store key."""
    assert adapt.parse_cell("tca-64") == ("tca", 64)
    assert adapt.parse_cell("none") == ("none", None)
    assert adapt.parse_cell("tca-x") == ("tca-x", None) and adapt.parse_cell("sa") == ("sa", None)
    assert adapt.grid_cells({"baseline": True, "dims": [64, 128]}, {"sa": {}}) == ["none", "tca-128", "tca-64", "sa"]
    specs = adapt.adapter_specs({"dims": [64, 128], "baseline": True, "kernel": "rbf"}, {"sa": {"method": "x"}})
    assert specs == {"tca": {"method": "tca", "n_components": 128, "kernel": "rbf"}, "sa": {"method": "x"}}


def test_a_store_written_before_its_map_kind_was_recorded_still_exports(rng, tmp_path):
    """Adapter stores from before ``target_map`` was an attribute (skada's and JDA's fit_adapter jobs, which
    Snakemake need not rerun) are read by the kind of arrays they hold."""
    xs, ys, xt, _ = _shifted_pair(rng)
    for spec in (SPECS["coral"], {"method": "jda", "n_components": 4, "n_iter": 2}):
        fitted = fit_adapter(xs, ys, xt, spec)
        old = {k: v for k, v in fitted["attrs"].items() if k not in ("target_map", "map_error")}
        store = {"source": fitted["source"], "target": fitted["target"], **fitted["arrays"]}
        assert adapt.stored_arrays(old) == ["source", "target", *fitted["arrays"]]
        (zs, zt), record, arrays = adapt.saved_map("a", store, old, xs, xt)
        np.testing.assert_allclose(adapt.apply_saved_map(xt, record, arrays), zt, rtol=1e-5,
                                   atol=1e-5 * np.abs(zt).max())
