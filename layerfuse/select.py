"""Label-free selection of a grid cell (feature set x adapter x centring) with skada's scorers.

No criterion reads a target label: each sees the labelled source and the
target's features only (target labels are masked as -1 before any scorer is
called; a test permutes them and checks the picks do not move).

Protocol, for one cell's features ``(xs, xt)``: a stratified, seeded share of
the source (``validation_size``) is held out; the cell's classifier (the
workflow's linear SVM, with sigmoid-calibrated probabilities where a scorer
needs them: ``CalibratedClassifierCV``, 3 folds) is fitted on the rest of the
source inside :func:`skada.make_da_pipeline`; each scorer then sees the
held-out source and the whole target, as ``skada.metrics`` expects
(``sample_domain`` >= 0 source, < 0 target).  Scores are signed so that
higher is better for every criterion.
"""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedShuffleSplit

from .calibration import platt_probability, weighted_platt
from .candidates import SCOPES, candidate_cells, scoring_settings
from .images import read_manifest
from .layout import cell_decisions, cell_predictions
from .svm import make_calibrated_svm, source_sample

log = logging.getLogger("layerfuse.select")

__all__ = ["CRITERIA", "SCOPES", "criteria_scores", "candidate_cells", "pick_cells", "scoring_settings",
           "selection_table", "selection_headline", "criterion_label", "refine_of", "picked_predictions",
           "confusion_table",
           "COMBINES", "ENSEMBLE", "ALL_FEATURESETS", "vote_weights", "combined_decision", "add_combined_row",
           "vote_members"]

# selection.combine's methods, and the adapter name of the candidates' vote in tables, predictions and models
COMBINES = ("none", "uniform", "criterion")
ENSEMBLE = "ensemble"
# the feature set a vote's row, predictions and model name where its members span several
ALL_FEATURESETS = "all"


def _scorers(seed: int) -> dict:
    from skada.metrics import (  # skada imports torch (2 s): only the jobs that score the criteria load it
        CircularValidation, DeepEmbeddedValidation, ImportanceWeightedScorer, MixValScorer, PredictionEntropyScorer,
        SoftNeighborhoodDensity)

    return {
        "entropy": PredictionEntropyScorer(),
        "snd": SoftNeighborhoodDensity(),
        "iwv": ImportanceWeightedScorer(),
        "dev": DeepEmbeddedValidation(random_state=seed),
        "circular": CircularValidation(),
        "mixval": MixValScorer(random_state=seed),
    }


# skada's label-free scorers, and ``source``: balanced accuracy on the held-out source (no target at all),
# the baseline any domain-aware criterion has to beat.
CRITERIA = ("entropy", "snd", "iwv", "dev", "circular", "mixval", "source")


def _classifier(svm: dict, seed: int, folds: int = 3):
    clf = make_calibrated_svm(svm, seed, folds)
    clf.set_score_request(sample_weight=True)            # ImportanceWeightedScorer weights the source's score
    return clf


