"""The target's class proportions without its labels, and a centring that keeps them.

Centring each domain on its own mean (``svm.center: domain``) removes a domain offset, but where the
target holds the classes in other proportions than the source its mean also moves with them, and
centring pulls its predictions back towards the source's proportions (HAM10000 has 10% melanoma,
PH2 20%: centring halved Global's melanoma recall).

``prior`` centring estimates the target's proportions ``π_t`` by EM on calibrated source-classifier
probabilities (Saerens, Latinne & Decaestecker, Neural Computation 2002) and places the centred
target where a source with those proportions would lie: the source is centred on its mean, the
target on its mean minus ``Σ_c π_t(c) μ_c − μ_s`` (``μ_c``: the source's class means).  The classifier
is the ``domain`` one; only the target moves.

The estimate is made on the plainly centred target, which understates a shift (centring has already
pulled the target towards the source's proportions).  Alternating estimate and centring
(``rounds`` > 1) removes that bias on separable data but is a feedback loop: where the classifier is
weak (the 56% demo) the estimate ran to one class at 67% and accuracy fell to 17%, so one round is the
default.

Two estimators that hold better where the source classifier's posteriors are miscalibrated on the target
(:func:`shifted_priors`): black-box shift estimation (BBSE: Lipton, Wang & Smola, ICML 2018) solves
``C w = q`` for the importance weights ``w = π_t / π_s``, with ``C`` the source classifier's confusion
matrix on held-out source predictions and ``q`` its predicted class shares on the target; maximum
likelihood with bias-corrected temperature scaling (MLLS-BCTS: Alexandari, Kundaje & Shrikumar, ICML 2020)
calibrates the classifier's decision values on held-out source predictions (``softmax(z / T + b)``) and
runs Saerens' EM on the target's calibrated posteriors.  Both read held-out decisions from
``folds``-fold cross-fitting on the source.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from .svm import make_calibrated_svm, make_svm, source_sample

log = logging.getLogger("layerfuse.label_shift")

__all__ = ["em_priors", "prior_offset", "estimate_target_priors", "SHIFT_ESTIMATORS", "bbse_priors", "fit_bcts",
           "shifted_priors"]


def em_priors(probs: np.ndarray, source_priors: np.ndarray, *, pseudo_count: float = 0.0, max_iter: int = 1000,
              tol: float = 1e-8) -> np.ndarray:
    """Saerens' EM: the class proportions ``π_t`` of samples whose posteriors under the source's proportions
    ``source_priors`` are ``probs`` (n x C): posteriors reweighted by ``π_t / π_s``, renormalised, averaged,
    until ``π_t`` moves less than ``tol``.  ``pseudo_count``: a Dirichlet prior worth that many images in the
    source's proportions (the MAP estimate): on a few images with poorly calibrated posteriors plain EM
    runs to a corner (one class 100%)."""
    source_priors = np.asarray(source_priors, float)
    priors = source_priors.copy()
    for _ in range(max_iter):
        w = probs * (priors / source_priors)
        w /= w.sum(axis=1, keepdims=True)
        new = (w.sum(axis=0) + pseudo_count * source_priors) / (len(w) + pseudo_count)
        if np.abs(new - priors).max() < tol:
            return new
        priors = new
    return priors


def prior_offset(xs: np.ndarray, ys: np.ndarray, target_priors) -> np.ndarray:
    """``Σ_c π_t(c) μ_c − μ_s``: the source's mean under the target's class proportions, relative to its own
    (classes in ``np.unique(ys)`` order)."""
    classes = np.unique(ys)
    means = np.stack([xs[ys == c].mean(0) for c in classes])
    return np.asarray(target_priors, float) @ means - xs.mean(0)


def estimate_target_priors(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, *, svm: dict, rounds: int = 1,
                           folds: int = 3, pseudo_count: float = 20.0, seed: int = 0,
                           max_source_images: int = 10000) -> np.ndarray:
    """The target's class proportions (``np.unique(ys)`` order), estimated without target labels.

    The workflow's linear SVM (:func:`layerfuse.svm.make_svm`) with sigmoid-calibrated probabilities (``CalibratedClassifierCV``,
    ``folds`` folds) is fitted once on the centred source; each round (one by default: see the module's
    note) places the centred target by the current estimate (:func:`prior_offset`) and reruns :func:`em_priors` on its posteriors, shrunk towards
    the source's proportions by ``pseudo_count`` images (a fixed count: it fades as the target grows).
    Where the source has more than ``max_source_images`` rows the classifier is fitted on a seeded
    stratified sample of that many (:func:`layerfuse.svm.source_sample`, the criteria's sample);
    the centring and the class means use every row.
    """
    classes, counts = np.unique(ys, return_counts=True)
    source_priors = counts / counts.sum()
    keep = source_sample(ys, max_source_images, seed)
    fit_x, fit_y = (xs, ys) if keep is None else (xs[keep], ys[keep])
    fewest = int(np.unique(fit_y, return_counts=True)[1].min())
    if fewest < 2:
        # calibration's cross-validation needs every class in each fold: no estimate, the source's proportions
        log.warning("target class proportions not estimated: a source class has %d image; using the source's",
                    fewest)
        return source_priors
    folds = int(max(2, min(folds, fewest)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # convergence notes: the scoring SVM reports its own
        clf = make_calibrated_svm(svm, seed, folds).fit(fit_x - xs.mean(0), fit_y)
    centred_t = xt - xt.mean(0)
    priors = source_priors
    for _ in range(rounds):
        probs = clf.predict_proba(centred_t + prior_offset(xs, ys, priors))
        priors = em_priors(probs, source_priors, pseudo_count=pseudo_count)
    return priors


SHIFT_ESTIMATORS = ("em", "bbse", "mlls_bcts")


def _logits(decision: np.ndarray) -> np.ndarray:
    """A linear SVM's decision values as one column per class (two classes: ``0`` and the decision value)."""
    return np.column_stack([np.zeros(len(decision)), decision]) if decision.ndim == 1 else decision


def bbse_priors(held_out_pred, held_out_y, target_pred, n_classes: int) -> np.ndarray:
    """BBSE: the target's class proportions from hard predictions, ``π_t = π_s · w`` where ``C w = q``
    (``C[i, j]``: the held-out source's share predicted ``i`` with true class ``j``; ``q[i]``: the target's share
    predicted ``i``); least squares, negative weights clipped to 0, renormalised."""
    held_out_y, held_out_pred = np.asarray(held_out_y), np.asarray(held_out_pred)
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (held_out_pred, held_out_y), 1.0)
    confusion /= len(held_out_y)
    q = np.bincount(np.asarray(target_pred), minlength=n_classes) / len(target_pred)
    w = np.clip(np.linalg.lstsq(confusion, q, rcond=None)[0], 0, None)
    priors = w * np.bincount(held_out_y, minlength=n_classes) / len(held_out_y)
    return priors / priors.sum() if priors.sum() > 0 else np.full(n_classes, 1 / n_classes)


