"""Label-free selection: real skada scorers on every cell; target labels never reach a criterion."""
from __future__ import annotations

from types import SimpleNamespace

import json

import numpy as np
import pandas as pd
import pytest

from layerfuse.h5io import write_pair
from layerfuse.images import write_manifest
from layerfuse.select import CRITERIA, criteria_scores, scoring_settings
from layerfuse.stages import evaluate_svm, select_configuration

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 5000}
SELECTION = {"criteria": list(CRITERIA), "default": "snd", "validation_size": 0.25, "seed": 0, "scope": "all"}


def _shifted(rng, n_source=60, n_target=40, d=8, shift=1.5):
    """Three Gaussian classes; the target translated by ``shift`` in every feature."""
    means = rng.randn(3, d) * 3
    ys, yt = np.arange(n_source) % 3, np.arange(n_target) % 3
    return means[ys] + rng.randn(n_source, d), means[yt] + rng.randn(n_target, d) + shift, ys, yt


def test_every_criterion_scores_a_cell(rng):
    """All of skada's label-free scorers and the source baseline give a finite score, higher is better."""
    xs, xt, ys, _ = _shifted(rng)
    scores = criteria_scores(xs, ys, xt, svm=SVM, criteria=CRITERIA, validation_size=0.25, seed=0)
    assert set(scores) == set(CRITERIA)
    assert all(np.isfinite(v) for v in scores.values()), scores


def test_unknown_criterion_is_named(rng):
    xs, xt, ys, _ = _shifted(rng)
    with pytest.raises(ValueError, match="selection.criteria: unknown 'oracle'"):
        criteria_scores(xs, ys, xt, svm=SVM, criteria=["oracle"])


def _grid(tmp_path, rng, target_labels, selection=SELECTION):
    """Two feature sets (a clean one and a noisy one), scored and selected: (selection table, predictions)."""
    xs, xt, ys, yt = _shifted(rng)
    noisy_s, noisy_t = xs + 4 * rng.randn(*xs.shape), xt + 4 * rng.randn(*xt.shape)
    labels = yt if target_labels is None else target_labels
    csvs, stores = [], []
    for name, (a, b) in {"global": (xs, xt), "block1-pca": (noisy_s, noisy_t)}.items():
        write_pair(tmp_path / f"{name}.fused.h5", a, b, ys, labels, {"local_width": 0})
        csvs.append(tmp_path / f"{name}.csv")
        stores.append(tmp_path / f"{name}.h5")
        evaluate_svm({"none": tmp_path / f"{name}.fused.h5"}, ["none"], SVM,
                         {"experiment": "e", "backbone": "b", "featureset": name}, csvs[-1],
                         predictions=stores[-1], selection=selection)
    classes = ["a", "b", "c"]
    write_manifest(tmp_path / "source.tsv", [{"image_id": f"{classes[y]}/{i}.png", "class": classes[y], "label": y,
                                              "status": "ok"} for i, y in enumerate(ys)])
    write_manifest(tmp_path / "target.tsv", [{"image_id": f"t/{i}.png", "class": "", "label": -1, "status": "ok"}
                                             for i in range(len(xt))])
    outputs = SimpleNamespace(**{k: tmp_path / f"out_{k}" for k in ("selection", "predictions", "confusion")},
                              figure=tmp_path / "confusion.png")
    select_configuration(csvs, stores, tmp_path / "source.tsv", tmp_path / "target.tsv",
                         {"selection": selection, "center": "domain", "global_layer": "global"}, outputs)
    return pd.read_csv(outputs.selection), pd.read_csv(outputs.predictions), yt