def criteria_scores(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, *, svm: dict, criteria=CRITERIA,
                    validation_size: float = 0.2, seed: int = 0, max_target_images: int = 5000,
                    max_source_images: int = 10000) -> dict[str, float]:
    """Each criterion's score (higher is better) for one cell's source/target features.

    ``xt`` is the target's features only: no target label enters this function.  Where the target has
    more than ``max_target_images`` rows the criteria see a seeded sample of that many, and where the
    source has more than ``max_source_images`` a seeded stratified sample (the same rows for every cell of
    a feature set): soft neighbourhood density builds a target x target matrix, and importance-weighted
    validation's kernel density estimates take time in held-out source x (source + target) rows.
    """
    from skada import make_da_pipeline  # skada imports torch (2 s): only the jobs that score the criteria load it

    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise ValueError(f"selection.criteria: unknown {unknown[0]!r}; use {', '.join(CRITERIA)}")
    keep = source_sample(ys, max_source_images, seed)
    if keep is not None:
        xs, ys = xs[keep], ys[keep]
    classes, counts = np.unique(ys, return_counts=True)
    n_val = max(int(np.ceil(validation_size * len(ys))), len(classes))
    if len(ys) - n_val < len(classes):
        raise ValueError(f"selection.validation_size: {validation_size} of {len(ys)} source images leaves no "
                         "image of some class on one side; the selection needs 2 or more images per class")
    train = val = None
    if counts.min() >= 2:
        train, val = next(StratifiedShuffleSplit(1, test_size=n_val, random_state=seed).split(xs, ys))
    fewest = np.unique(ys[train], return_counts=True)[1] if train is not None else counts
    if train is None or len(fewest) < len(classes) or fewest.min() < 2:
        # the hold-out and the calibrated classifier's folds need each class on every side: no criterion can
        # score this cell (the pick falls back to the Global cell without an adapter and says so); the
        # report's Data section names the class
        small = int(classes[counts.argmin()])
        log.warning("selection criteria not scored: source class %d has %d image(s); each needs at least 3",
                    small, int(counts.min()))
        return {name: float("nan") for name in criteria}
    if len(xt) > max_target_images:
        xt = xt[np.sort(np.random.default_rng(seed).choice(len(xt), max_target_images, replace=False))]
    nt = len(xt)
    X = np.vstack([xs[train], xt])
    y = np.r_[ys[train], -np.ones(nt, dtype=ys.dtype)]
    sd = np.r_[np.ones(len(train), int), -2 * np.ones(nt, int)]
    Xv = np.vstack([xs[val], xt])
    yv = np.r_[ys[val], -np.ones(nt, dtype=ys.dtype)]
    sdv = np.r_[np.ones(len(val), int), -2 * np.ones(nt, int)]
    out = {}
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")             # convergence and "all predicted labels the same" notes
        folds = int(min(3, np.unique(ys[train], return_counts=True)[1].min()))
        est = make_da_pipeline(_classifier(svm, seed, max(folds, 2)))
        est.fit(X, y, sample_domain=sd)
        scorers = _scorers(seed)
        for name in criteria:
            try:
                if name == "source":
                    pred = est.predict(xs[val], sample_domain=np.ones(len(val), int), allow_source=True)
                    out[name] = float(balanced_accuracy_score(ys[val], pred))
                else:
                    out[name] = float(scorers[name](est, Xv, yv, sample_domain=sdv))
            except ValueError as exc:
                # e.g. circular validation refits on target pseudo-labels with a class too small to calibrate
                log.warning("selection criterion %s failed on this cell (%s); it cannot pick it", name, exc)
                out[name] = float("nan")
    return out


def pick_cells(scores, criteria, candidates=None) -> dict[str, int]:
    """``{criterion: row index}`` of the best-scoring cell of ``scores`` (a DataFrame with ``crit_<name>``
    columns) among ``candidates`` (a boolean mask; default all rows); ties go to the first row, and the rows
    come sorted, so the pick is deterministic."""
    picks = {}
    for name in criteria:
        if f"crit_{name}" not in scores:
            continue
        col = scores[f"crit_{name}"].to_numpy(dtype=float).copy()
        if candidates is not None:
            col[~np.asarray(candidates, bool)] = np.nan
        if np.isnan(col).all():
            continue
        picks[name] = int(np.nanargmax(col))
    return picks