def fit_bcts(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: ``(1/T, b)`` minimising the negative log-likelihood of
    ``softmax(logits / T + b)`` for labels ``y`` (``b[0] = 0``)."""
    n, c = logits.shape
    rows = np.arange(n)

    def nll(params):
        inv_t, b = np.exp(params[0]), np.r_[0.0, params[1:]]
        logp = log_softmax(logits * inv_t + b, axis=1)
        grad_z = softmax(logits * inv_t + b, axis=1)
        grad_z[rows, y] -= 1                              # d(-log p_y)/dz, per row
        grad_z /= n
        return -logp[rows, y].mean(), np.r_[(grad_z * logits).sum() * inv_t, grad_z.sum(0)[1:]]

    res = minimize(nll, np.zeros(c), jac=True, method="L-BFGS-B")
    return float(np.exp(res.x[0])), np.r_[0.0, res.x[1:]]


def shifted_priors(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, *, method: str = "mlls_bcts", svm: dict,
                   folds: int = 5, seed: int = 0) -> np.ndarray:
    """The target's class proportions (``np.unique(ys)`` order) by ``method``: ``bbse`` or ``mlls_bcts``
    (see the module's docstring) on the workflow's linear SVM, or ``em`` (:func:`estimate_target_priors` on
    these features as given).  The held-out decisions come from ``folds``-fold cross-fitting on the source,
    the target's from an SVM fitted on the whole source."""
    if method not in SHIFT_ESTIMATORS:
        raise ValueError(f"method must be one of {', '.join(SHIFT_ESTIMATORS)}, got {method!r}")
    classes, y = np.unique(ys, return_inverse=True)
    if method == "em":
        return estimate_target_priors(xs, y, xt, svm=svm, seed=seed)
    folds = int(max(2, min(folds, np.bincount(y).min())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # convergence notes: the scoring SVM reports its own
        held_out = _logits(cross_val_predict(make_svm(**svm, random_state=seed), xs, y, method="decision_function",
                                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed)))
        target = _logits(make_svm(**svm, random_state=seed).fit(xs, y).decision_function(xt))
    if method == "bbse":
        return bbse_priors(held_out.argmax(1), y, target.argmax(1), len(classes))
    inv_t, b = fit_bcts(held_out, y)
    return em_priors(softmax(target * inv_t + b, axis=1), np.bincount(y) / len(y))