def test_permuting_target_labels_leaves_every_pick_unchanged(tmp_path):
    """The picks and the predictions are the same with true, permuted and absent (-1) target labels."""
    yt = _shifted(np.random.RandomState(1))[3]
    runs = {}
    for name, labels in (("true", None), ("permuted", np.random.RandomState(7).permutation(yt)),
                         ("absent", -np.ones_like(yt))):
        (tmp_path / name).mkdir()
        runs[name] = _grid(tmp_path / name, np.random.RandomState(1), labels)[:2]
    cells = ["criterion", "featureset", "adapter", "center", "score"]
    picked = lambda t: t[t["kind"] == "criterion"][cells].reset_index(drop=True)  # noqa: E731
    for other in ("permuted", "absent"):
        pd.testing.assert_frame_equal(picked(runs["true"][0]), picked(runs[other][0]))
        assert runs["true"][1]["predicted"].tolist() == runs[other][1]["predicted"].tolist()
    first, third = runs["true"][0], runs["absent"][0]
    assert "true" in runs["true"][1] and "true" not in runs["absent"][1]   # unlabelled: no truth column
    assert set(first["kind"]) == {"criterion", "oracle", "baseline", "source_only"}
    assert set(third["kind"]) == {"criterion", "baseline", "source_only"}
    assert first.loc[first["kind"] == "oracle", "regret"].iloc[0] == 0


def test_the_picks_refined_classifier_gives_the_predictions(tmp_path):
    """With ``selection.refine``, every candidate cell is also refitted by target self-training and scored; the
    pick's refined row is the default (what ``predictions/`` holds), its criterion's row is not, and the
    predictions are :class:`SelfTrainingSVM`'s on the picked cell, whatever the target's labels say."""
    from layerfuse.evaluate import center_domains
    from layerfuse.self_training import SelfTrainingSVM

    refine = {"method": "self_training", "rounds": 2, "final_share": 1.0, "balance": "uniform"}
    runs = {}
    for name, labels in (("true", None), ("absent", -np.ones(40, int))):
        (tmp_path / name).mkdir()
        runs[name] = _grid(tmp_path / name, np.random.RandomState(1), labels, {**SELECTION, "refine": refine})
    table, predictions, yt = runs["true"]
    chosen = table[table["default"]]
    assert chosen["kind"].tolist() == ["refined"] and chosen["refine"].item() == "self_training"
    picked = table[(table["kind"] == "criterion") & (table["criterion"] == "snd")].iloc[0]
    assert not picked["default"] and (picked["featureset"], picked["adapter"], picked["center"]) == \
        tuple(chosen[["featureset", "adapter", "center"]].iloc[0])
    assert predictions["cell"].iloc[0] == f"{picked['featureset']}/{picked['adapter']}/{picked['center']}"
    assert set(predictions["refine"]) == {"self_training"}
    # the refined predictions are the self-trained SVM's on the picked cell (here the clean global one)
    xs, xt, ys, _ = _shifted(np.random.RandomState(1))
    assert picked["featureset"] == "global" and picked["adapter"] == "none"
    cs, ct = center_domains(xs, xt, picked["center"])
    model = SelfTrainingSVM(**{k: v for k, v in refine.items() if k != "method"}, **SVM).fit(
        np.vstack([cs, ct]), np.r_[ys, -np.ones(len(ct), int)],
        sample_domain=np.r_[np.ones(len(cs)), -np.ones(len(ct))])
    assert predictions["predicted"].tolist() == [["a", "b", "c"][i] for i in model.predict(ct)]
    # the margins too: the refits' (on float32 features), not the source SVM's (here both predict alike; their
    # margins differ by up to 0.6); the probability is the margin through the cell's Platt map, fitted on the source
    np.testing.assert_allclose(predictions["margin"], model.decision_function(ct).max(axis=1), atol=0.01)
    from layerfuse.calibration import margin_calibration, platt_probability
    from layerfuse.svm import svm_kwargs

    a, b = margin_calibration(cs, ys, svm=svm_kwargs(SVM), seed=SELECTION["seed"])
    np.testing.assert_allclose(predictions["probability"], platt_probability(predictions["margin"], a, b), atol=1e-3)
    assert predictions["probability"].between(0, 1).all()
    assert chosen["accuracy"].item() == pytest.approx((model.predict(ct) == yt).mean())
    assert runs["absent"][1]["predicted"].tolist() == predictions["predicted"].tolist()
    assert runs["absent"][0]["accuracy"].isna().all()          # unlabelled: the refined row, no accuracy


