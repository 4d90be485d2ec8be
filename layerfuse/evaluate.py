"""Linear SVM trained on the source only; accuracy, balanced accuracy, macro-F1 on the target."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from . import adapt
from .label_shift import estimate_target_priors, prior_offset
from .select import criteria_scores
from .calibration import margin_calibration
from .self_training import refine_cell
from .svm import decide, decision_matrix, fit_svm, svm_kwargs

__all__ = ["CENTERINGS", "GRID_CENTERINGS", "center_domains", "classify", "target_metrics", "evaluate_svm", "score_grid"]

CENTERINGS = ("none", "domain", "prior")
# the centrings every grid cell is scored at; ``prior`` is added where it is the tables' centring
GRID_CENTERINGS = ("none", "domain")


def center_domains(xs, xt, center: str = "domain", *, ys=None, target_priors=None,
                   copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``domain``: each domain minus its own mean (source on the source mean, target on the target's);
    ``prior``: the same, then the target moved to where a source with the target's class proportions
    ``target_priors`` (estimated without labels, :mod:`layerfuse.label_shift`; needs the source labels ``ys``)
    would lie; ``none``: unchanged.

    In a TCA embedding the domains' means still differ (the MMD term is traded against variance by
    ``mu``), and a linear classifier reads that offset as class evidence.  Centring each domain
    removes it, assuming the domains share their class proportions: where the target's differ, the
    offset partly reflects them and ``domain`` centring moves predictions towards the source's
    proportions; ``prior`` puts that part back.

    ``copy=False`` centres ``xs`` and ``xt`` in place (the same values): a caller done with the
    uncentred features holds them once.
    """
    if center not in CENTERINGS:
        raise ValueError(f"svm.center must be one of {', '.join(CENTERINGS)}, got {center!r}")
    if center == "none":
        return xs, xt
    offset = None
    if center == "prior":
        if ys is None or target_priors is None:
            raise ValueError("prior centring needs the source labels and the target's estimated class proportions")
        offset = prior_offset(xs, ys, target_priors)      # of the uncentred source, before any change in place
    if copy:
        cs, ct = xs - xs.mean(0), xt - xt.mean(0)
    else:
        xs -= xs.mean(0)
        xt -= xt.mean(0)
        cs, ct = xs, xt
    return cs, ct if offset is None else ct + offset


def classify(xs, ys, xt, **svm) -> tuple[np.ndarray, np.ndarray]:
    """Fit :func:`make_svm`'s SVM on ``(xs, ys)``; return the target's predicted labels and their margins.

    The margin is the SVM's decision value for the predicted class (one-vs-rest; for two classes
    the absolute decision value): a confidence in units of the margin, not a probability.
    """
    clf = fit_svm(xs, ys, **svm)
    return decide(clf.decision_function(xt), clf.classes_)


def target_metrics(yt, pred, n_source: int, n_classes: int | None = None) -> dict:
    """Accuracy, balanced accuracy and macro-F1 on the target (NaN when it is unlabelled: labels -1), and
    ``recall``: each class's recall (label order, ``;``-separated; ``n_classes`` of them where given)."""
    yt = np.asarray(yt)
    labelled = len(yt) > 0 and bool((yt >= 0).all())
    nan = float("nan")
    labels = np.arange(n_classes) if n_classes else np.unique(yt)
    recall = (recall_score(yt, pred, labels=labels, average=None, zero_division=np.nan) if labelled
              else [nan] * len(labels))
    return {
        "accuracy": float(accuracy_score(yt, pred)) if labelled else nan,
        "balanced_accuracy": float(balanced_accuracy_score(yt, pred)) if labelled else nan,
        "macro_f1": float(f1_score(yt, pred, average="macro", zero_division=0)) if labelled else nan,
        "recall": ";".join(f"{r:.4f}" for r in recall) if labelled else "",
        "n_source": int(n_source),
        "n_target": int(len(yt)),
    }


def evaluate_svm(xs, ys, xt, yt, *, center: str = "domain", **svm) -> tuple[dict, np.ndarray]:
    """Fit :func:`make_svm`'s SVM (keywords ``svm``) on ``(xs, ys)``, predict ``xt``; return metrics and
    predictions.

    ``center`` is applied first (see :func:`center_domains`; ``prior`` estimates the target's class
    proportions first).  Features are not standardised: standardising TCA components (inflating
    low-variance ones) is what collapsed Amazon->Webcam to ~20% in our tests.
    """
    priors = None
    if center == "prior":
        priors = estimate_target_priors(xs, ys, xt, svm=svm, seed=svm.get("random_state", 0))
    xs, xt = center_domains(xs, xt, center, ys=ys, target_priors=priors)
    pred, _ = classify(xs, ys, xt, **svm)
    return target_metrics(yt, pred, len(ys)), pred