def selection_table(cells, criteria, *, default: str = "dev", center: str, global_layer: str, scope: str = "global"):
    """A row per criterion's pick (among :func:`candidate_cells`), the oracle (best target accuracy over
    every cell, where the target is labelled), the Global cell without an adapter at the tables' ``center``
    (kind ``baseline``: what a user gets where the default criterion scores nothing) and the source-only
    Global cell (kind ``source_only``: no adapter and no centring, a classifier that never saw the target;
    centring each domain on its own mean already adapts to the target, as adaptive batch normalisation
    does): ``kind``, ``criterion``, ``default``, ``row`` (index into ``cells``), the cell, ``score``,
    ``accuracy``, ``balanced_accuracy`` and the regrets against the oracle (fractions)."""
    cells = cells.reset_index(drop=True)
    labelled = not cells["accuracy"].isna().all()
    rows = []

    def add(kind, criterion, i, score=np.nan):
        r = cells.iloc[i]
        rows.append({"kind": kind, "criterion": criterion, "default": criterion == default, "refine": "", "row": i,
                     "featureset": r["featureset"], "adapter": r["adapter"], "center": r["center"], "score": score,
                     "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"]})

    mask = candidate_cells(cells, scope, center=center, global_layer=global_layer)
    for name, i in pick_cells(cells, criteria, mask).items():
        add("criterion", name, i, cells[f"crit_{name}"].iloc[i])
    if labelled:
        add("oracle", "oracle (target labels)", int(np.nanargmax(cells["accuracy"].to_numpy(dtype=float))))
    no_adapter = (cells["featureset"] == global_layer) & (cells["adapter"] == "none")
    base = cells.index[no_adapter & (cells["center"] == center)]
    if len(base):
        add("baseline", "no adapter, Global", int(base[0]))
    source_only = cells.index[no_adapter & (cells["center"] == "none")]
    if len(source_only):
        add("source_only", "source only, Global (target unseen)", int(source_only[0]))
    out = pd.DataFrame(rows)
    if not (out["kind"].eq("criterion") & out["default"]).any() and len(base):
        # the default criterion failed on every candidate (too few images for its own classifiers):
        # the Global cell without an adapter is what the user gets, and the table says so
        log.warning("selection.default %r scored no candidate cell; using the Global cell without an adapter",
                    default)
        out.loc[out["kind"] == "baseline", ["default", "criterion"]] = [True, f"no adapter, Global ({default} "
                                                                              "scored no cell)"]
    _add_refined(out, cells)
    out["regret"] = cells["accuracy"].max() - out["accuracy"] if labelled else np.nan
    out["regret_balanced"] = cells["balanced_accuracy"].max() - out["balanced_accuracy"] if labelled else np.nan
    return out


def _add_refined(out, cells) -> None:
    """Where the pick's cell was refined (``selection.refine``; the score row's ``refine`` names the method), a
    last row, of kind ``refined``: the same cell and criterion, ``refine`` naming the method, the refined
    classifier's accuracies; it is what the user gets (``default``), so the criterion's row is not."""
    picked = out.index[out["default"].astype(bool)]
    if not len(picked) or "refine" not in cells:
        return
    row = out.loc[picked[0]]
    r = cells.iloc[int(row["row"])]
    method = refine_of(r)
    if not method:
        return
    out.loc[picked[0], "default"] = False
    out.loc[len(out)] = {**row.to_dict(), "kind": "refined",
                         "default": True, "refine": method, "accuracy": r["refined_accuracy"],
                         "balanced_accuracy": r["refined_balanced_accuracy"]}


def refine_of(row) -> str:
    """The method that refined a selection or prediction row's classifier (``refine``), "" for none: an
    empty CSV field reads back as NaN."""
    value = row.get("refine", "") if hasattr(row, "get") else getattr(row, "refine", "")
    return value if isinstance(value, str) else ""


def vote_weights(scores, method: str = "criterion") -> np.ndarray:
    """Each candidate's weight in the vote: equal (``uniform``), or (``criterion``) a softmax of the criterion's
    scores standardised over the candidates (no scale to tune: a candidate one standard deviation above the mean
    counts e times one at the mean; equal scores give equal weights)."""
    s = np.asarray(scores, np.float64)
    if method == "uniform" or len(s) < 2 or not s.std() > 0:
        return np.full(len(s), 1.0 / len(s))
    if method != "criterion":
        raise ValueError(f"selection.combine.method: unknown {method!r}; use {', '.join(COMBINES)}")
    z = (s - s.mean()) / s.std()
    w = np.exp(z - z.max())
    return w / w.sum()