def test_scope_global_picks_only_the_global_adapters_at_the_tables_centring():
    from layerfuse.select import candidate_cells, selection_table

    cells = pd.DataFrame({"featureset": ["global"] * 4 + ["block1-pca"] * 2,
                          "adapter": ["none", "none", "tca-8", "tca-8", "none", "none"],
                          "center": ["none", "domain"] * 3,
                          "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95], "balanced_accuracy": [0.5] * 6,
                          "crit_snd": [1.0, 2.0, 3.0, 2.5, 9.0, 8.0]})
    assert candidate_cells(cells, "global", center="domain", global_layer="global").tolist() == \
        [False, True, False, True, False, False]
    t = selection_table(cells, ["snd"], default="snd", center="domain", global_layer="global", scope="global")
    pick = t[t["kind"] == "criterion"].iloc[0]
    assert (pick["featureset"], pick["adapter"], pick["center"]) == ("global", "tca-8", "domain")
    # beside the picks: Global without an adapter at the tables' centring, and source only (not even centred)
    shown = lambda kind: t.loc[t["kind"] == kind, ["adapter", "center", "accuracy"]].values.tolist()  # noqa: E731
    assert shown("baseline") == [["none", "domain", 0.6]] and shown("source_only") == [["none", "none", 0.5]]
    assert t.loc[t["kind"] == "oracle", "featureset"].item() == "block1-pca"   # the oracle sees every cell
    t = selection_table(cells, ["snd"], default="snd", center="domain", global_layer="global", scope="all")
    assert t.loc[t["kind"] == "criterion", "row"].item() == 4
    with pytest.raises(ValueError, match="selection.scope"):
        candidate_cells(cells, "some", center="domain", global_layer="global")


def test_a_default_criterion_that_scored_nothing_falls_back_to_the_global_cell():
    from layerfuse.select import selection_table

    cells = pd.DataFrame({"featureset": ["global", "global"], "adapter": ["none", "tca-8"],
                          "center": ["domain", "domain"], "accuracy": [np.nan] * 2, "balanced_accuracy": [np.nan] * 2,
                          "crit_dev": [np.nan, np.nan], "crit_snd": [1.0, 2.0]})
    t = selection_table(cells, ["dev", "snd"], default="dev", center="domain", global_layer="global")
    chosen = t[t["default"]]
    assert len(chosen) == 1 and chosen["kind"].item() == "baseline" and chosen["adapter"].item() == "none"
    assert "dev scored no cell" in chosen["criterion"].item()


def test_criteria_see_a_seeded_sample_of_a_large_target(rng):
    """Above ``max_target_images`` target rows the criteria score a seeded sample of that many (soft
    neighbourhood density's target x target matrix stays bounded): the same scores as on those rows."""
    xs, xt, ys, _ = _shifted(rng)
    crit = ["snd", "entropy", "dev"]
    sampled = criteria_scores(xs, ys, xt, svm=SVM, criteria=crit, validation_size=0.25, seed=0, max_target_images=25)
    rows = np.sort(np.random.default_rng(0).choice(len(xt), 25, replace=False))
    assert sampled == criteria_scores(xs, ys, xt[rows], svm=SVM, criteria=crit, validation_size=0.25, seed=0)
    assert sampled != criteria_scores(xs, ys, xt, svm=SVM, criteria=crit, validation_size=0.25, seed=0)