def score_grid(pairs: dict, adapters: list[str], svm: dict, meta: dict, *, selection: dict | None = None,
               label_shift: dict | None = None) -> tuple[list[dict], list, list, dict]:
    """Score every cell of one feature set: adapter (raw features ``none``, the first ``d`` TCA components
    ``tca-d``, or a configured adapter's features, named by its ``adapters`` key) x centring (each of
    :data:`layerfuse.evaluate.GRID_CENTERINGS`, and ``prior`` where ``svm["center"]`` is ``prior``), one
    linear SVM each.  ``target_priors``: the target's class proportions estimated
    without labels (:mod:`layerfuse.label_shift`), for prior centring and for the global feature set
    without adaptation (the report's Class proportions).

    ``pairs``: :func:`layerfuse.h5io.read_pair`'s tuples by store key: ``"none"`` the fused pair, ``"tca"``
    the TCA embedding (fitted once at the largest ``d``; components are nested), each ``adapters`` key its
    store, as far as the cells ``adapters`` need them.  An adapter that failed on the feature set gives rows
    with no scores and the reason in ``failed``; one whose target map no saved model can apply
    (``map_error``) gets no criteria, so the label-free pick never takes it.

    ``selection`` (``criteria``, ``validation_size``, ``seed``, optionally ``max_*_images``): each cell
    also gets the label-free criteria of :mod:`layerfuse.select` as ``crit_<name>`` columns; with
    ``centerings`` only the cells at those centrings do (the others' columns are empty): the criteria are
    most of a large grid's time, and ``selection.scope: global`` picks at ``svm.center`` only.  Those cells
    are also refined as ``selection["refine"]`` says (:func:`layerfuse.self_training.refine_cell`): the row
    names the method in ``refine`` and gets ``refined_accuracy``/``refined_balanced_accuracy``, and Platt's
    ``platt_a``/``platt_b`` turn its margins into probabilities (:func:`layerfuse.calibration.margin_calibration`).
    ``label_shift``: keywords of the class-proportion estimate (``max_source_images``).

    Returns ``(rows, predictions, margins, target_priors, decisions)``: a score row, the target's predicted
    labels (-1 for a failed cell) and margins per cell, the estimated proportions by adapter cell, and, where
    ``selection["combine"]`` votes, ``{row index: the scored cell's decision values}``
    (:func:`layerfuse.svm.decision_matrix`);
    predictions and margins are ``(plain, refined)`` pairs, the refined ones -1 and NaN where the cell was not
    refined.
    """
    layer, _, reducer = meta["featureset"].partition("-")
    local_width = (pairs["none"][4] if "none" in pairs else {}).get("local_width", "")
    svm_args = svm_kwargs(svm)
    centerings = GRID_CENTERINGS + (("prior",) if svm.get("center") == "prior" else ())
    rows, preds, margins, priors, decisions = [], [], [], {}, {}
    scored = (selection or {}).get("centerings", centerings)
    no_crit = {f"crit_{k}": float("nan") for k in (selection or {}).get("criteria", ())}
    nan = float("nan")
    for adapter in adapters:
        xs, xt, ys, yt, dims, failed, map_error = adapt.cell_features(pairs, adapter)
        # the target's class proportions: for prior centring, and for the report (global features, no adapter)
        if not failed and ("prior" in centerings or (adapter == "none" and not reducer)):
            priors[adapter] = estimate_target_priors(xs, ys, xt, svm=svm_args, **(label_shift or {})).tolist()
        for center in centerings:
            refined, platt = None, (nan, nan)
            if failed:
                pred, margin = np.full(len(yt), -1), np.full(len(yt), np.nan, np.float32)
                metrics = {**{k: float("nan") for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                           "n_source": len(ys), "n_target": len(yt)}
                crit = no_crit
            else:
                # the last centring of stored features needs them no more: centred in place, held once
                # (TCA's cells, those with dims, are column slices of one embedding that the next cell reads)
                last_use = center == centerings[-1] and dims is None
                cs, ct = center_domains(xs, xt, center, ys=ys, target_priors=priors.get(adapter), copy=not last_use)
                pred, margin = classify(cs, ys, ct, **svm_args)
                metrics = target_metrics(yt, pred, len(ys), n_classes=int(ys.max()) + 1)
                crit = no_crit
                if selection and center in scored and not map_error:
                    crit = {f"crit_{k}": v for k, v in criteria_scores(
                        cs, ys, ct, svm=svm_args, criteria=selection["criteria"],
                        validation_size=selection["validation_size"], seed=selection["seed"],
                        **{k: selection[k] for k in ("max_target_images", "max_source_images") if k in selection}).items()}
                    refined = refine_cell(cs, ys, ct, refine=selection.get("refine"), svm=svm_args)
                    platt = margin_calibration(cs, ys, svm=svm_args, seed=selection["seed"])
                    if (selection.get("combine") or {}).get("method", "none") != "none":
                        # what the candidates' vote needs (layerfuse.select.combined_decision): this cell's
                        # decision values, its refined classifier's where it was refined
                        model = refined[2] if refined is not None else fit_svm(cs, ys, **svm_args)
                        decisions[len(rows)] = decision_matrix(model.decision_function(ct))
            refined_row = {"refine": selection["refine"]["method"] if refined is not None else "",
                           "refined_accuracy": nan, "refined_balanced_accuracy": nan,
                           "platt_a": platt[0], "platt_b": platt[1]}
            if refined is None:
                refined = (np.full(len(yt), -1), np.full(len(yt), np.nan, np.float32))
            else:
                m = target_metrics(yt, refined[0], len(ys))
                refined_row.update(refined_accuracy=m["accuracy"], refined_balanced_accuracy=m["balanced_accuracy"])
            preds.append((pred, refined[0]))
            margins.append((margin, refined[1]))
            rows.append({**meta, "layer": layer, "reducer": reducer or "", "adapter": adapter, "center": center,
                         "n_components": dims if dims is not None else "",
                         "n_components_used": xs.shape[1] if dims is not None else "",
                         "local_width": local_width, **metrics, **crit, **refined_row, "failed": failed,
                         "target_priors": ";".join(f"{p:.4f}" for p in priors.get(adapter, []))})
    return rows, preds, margins, priors, decisions