def combined_decision(cells, pick, prediction_stores, *, method: str = "criterion", default: str = "dev",
                      members: str = "featureset"):
    """``(members, decision)`` of the candidates' vote, or None where fewer than two can vote: the cells that the
    ``default`` criterion scored, of the pick's feature set (``members: featureset``; with ``selection.scope:
    global``, its adapters at ``svm.center``) or of every feature set (``all``), whose decision values the
    predictions stores keep (each refined classifier's, where ``selection.refine`` refined it); ``members``
    ``[(feature set, adapter, centring, weight)]`` (:func:`vote_weights` of their scores) and ``decision`` the
    weighted sum of their decision values (:func:`layerfuse.svm.decision_matrix`; argmax: the label, max: the
    margin)."""
    featuresets = [pick["featureset"]] if members == "featureset" else list(dict.fromkeys(cells["featureset"]))
    voters, decisions = [], {}
    for featureset in featuresets:
        decisions[featureset] = cell_decisions(prediction_stores, featureset)
        rows = cells[(cells["featureset"] == featureset) & cells[f"crit_{default}"].notna()]
        voters += [(featureset, r["adapter"], r["center"], r[f"crit_{default}"]) for _, r in rows.iterrows()
                   if (r["adapter"], r["center"]) in decisions[featureset]]
    if len(voters) < 2:
        return None
    # six decimals: the weights the selection table and a saved model keep, so both vote exactly as here
    weights = np.round(vote_weights([v[3] for v in voters], method), 6)
    decision = sum(w * decisions[f][(a, c)].astype(np.float64) for w, (f, a, c, _) in zip(weights, voters))
    return [(f, a, c, float(w)) for w, (f, a, c, _) in zip(weights, voters)], decision


def vote_featureset(members) -> str:
    """The feature set a vote's row names: its members' one feature set, or ``all`` where they span several."""
    featuresets = {m[0] for m in members}
    return featuresets.pop() if len(featuresets) == 1 else ALL_FEATURESETS


def vote_members(row) -> list:
    """A vote's ``[(feature set, adapter, centring, weight)]`` from its selection row (``members`` JSON; tables
    written before votes spanned feature sets list ``[adapter, centring, weight]`` of the row's feature set)."""
    members = json.loads(row["members"])
    return [tuple(m) if len(m) == 4 else (row["featureset"], *m) for m in members]


def add_combined_row(table, cells, members, decision, labels, *, method: str, refine: str):
    """Append the vote's row to a selection ``table`` (kind ``ensemble``, adapter ``ensemble``; ``members`` as
    JSON; its accuracies where ``labels`` are known) and make it the default, in place."""
    pick = table[table["default"].astype(bool)].iloc[0]
    pred = decision.argmax(axis=1)
    labelled = len(labels) and bool((np.asarray(labels) >= 0).all())
    acc = float((pred == labels).mean()) if labelled else np.nan
    bal = float(balanced_accuracy_score(labels, pred)) if labelled else np.nan
    table["default"] = False
    table["members"], table["combine"] = "", ""
    table.loc[len(table)] = {**pick.to_dict(), "kind": "ensemble", "default": True, "refine": refine,
                             "featureset": vote_featureset(members),
                             "adapter": ENSEMBLE, "score": np.nan, "accuracy": acc, "balanced_accuracy": bal,
                             "members": json.dumps([list(m) for m in members]),
                             "combine": method}
    if labelled:
        table.loc[len(table) - 1, "regret"] = cells["accuracy"].max() - acc
        table.loc[len(table) - 1, "regret_balanced"] = cells["balanced_accuracy"].max() - bal


def _words(method: str) -> str:
    return method.replace("_", "-")


def criterion_label(row) -> str:
    """A selection row's criterion as tables show it: ``dev``, or ``dev, then self-training`` for the pick's
    refined row."""
    refine = refine_of(row)
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)   # a Series or an itertuples() row
    if get("kind") == "ensemble":
        weighting = f"{get('criterion')}-weighted" if get("combine") == "criterion" else str(get("combine"))
        return f"{weighting} vote of the candidates" + (f", each refined by {_words(refine)}" if refine else "")
    return str(get("criterion")) + (f", then {_words(refine)}" if refine else "")