def test_criteria_see_a_stratified_sample_of_a_large_source(rng):
    from sklearn.model_selection import StratifiedShuffleSplit

    xs, xt, ys, _ = _shifted(rng)
    crit = ["snd", "entropy", "source"]
    sampled = criteria_scores(xs, ys, xt, svm=SVM, criteria=crit, validation_size=0.25, seed=0, max_source_images=30)
    keep = np.sort(next(StratifiedShuffleSplit(1, train_size=30, random_state=0).split(xs, ys))[0])
    assert np.bincount(ys[keep]).tolist() == [10, 10, 10]
    assert sampled == criteria_scores(xs[keep], ys[keep], xt, svm=SVM, criteria=crit, validation_size=0.25, seed=0)


def test_criteria_scored_only_at_the_given_centrings(tmp_path, rng):
    """``centerings`` (the workflow's scope global: ``svm.center``) leaves the other centring's criteria
    empty and scores the rest exactly as a run that scores every centring."""
    xs, xt, ys, yt = _shifted(rng)
    write_pair(tmp_path / "global.h5", xs, xt, ys, yt, {"local_width": 0})
    meta = {"experiment": "e", "backbone": "b", "featureset": "global"}
    sel = {"criteria": ["entropy", "source"], "validation_size": 0.25, "seed": 0}
    both = evaluate_svm({"none": tmp_path / "global.h5"}, ["none"], SVM, meta, tmp_path / "both.csv", selection=sel)
    one = evaluate_svm({"none": tmp_path / "global.h5"}, ["none"], SVM, meta, tmp_path / "one.csv",
                       selection={**sel, "centerings": ["domain"]})
    by = {r["center"]: r for r in one}
    assert np.isnan(by["none"]["crit_entropy"]) and np.isnan(by["none"]["crit_source"])
    assert [by["domain"][k] for k in ("crit_entropy", "crit_source", "accuracy")] == \
        [next(r for r in both if r["center"] == "domain")[k] for k in ("crit_entropy", "crit_source", "accuracy")]
    assert np.isfinite(by["domain"]["crit_entropy"]) and by["none"]["accuracy"] == next(r for r in both if r["center"] == "none")["accuracy"]


def test_summary_gives_the_pick_beside_source_only_and_the_centred_global_cell(tmp_path):
    """``python -m layerfuse summary``'s line per backbone: the pick, the source-only cell and, where the pick
    is another cell, the Global cell without an adapter at the tables' centring."""
    from layerfuse.__main__ import summary
    from layerfuse.select import selection_table

    cells = pd.DataFrame({"featureset": ["global"] * 4, "adapter": ["none", "none", "tca-8", "tca-8"],
                          "center": ["none", "domain"] * 2, "accuracy": [0.47, 0.56, 0.40, 0.42],
                          "balanced_accuracy": [0.45, 0.55, 0.40, 0.41], "crit_a": [0.0, 1.0, 0.5, 0.2],
                          "crit_b": [0.0, 0.1, 0.5, 0.9]})
    (tmp_path / "selection").mkdir()
    for backbone, default in (("imagenet", "a"), ("finetuned", "b")):
        selection_table(cells, ["a", "b"], default=default, center="domain", global_layer="global"
                        ).to_csv(tmp_path / "selection" / f"{backbone}.csv", index=False)
    lines = summary(tmp_path)
    assert len(lines) == 4, lines
    finetuned, imagenet = lines[1], lines[2]
    assert imagenet.startswith("  imagenet: picked global / none / domain (by a, no target labels): accuracy 56.0%")
    assert "source only (Global, no adaptation) 47.0%" in imagenet and "no adapter" not in imagenet
    assert finetuned.startswith("  finetuned: picked global / tca-8 / domain (by b") and "accuracy 42.0%" in finetuned
    assert "source only (Global, no adaptation) 47.0%; Global, no adapter, domain centring 56.0%" in finetuned
    assert finetuned.endswith("best cell 56.0%")
    # a refined pick: the refitting is named, and the centred Global cell shown beside it even where it is the pick's
    cells["refine"] = "self_training"
    cells["refined_accuracy"], cells["refined_balanced_accuracy"] = [0.5, 0.61, 0.5, 0.5], [0.5, 0.6, 0.5, 0.5]
    table = selection_table(cells, ["a"], default="a", center="domain", global_layer="global")
    assert table.loc[table["default"], "kind"].tolist() == ["refined"]
    assert table.loc[table["default"], "regret"].item() == pytest.approx(-0.05)   # above the old grid's best
    table.to_csv(tmp_path / "selection" / "imagenet.csv", index=False)
    line = summary(tmp_path)[2]
    assert line.startswith("  imagenet: picked global / none / domain (by a, no target labels), refitted by "
                           "self-training on the target: accuracy 61.0%, balanced 60.0%"), line
    assert "Global, no adapter, domain centring 56.0%" in line


