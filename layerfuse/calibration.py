"""A probability for each prediction: Platt scaling of the linear SVM's margin for the predicted class.

The margin (:func:`layerfuse.svm.decide`) is in units of the SVM's decision function and often negative for
the predicted class of a one-vs-rest SVM; users read a "confidence" as a probability.  Platt (1999) maps
a margin ``m`` to ``1 / (1 + exp(-(a m + b)))``, ``(a, b)`` fitted by maximum likelihood to whether the
prediction was right, on margins the SVM did not train on: here a stratified cross-validation of the cell's
SVM on the labelled source, with Platt's smoothed targets.  The target's labels are never read; under a
domain shift the source's calibration overstates the target's accuracy (docs/method.md).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedKFold

from .svm import decide, fit_svm

__all__ = ["platt_fit", "platt_probability", "margin_calibration", "weighted_platt"]


def platt_probability(margin, a: float, b: float) -> np.ndarray:
    """``1 / (1 + exp(-(a margin + b)))``: the probability that a prediction with this margin is right."""
    z = a * np.asarray(margin, np.float64) + b
    return 0.5 * (1.0 + np.tanh(0.5 * z))                   # the logistic function without overflow


def platt_fit(margin, correct) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of ``correct`` (bool per prediction) given ``margin``, with Platt's
    targets ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)`` in place of 1 and 0 (no infinite slope when every
    prediction is right)."""
    m = np.asarray(margin, np.float64)
    y = np.asarray(correct, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(ab):
        z = ab[0] * m + ab[1]
        # log(1 + e^z) - t z, stably; its gradient is (sigmoid(z) - t) * (m, 1)
        value = np.logaddexp(0.0, z) - t * z
        r = platt_probability(m, *ab) - t
        return value.sum(), np.array([(r * m).sum(), r.sum()])

    ab = minimize(loss, np.array([1.0, np.log((n_pos + 1.0) / (n_neg + 1.0))]), jac=True, method="L-BFGS-B").x
    return float(ab[0]), float(ab[1])


def margin_calibration(xs, ys, *, svm: dict, folds: int = 3, seed: int = 0) -> tuple[float, float]:
    """Platt's ``(a, b)`` for one cell's SVM (``svm``: :func:`layerfuse.svm.svm_kwargs`), from the margins of
    a ``folds``-fold stratified cross-validation on the source ``(xs, ys)``; NaN where a class has fewer than
    two images (no fold could hold it out)."""
    ys = np.asarray(ys)
    counts = np.unique(ys, return_counts=True)[1]
    folds = int(min(folds, counts.min()))
    if folds < 2 or len(counts) < 2:
        return float("nan"), float("nan")
    margins, correct = np.empty(len(ys)), np.empty(len(ys), bool)
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(xs, ys):
        clf = fit_svm(xs[train], ys[train], **svm)
        pred, margin = decide(clf.decision_function(xs[held]), clf.classes_)
        margins[held], correct[held] = margin, pred == ys[held]
    # six decimals: what accuracy.csv keeps, so a saved model's probabilities equal the workflow's exactly
    return tuple(round(v, 6) for v in platt_fit(margins, correct))


def weighted_platt(weights, maps) -> tuple[float, float]:
    """A vote's Platt map: its members' ``(a, b)`` (``maps``) averaged by their ``weights``, to six decimals as
    :func:`margin_calibration` keeps them (the workflow and a saved model compute the same)."""
    w = np.asarray(weights, np.float64)
    return tuple(float(v) for v in np.round(w @ np.asarray(maps, np.float64) / w.sum(), 6))