def selection_headline(table) -> dict:
    """What a summary of one backbone's :func:`selection_table` (as written to ``selection/<backbone>.csv``)
    shows: ``pick`` (the default row: what the user's predictions are), ``cell`` (its "feature set / adapter /
    centring"), ``criterion`` (the criterion that picked the cell), ``refine`` (how its classifier was refined,
    "" for not), ``baseline`` (the Global row without an adapter at the tables' centring, or None where the
    pick is that cell, unrefined, or it is absent), and the accuracies ``source_only`` and ``best`` (NaN where
    absent or unlabelled)."""
    def cell_of(row):
        return f"{row['featureset']} / {row['adapter']} / {row['center']}"

    def accuracy(kind):
        rows = table.loc[table["kind"] == kind, "accuracy"]
        return rows.iloc[0] if len(rows) else float("nan")

    pick = table[table["default"].astype(bool)].iloc[0]
    refine = _words(refine_of(pick))
    base = table[table["kind"] == "baseline"]
    return {"pick": pick, "cell": cell_of(pick), "refine": refine, "criterion": pick["criterion"],
            "baseline": base.iloc[0] if len(base) and (refine or cell_of(base.iloc[0]) != cell_of(pick)) else None,
            "source_only": accuracy("source_only"), "best": accuracy("oracle")}


def member_platt(cells, members) -> tuple[float, float]:
    """The vote's margin -> probability map: its members' Platt ``(a, b)`` averaged by their weights."""
    rows = cells.set_index(["featureset", "adapter", "center"])
    return weighted_platt([m[3] for m in members],
                          [[rows.loc[tuple(m[:3]), "platt_a"], rows.loc[tuple(m[:3]), "platt_b"]] for m in members])


def picked_predictions(cells, table, prediction_stores, target_manifest, names: list[str], *, default: str = "dev",
                       combined=None):
    """``(cell row, predictions)`` of the ``default`` criterion's pick in a selection ``table`` among ``cells``
    (the score rows): a row per usable target image of ``target_manifest``, ``image``, ``predicted``,
    ``probability`` (that the prediction is right: the margin through the cell's Platt map, fitted on the
    source; NaN where the source could not calibrate it), ``margin`` (the SVM's), ``cell``, ``refine`` (the method
    that refitted the cell's SVM, whose predictions these are; empty for the source's SVM), and ``true`` where the
    target is labelled.  Where the default row is the candidates' vote (kind ``ensemble``), ``combined`` is its
    :func:`combined_decision` and the predictions are the vote's."""
    pick = table.loc[table["default"].astype(bool)]
    if pick.empty:
        raise ValueError(f"selection.default: {default!r} scored no cell (see the evaluate_svm logs); "
                         "choose another criterion")
    chosen = cells.iloc[int(pick["row"].iloc[0])]
    refine = refine_of(pick.iloc[0])
    pred, margin, labels = cell_predictions(prediction_stores, chosen["featureset"], chosen["adapter"],
                                            chosen["center"], refined=bool(refine))
    platt = (chosen.get("platt_a", np.nan), chosen.get("platt_b", np.nan))
    featureset, adapter = chosen["featureset"], chosen["adapter"]
    if pick["kind"].iloc[0] == "ensemble":
        # the candidates' vote (combined_decision); its margin mapped by the members' Platt maps, averaged by weight
        members, decision = combined
        pred, margin, adapter = decision.argmax(axis=1), decision.max(axis=1).astype(np.float32), ENSEMBLE
        platt, featureset = member_platt(cells, members), pick["featureset"].iloc[0]
    images = [r["image_id"] for r in read_manifest(target_manifest) if r["status"] == "ok"]
    if len(images) != len(pred):
        raise ValueError(f"{target_manifest} lists {len(images)} usable images, the predictions {len(pred)}: "
                         "rerun the workflow")
    probability = platt_probability(margin, *platt)
    predictions = pd.DataFrame({"image": images, "predicted": [names[i] for i in pred],
                                "probability": probability, "margin": margin,
                                "cell": f"{featureset}/{adapter}/{chosen['center']}",
                                "refine": refine})
    if not cells["accuracy"].isna().all():
        predictions["true"] = [names[i] for i in labels]
    return chosen, predictions


def confusion_table(predictions, names: list[str]):
    """True classes by predicted (one row ``unlabelled`` where the predictions have no ``true`` column)."""
    labelled = "true" in predictions
    truth = predictions["true"] if labelled else pd.Series(["unlabelled"] * len(predictions))
    confusion = pd.crosstab(pd.Categorical(truth, categories=names if labelled else ["unlabelled"]),
                            pd.Categorical(predictions["predicted"], categories=names), dropna=False)
    confusion.index.name, confusion.columns.name = "true", "predicted"
    return confusion