def test_a_source_class_of_one_image_is_scored_without_criteria(caplog):
    """A class with a single source image cannot be held out: the criteria and the class-proportion estimate
    skip the cell (logged) instead of failing the job in a calibration's cross-validation; the pick falls back
    to the centred Global cell without an adapter, refined as usual."""
    from layerfuse.evaluate import score_grid
    from layerfuse.select import selection_table

    rng = np.random.RandomState(0)
    ys = np.r_[np.zeros(10, int), np.ones(10, int), [2]]
    xs, xt = rng.randn(21, 5) + ys[:, None], rng.randn(15, 5)
    pairs = {"none": (xs, xt, ys, np.repeat([0, 1, 2], 5), {"local_width": 0})}
    sel = {"criteria": ["dev", "source"], "validation_size": 0.2, "seed": 0, "centerings": ["domain"],
           "refine": {"method": "self_training", "rounds": 3, "final_share": 1.0, "balance": "uniform"}}
    with caplog.at_level("WARNING"):
        rows, *_ = score_grid(pairs, ["none"], SVM, {"experiment": "e", "backbone": "b", "featureset": "global"},
                              selection=sel)
    assert "selection criteria not scored: source class 2 has 1 image(s); each needs at least 3" in caplog.text
    assert "target class proportions not estimated" in caplog.text
    domain = next(r for r in rows if r["center"] == "domain")
    assert np.isnan(domain["crit_dev"]) and domain["refine"] == "self_training"
    assert domain["target_priors"] == ";".join(f"{p:.4f}" for p in np.bincount(ys) / len(ys))
    table = selection_table(pd.DataFrame(rows), ["dev", "source"], default="dev", center="domain",
                            global_layer="global")
    chosen = table[table["default"]]
    assert chosen["kind"].tolist() == ["refined"] and "dev scored no cell" in chosen["criterion"].item()


@pytest.mark.parametrize("combine", ["uniform", "criterion"])
def test_the_candidates_vote_gives_the_predictions(tmp_path, combine):
    """``selection.combine``: the pick's feature set's scored cells vote with their (refined) decision values,
    weighted equally or by the default criterion; the vote's row is the default, its predictions are the
    weighted sum's argmax, and the same with the target's labels absent."""
    from layerfuse.evaluate import center_domains
    from layerfuse.select import vote_weights
    from layerfuse.self_training import SelfTrainingSVM

    refine = {"method": "self_training", "rounds": 2, "final_share": 1.0, "balance": "uniform"}
    selection = {**SELECTION, "refine": refine, "combine": {"method": combine}}
    runs = {}
    for name, labels in (("true", None), ("absent", -np.ones(40, int))):
        (tmp_path / name).mkdir()
        runs[name] = _grid(tmp_path / name, np.random.RandomState(1), labels, selection)
    table, predictions, yt = runs["true"]
    vote = table[table["default"]]
    assert vote["kind"].tolist() == ["ensemble"] and vote["adapter"].item() == "ensemble"
    members = json.loads(vote["members"].item())
    assert sorted(m[:3] for m in members) == [["global", "none", "domain"], ["global", "none", "none"]]
    members = [m[1:] for m in members]                 # one feature set's cells: (adapter, centring, weight)
    pick = table[(table["kind"] == "criterion") & (table["criterion"] == "snd")].iloc[0]
    assert pick["featureset"] == "global" and not pick["default"]
    scores = pd.read_csv(tmp_path / "true" / "global.csv").set_index("center")["crit_snd"]
    weights = np.round(vote_weights([scores[c] for _, c, _ in members], combine), 6)
    assert [m[2] for m in members] == pytest.approx(weights.tolist(), abs=1e-9)
    xs, xt, ys, _ = _shifted(np.random.RandomState(1))
    total = 0
    for (_, center, _), w in zip(members, weights):
        cs, ct = center_domains(xs, xt, center)
        model = SelfTrainingSVM(**{k: v for k, v in refine.items() if k != "method"}, **SVM).fit(
            np.vstack([cs, ct]), np.r_[ys, -np.ones(len(ct), int)],
            sample_domain=np.r_[np.ones(len(cs)), -np.ones(len(ct))])
        total = total + w * model.decision_function(ct)
    assert predictions["predicted"].tolist() == [["a", "b", "c"][i] for i in total.argmax(1)]
    assert set(predictions["cell"]) == {"global/ensemble/domain"} and set(predictions["refine"]) == {"self_training"}
    assert vote["accuracy"].item() == pytest.approx((total.argmax(1) == yt).mean())
    assert runs["absent"][1]["predicted"].tolist() == predictions["predicted"].tolist()


