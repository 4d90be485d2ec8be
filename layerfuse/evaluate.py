"""Linear SVM trained on the source only; accuracy, balanced accuracy, macro-F1 on the target."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from .svm import LinearSVM

__all__ = ["CENTERINGS", "GRID_CENTERINGS", "SVM_KEYS", "center_domains", "make_svm", "svm_kwargs", "fit_svm", "decide",
           "classify", "target_metrics", "evaluate_svm"]

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
        from .label_shift import prior_offset

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


# the keys of the config's ``svm`` slice that the classifier takes (``center`` is the data's, not its)
SVM_KEYS = ("C", "class_weight", "tol", "max_iter", "solver")


def make_svm(*, C: float = 1.0, class_weight: str | None = "balanced", tol: float = 1e-4, max_iter: int = 20000,
             solver: str = "auto", random_state: int = 0) -> LinearSVM:
    """The workflow's linear SVM, unfitted: ``LinearSVC``'s problem (:mod:`layerfuse.svm`)."""
    return LinearSVM(C=C, class_weight=class_weight, tol=tol, max_iter=max_iter, solver=solver,
                     random_state=random_state)


def svm_kwargs(svm: dict) -> dict:
    """The classifier's keys of an ``svm`` config slice (those absent take :func:`make_svm`'s defaults)."""
    return {k: svm[k] for k in SVM_KEYS if k in svm}


def fit_svm(xs, ys, **svm) -> LinearSVM:
    """:func:`make_svm`'s SVM fitted on the source ``(xs, ys)``."""
    if len(np.unique(ys)) < 2:
        raise ValueError(f"the source has {len(np.unique(ys))} class(es); a classifier needs at least 2")
    return make_svm(**svm).fit(xs, ys)


def decide(decision: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels and margins from a linear SVM's decision values (see :func:`classify`)."""
    if decision.ndim == 1:
        return classes[(decision > 0).astype(int)], np.abs(decision).astype(np.float32)
    return classes[decision.argmax(axis=1)], decision.max(axis=1).astype(np.float32)


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
    from sklearn.metrics import recall_score

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
        from .label_shift import estimate_target_priors

        priors = estimate_target_priors(xs, ys, xt, svm=svm, seed=svm.get("random_state", 0))
    xs, xt = center_domains(xs, xt, center, ys=ys, target_priors=priors)
    pred, _ = classify(xs, ys, xt, **svm)
    return target_metrics(yt, pred, len(ys)), pred

