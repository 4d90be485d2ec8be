"""Stages of rules/classify.smk: the SVM grid and the label-free pick."""
from __future__ import annotations

import json
import logging

import numpy as np

from ..evaluate import score_grid
from ..h5io import atomic_path, read_pair, write_arrays, write_text_atomic
from ..images import manifest_classes
from ..report import gather_scores, plot_confusion, predictions_html, write_score_rows
from ..layout import cell_predictions, image_thumbnails
from ..select import (add_combined_row, combined_decision, confusion_table, picked_predictions, refine_of,
                      selection_table)


log = logging.getLogger("layerfuse.select")


def evaluate_svm(features: dict, adapters: list[str], svm: dict, meta: dict, out, predictions=None,
                 selection: dict | None = None, label_shift: dict | None = None) -> list[dict]:
    """Score every cell of one feature set (:func:`layerfuse.evaluate.score_grid`); all rows in one CSV.

    ``features`` maps ``"none"`` to the fused pair and each fitted adapter's store key (``tca``, the
    ``adapters`` keys) to its store, as far as the cells ``adapters`` need them.  ``predictions``: an HDF5
    file for every cell's target predictions (``pred``, -1 for a failed cell) and SVM margins
    (``margin``), and those of its refined classifier (``refined_pred``, ``refined_margin``: -1 and NaN where
    ``selection.refine`` did not refine it), one row per cell in the CSV's order; where ``selection.combine``
    votes, ``decisions`` (the scored cells' decision values, rows ``decision_rows`` of the CSV).
    """
    pairs = {key: read_pair(path) for key, path in features.items()}
    rows, preds, margins, priors, decisions = score_grid(pairs, adapters, svm, meta, selection=selection,
                                                         label_shift=label_shift)
    write_score_rows(out, rows)
    if predictions is not None:
        (plain, refined), (margin, refined_margin) = zip(*preds), zip(*margins)
        voters = sorted(decisions)                    # the candidate cells' decision values, where combine votes
        write_arrays(predictions, {"pred": np.asarray(plain, np.int16), "margin": np.asarray(margin, np.float32),
                                   "refined_pred": np.asarray(refined, np.int16),
                                   "refined_margin": np.asarray(refined_margin, np.float32),
                                   "labels": pairs[next(iter(pairs))][3],
                                   **({"decisions": np.stack([decisions[i] for i in voters])} if voters else {})},
                     {"cells": json.dumps([[r["adapter"], r["center"]] for r in rows]),
                      "featureset": meta["featureset"], "target_priors": json.dumps(priors),
                      "decision_rows": json.dumps(voters)})
    return rows


def select_configuration(score_csvs, prediction_stores, source_manifest, target_manifest, params: dict,
                         outputs, target_images=None):
    """Each label-free criterion's pick among one backbone's cells; the default criterion's predictions.

    Writes ``outputs.selection`` (a row per criterion: the cell it picks, its score, and, where the target
    is labelled, its accuracy, balanced accuracy and regret against the oracle; plus the oracle, the Global
    cell without an adapter and the source-only Global cell), ``outputs.predictions`` (a row per target
    image: ``image`` relative to the target folder, ``predicted``, ``probability`` (Platt), ``margin`` (the
    SVM's), ``cell``, ``refine``, and ``true`` where labelled), and the confusion matrix ``outputs.confusion`` /
    ``outputs.figure`` (true classes by predicted; one row ``unlabelled`` for an unlabelled target); with
    ``outputs.summary``, the report's Predictions page (thumbnails from the image store ``target_images``).
    """
    sel = params["selection"]
    df = gather_scores(score_csvs)
    labelled = not df["accuracy"].isna().all()
    names = manifest_classes(source_manifest, target_manifest)
    out = selection_table(df, sel["criteria"], default=sel["default"], center=params["center"],
                          global_layer=params["global_layer"], scope=sel["scope"])
    combine = (sel.get("combine") or {}).get("method", "none")
    combined = None
    if combine != "none":
        pick = out[out["default"].astype(bool)].iloc[0]
        combined = combined_decision(df, pick, prediction_stores, method=combine, default=sel["default"],
                                     members=sel["combine"].get("members", "featureset"))
        if combined is None:
            log.warning("selection.combine: fewer than two candidate cells were scored; the pick predicts alone")
        else:
            labels = cell_predictions(prediction_stores, pick["featureset"], pick["adapter"], pick["center"])[2]
            add_combined_row(out, df, *combined, labels, method=combine, refine=refine_of(pick))
    out.insert(0, "backbone", df["backbone"].iloc[0])
    out.insert(0, "experiment", df["experiment"].iloc[0])
    with atomic_path(outputs.selection) as tmp:
        out.drop(columns="row").to_csv(tmp, index=False, float_format="%.6f")

    chosen, table = picked_predictions(df, out, prediction_stores, target_manifest, names,
                                       default=sel["default"], combined=combined)
    with atomic_path(outputs.predictions) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    confusion = confusion_table(table, names)
    with atomic_path(outputs.confusion) as tmp:
        confusion.to_csv(tmp)
    with atomic_path(outputs.figure) as tmp:
        plot_confusion(confusion, tmp, f"{chosen['experiment']} / {chosen['backbone']}: "
                                       f"{table['cell'].iloc[0]} (picked by {sel['default']})")
    if getattr(outputs, "summary", None):
        per_class = 6
        shown = table.sort_values("margin", ascending=False).groupby("predicted").head(per_class)["image"]
        html = predictions_html(f"{chosen['experiment']} / {chosen['backbone']}", out, table,
                                image_thumbnails(target_images, target_manifest, set(shown)),
                                outputs.figure if labelled else None, per_class)
        write_text_atomic(outputs.summary, html)
    return out