def test_a_vote_across_feature_sets(tmp_path):
    """``selection.combine.members: all``: every feature set's scored cells vote, weighted by the default
    criterion's scores over all of them; the row and the predictions name the feature set ``all``."""
    from layerfuse.layout import cell_decisions
    from layerfuse.select import vote_weights

    selection = {**SELECTION, "refine": {"method": "self_training", "rounds": 2, "final_share": 1.0,
                                         "balance": "uniform"},
                 "combine": {"method": "criterion", "members": "all"}}
    table, predictions, _ = _grid(tmp_path, np.random.RandomState(1), None, selection)
    vote = table[table["default"]].iloc[0]
    assert vote["kind"] == "ensemble" and vote["featureset"] == "all"
    members = json.loads(vote["members"])
    assert sorted(m[:3] for m in members) == [[f, "none", c] for f in ("block1-pca", "global") for c in ("domain", "none")]
    scores = pd.concat([pd.read_csv(tmp_path / f"{f}.csv") for f in ("global", "block1-pca")]).set_index(
        ["featureset", "center"])["crit_snd"]
    weights = np.round(vote_weights([scores[(f, c)] for f, _, c, _ in members], "criterion"), 6)
    assert [m[3] for m in members] == pytest.approx(weights.tolist(), abs=1e-9)
    assert len(set(weights)) == 4                                    # the criterion told them apart
    decisions = {f: cell_decisions([tmp_path / f"{f}.h5" for f in ("global", "block1-pca")], f)
                 for f in ("global", "block1-pca")}
    total = sum(w * decisions[f][(a, c)].astype(np.float64) for (f, a, c, _), w in zip(members, weights))
    assert predictions["predicted"].tolist() == [["a", "b", "c"][i] for i in total.argmax(1)]
    assert set(predictions["cell"]) == {"all/ensemble/domain"}


def test_other_feature_sets_are_scored_by_the_default_criterion_only_where_they_vote():
    sel = {"criteria": ["entropy", "dev"], "combine": {"method": "criterion"}}
    kw = {"scope": "global", "center": "domain", "global_layer": "global", "default": "dev"}
    assert scoring_settings(sel, "block1-pca", **kw) is None
    assert scoring_settings(sel, "block1-pca", vote_members="all", **kw) == {**sel, "criteria": ["dev"],
                                                                             "centerings": ["domain"]}
    assert scoring_settings(sel, "global", vote_members="all", **kw) == {**sel, "centerings": ["domain"]}
    assert scoring_settings({**sel, "combine": {"method": "none"}}, "block1-pca", vote_members="all", **kw) is None
