"""Target self-training: a cell's linear SVM refitted on the source and the target's confident pseudo-labels.

Selective pseudo-labelling (Wang & Breckon, AAAI 2020) on the workflow's SVM: fit on the labelled source,
predict the target, keep a share of the target's most confident predictions (by SVM margin), refit on the
source and the kept target rows with their pseudo-labels; the share grows over ``rounds`` refits to
``final_share``.  ``balance`` says how the kept rows are shared out among the classes:

``"uniform"``
    the same number for every class (``share x n_target / n_classes``, fewer where fewer are predicted):
    a class the source classifier under-predicts on the target (a label shift) still gets its share.
``"predicted"``
    the same fraction of each class's predictions (the paper's choice): the kept rows follow the
    predicted class proportions.

No target label is read; the refits are deterministic (the SVM's).  Domains are given as skada does:
``sample_domain`` >= 0 for source rows, < 0 for target rows, whose labels ``y`` are ignored.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .svm import decide, make_svm

__all__ = ["BALANCES", "REFINEMENTS", "SelfTrainingSVM", "select_confident", "refiner", "refine_cell"]

BALANCES = ("uniform", "predicted")


def select_confident(pred: np.ndarray, margin: np.ndarray, classes: np.ndarray, share: float,
                     balance: str = "uniform") -> np.ndarray:
    """Sorted indices of the target rows kept at ``share`` (0..1): per class, its most confident predictions
    (largest ``margin``), as many as ``balance`` allots it."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
    kept = []
    quota = int(np.ceil(share * len(pred) / len(classes)))
    for c in classes:
        rows = np.flatnonzero(pred == c)
        n = quota if balance == "uniform" else int(np.ceil(share * len(rows)))
        kept.append(rows[np.argsort(-margin[rows], kind="stable")][:n])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, int)


class SelfTrainingSVM(ClassifierMixin, BaseEstimator):
    """The workflow's linear SVM (:func:`layerfuse.svm.make_svm`) with target self-training.

    Parameters
    ----------
    rounds : int, default=3
        Refits on source + pseudo-labelled target; 0 is the plain SVM on the source.
    final_share : float, default=1.0
        The share of the target kept at the last round (round ``r`` keeps ``final_share * r / rounds``).
    balance : {"uniform", "predicted"}, default="uniform"
        How the kept rows are shared out among the classes (see the module's docstring).
    C, class_weight, tol, max_iter, solver, random_state
        The SVM's (:func:`layerfuse.svm.make_svm`).

    Attributes
    ----------
    svm_ : LinearSVM
        The last refit.
    classes_ : ndarray
    history_ : list of dict
        Per round: ``kept`` (target rows used) and ``changed`` (target predictions that changed).
    """

    __metadata_request__fit = {"sample_domain": True}

    def __init__(self, rounds: int = 3, *, final_share: float = 1.0, balance: str = "uniform", C: float = 1.0,
                 class_weight="balanced", tol: float = 1e-4, max_iter: int = 20000, solver: str = "auto",
                 random_state=0):
        self.rounds = rounds
        self.final_share = final_share
        self.balance = balance
        self.C = C
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.random_state = random_state

    def _svm(self):
        return make_svm(C=self.C, class_weight=self.class_weight, tol=self.tol, max_iter=self.max_iter,
                        solver=self.solver, random_state=self.random_state)

    def fit(self, X, y, *, sample_domain):
        X, y = np.asarray(X), np.asarray(y)
        source = np.asarray(sample_domain).ravel() >= 0
        self._fit_domains(X[source], y[source], X[~source])
        return self

    def _fit_domains(self, xs, ys, xt) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fit` on the domains apart; returns the last refit's target labels and margins
        (:func:`layerfuse.svm.decide`), which the last round has computed already."""
        if not (isinstance(self.rounds, numbers.Integral) and self.rounds >= 0):
            raise ValueError(f"rounds must be a non-negative integer, got {self.rounds!r}")
        if not 0 < self.final_share <= 1:
            raise ValueError(f"final_share must be in (0, 1], got {self.final_share!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        svm = self._svm().fit(xs, ys)
        self.classes_ = svm.classes_
        self.history_ = []
        pred, margin = svm.classes_[:0], np.zeros(0, np.float32)
        if len(xt):                                    # each refit's target decisions serve the next round
            pred, margin = decide(svm.decision_function(xt), svm.classes_)
            for r in range(1, self.rounds + 1):
                kept = select_confident(pred, margin, svm.classes_, self.final_share * r / self.rounds,
                                        self.balance)
                svm = self._svm().fit(np.vstack([xs, xt[kept]]), np.r_[ys, pred[kept]])
                new, margin = decide(svm.decision_function(xt), svm.classes_)
                self.history_.append({"kept": len(kept), "changed": int((new != pred).sum())})
                pred = new
        self.svm_ = svm
        return pred, margin

    def decision_function(self, X):
        check_is_fitted(self)
        return self.svm_.decision_function(X)

    def predict(self, X):
        return decide(self.decision_function(X), self.classes_)[0]


# ``selection.refine.method``: what the picked cell's classifier becomes (``none``: the source's SVM)
REFINEMENTS = ("none", "self_training")


def refiner(refine: dict | None, svm: dict) -> SelfTrainingSVM | None:
    """The estimator ``selection.refine`` asks for (``method``, ``rounds``, ``final_share``, ``balance``) on the
    workflow's SVM keywords ``svm``; None for ``method: none`` or no ``refine``."""
    refine = dict(refine or {})
    method = refine.pop("method", "none")
    if method not in REFINEMENTS:
        raise ValueError(f"selection.refine.method must be one of {', '.join(REFINEMENTS)}, got {method!r}")
    return None if method == "none" else SelfTrainingSVM(**refine, **svm)


def refine_cell(xs, ys, xt, *, refine: dict | None, svm: dict):
    """``(pred, margin, estimator)`` of one cell's (centred) features refitted as ``refine`` says with the
    target's pseudo-labels, or None where it says ``none``: the target's predicted labels and margins
    (:func:`layerfuse.svm.decide`) and the fitted :class:`SelfTrainingSVM`, whose ``svm_`` a saved model keeps."""
    est = refiner(refine, svm)
    if est is None:
        return None
    # the domains as they are: no stacked copy of both to split again, no second pass over the target
    pred, margin = est._fit_domains(xs, np.asarray(ys), xt)
    return pred, margin, est
