"""The linear SVM of every grid cell: scikit-learn's ``LinearSVC`` problem, solved on dense BLAS.

``LinearSVC`` (liblinear) copies a dense matrix into its own sparse rows (16 bytes a value, a 60,000 x 11,840
source becomes 11 GB) and solves one class at a time on one core.  :class:`LinearSVM` minimises the same
objective, liblinear's L2-regularised squared hinge with a regularised intercept column, one-vs-rest::

    0.5 * (|w|^2 + b^2) + sum_i C_i * max(0, 1 - y_i * (x_i . w + intercept_scaling * b))^2

with ``C_i = C * class_weight[k]`` for the positive images of class ``k``'s problem and ``C`` for the rest
(liblinear's one-vs-rest weighting; both classes weighted in a binary problem), by a Newton method with
conjugate gradients on the generalised Hessian (liblinear's primal method), every class at once: each
step is a few matrix products of the float32 features, which read the matrix once for all classes and use
every core.  Both methods stop by liblinear's rule on the gradient's norm, at the same ``tol`` (tests compare
objectives and predictions with ``LinearSVC`` run to a tight tolerance).

``solver="auto"`` makes ``LinearSVC``'s own choice (``dual="auto"``): where there are no more images than
features liblinear's dual solver runs (fast there, and its copy is small), elsewhere the dense primal
Newton method above; ``"liblinear"`` always runs ``LinearSVC``, ``"newton"`` always the dense method.
The method steps along the Newton direction by backtracking (liblinear's primal method uses a trust
region; a trust region tried here took more steps, as liblinear's own does, on separable classes).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted, validate_data

from .solvers import SOLVERS, SQUARED_BLOCK_ROWS, resolve_solver

__all__ = ["LinearSVM", "SOLVERS", "SVM_KEYS", "resolve_solver", "make_svm", "svm_kwargs", "fit_svm", "decide",
           "decision_matrix",
           "make_calibrated_svm", "source_sample"]

# the keys of the config's ``svm`` slice that the classifier takes (``center`` is the data's, not its)
SVM_KEYS = ("C", "class_weight", "tol", "max_iter", "solver")


def make_svm(*, C: float = 1.0, class_weight: str | None = "balanced", tol: float = 1e-4, max_iter: int = 20000,
             solver: str = "auto", random_state: int = 0) -> "LinearSVM":
    """The workflow's linear SVM, unfitted: ``LinearSVC``'s problem (:class:`LinearSVM`)."""
    return LinearSVM(C=C, class_weight=class_weight, tol=tol, max_iter=max_iter, solver=solver,
                     random_state=random_state)


def svm_kwargs(svm: dict) -> dict:
    """The classifier's keys of an ``svm`` config slice (those absent take :func:`make_svm`'s defaults)."""
    return {k: svm[k] for k in SVM_KEYS if k in svm}


def fit_svm(xs, ys, **svm) -> "LinearSVM":
    """:func:`make_svm`'s SVM fitted on the source ``(xs, ys)``."""
    if len(np.unique(ys)) < 2:
        raise ValueError(f"the source has {len(np.unique(ys))} class(es); a classifier needs at least 2")
    return make_svm(**svm).fit(xs, ys)


def make_calibrated_svm(svm: dict, seed: int, folds: int = 3):
    """:func:`make_svm`'s SVM (keys of the ``svm`` slice) with sigmoid-calibrated probabilities over
    ``folds`` folds: the label-free criteria's and the class-proportion estimate's classifier."""
    return CalibratedClassifierCV(make_svm(**svm_kwargs(svm), random_state=seed), method="sigmoid", cv=folds)


def decide(decision: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels and margins from a linear SVM's decision values: the decision value of the
    predicted class (one-vs-rest; for two classes the absolute decision value)."""
    if decision.ndim == 1:
        return classes[(decision > 0).astype(int)], np.abs(decision).astype(np.float32)
    return classes[decision.argmax(axis=1)], decision.max(axis=1).astype(np.float32)


def decision_matrix(decision: np.ndarray) -> np.ndarray:
    """Decision values as ``(images, classes)`` float32: a two-class SVM's single column ``d`` becomes
    ``[-d, d]``, so the argmax and the max are :func:`decide`'s label and margin for any number
    of classes, and weighted sums of several cells' matrices vote."""
    d = np.asarray(decision, np.float32)
    return np.stack([-d, d], axis=1) if d.ndim == 1 else d


def source_sample(ys: np.ndarray, max_images: int, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded stratified sample of ``max_images`` source rows, or None where the
    source has no more than that (the label-free estimates' cap: their cost grows faster than the rows)."""
    if len(ys) <= max_images:
        return None
    keep, _ = next(StratifiedShuffleSplit(1, train_size=max_images, random_state=seed).split(np.zeros(len(ys)), ys))
    return np.sort(keep)


class LinearSVM(LinearClassifierMixin, BaseEstimator):
    """``LinearSVC(loss="squared_hinge", penalty="l2")``'s model, fitted by a dense Newton-CG method.

    Parameters
    ----------
    C, intercept_scaling : as :class:`sklearn.svm.LinearSVC`.
    class_weight : dict, "balanced" or None, default="balanced"
        As ``LinearSVC``'s; the workflow's default (``svm.class_weight``), where ``LinearSVC``'s is None.
    tol : float
        liblinear's stopping rule on the gradient's norm, for both methods (``LinearSVC``'s default).
    max_iter : int, default=20000
        The workflow's default (``svm.max_iter``; ``LinearSVC``'s is 1000).  Newton steps at most (``LinearSVC``'s iterations on the liblinear path); a
        :class:`~sklearn.exceptions.ConvergenceWarning` where a class's problem has not met ``tol`` by then.
    solver : {"auto", "newton", "liblinear"}
        See the module's docstring.
    random_state : int or None
        ``LinearSVC``'s, on the liblinear path (the Newton method is deterministic).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Newton steps (or ``LinearSVC``'s iterations) taken.
    solver_ : str
        The solver that ran: ``"newton"`` or ``"liblinear"``.
    """

    def __init__(self, C: float = 1.0, *, class_weight="balanced", tol: float = 1e-4, max_iter: int = 20000,
                 intercept_scaling: float = 1.0, solver: str = "auto", random_state=None):
        self.C = C
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.intercept_scaling = intercept_scaling
        self.solver = solver
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        if self.solver not in SOLVERS:
            raise ValueError(f"svm.solver: {self.solver!r} is not one of {', '.join(SOLVERS)}")
        self.solver_ = resolve_solver(self.solver, *np.shape(X))
        if self.solver_ == "liblinear":
            return self._fit_liblinear(X, y, sample_weight)
        self._liblinear = None
        X, y = validate_data(self, X, y, dtype=np.float32, order="C", accept_sparse=False)
        self.classes_, y_ind = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"LinearSVM needs 2 or more classes; the data have {k}")
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if k == 2:                                   # one problem, classes_[1] positive, both classes weighted
            signs = np.where(y_ind == 1, 1.0, -1.0)[:, None]
            cost = (self.C * weights[y_ind] * sw)[:, None]
        else:                                        # one-vs-rest: the positives carry their class's weight
            signs = np.where(y_ind[:, None] == np.arange(k), 1.0, -1.0)
            cost = self.C * np.where(signs > 0, weights[None, :], 1.0) * sw[:, None]
        w, b, self.n_iter_ = _newton_cg(X, signs, cost, self.intercept_scaling, self.tol, self.max_iter)
        self.coef_ = w.T
        self.intercept_ = b * self.intercept_scaling
        return self

    def _fit_liblinear(self, X, y, sample_weight):
        svc = LinearSVC(C=self.C, class_weight=self.class_weight, tol=self.tol,
                        max_iter=self.max_iter,
                        intercept_scaling=self.intercept_scaling, random_state=self.random_state, dual="auto")
        svc.fit(X, y, sample_weight=sample_weight)
        self._liblinear = svc
        for name in ("coef_", "intercept_", "classes_", "n_iter_", "n_features_in_"):
            setattr(self, name, getattr(svc, name))
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        if self._liblinear is not None:              # the same values LinearSVC gives, to the last bit
            return self._liblinear.decision_function(X)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        scores = X @ self.coef_.T.astype(np.float32) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores


def _newton_cg(X, signs, cost, s, tol, max_iter, max_cg=50):
    """Minimise each column's objective of the module docstring; columns converge on their own.  ``max_cg``
    truncates each step's CG: where the source has a few times as many images as features the classes are
    nearly separable, CG runs to any cap, and the iterations past 50 left the number of Newton steps as it was.

    ``X`` float32 (n, d); ``signs``, ``cost`` float64 (n, m).  Returns ``w`` (d, m), ``b`` (m,), steps."""
    n, m = signs.shape
    w, b = np.zeros((X.shape[1], m)), np.zeros(m)

    def grad(z):                                     # z: the scores x . w + s * b
        slack = np.maximum(1.0 - signs * z, 0.0)
        r = cost * slack * signs                     # -0.5 * d(loss)/dz
        gw = w - 2.0 * _xt(X, r)
        gb = b - 2.0 * s * r.sum(0)
        loss = 0.5 * ((w * w).sum(0) + b * b) + (cost * slack * slack).sum(0)
        return gw, gb, loss, slack > 0

    z = np.zeros((n, m))
    gw, gb, loss, active = grad(z)
    norm0 = np.sqrt((gw * gw).sum(0) + gb * gb)
    positives = (signs > 0).sum(0)
    # liblinear's primal stopping rule: |g| <= tol * max(min(#pos, #neg), 1) / n * |g at w=0|
    limit = tol * np.maximum(np.minimum(positives, n - positives), 1) / n * norm0
    done = np.sqrt((gw * gw).sum(0) + gb * gb) <= limit
    steps = 0
    while not done.all() and steps < max_iter:
        steps += 1
        live = ~done
        dw, db = _cg(X, gw, gb, cost * active, s, live, max_cg)
        u = _x(X, dw) + s * db                       # change of the scores along the step
        t = _line_search(w, b, dw, db, z, u, signs, cost, loss, gw, gb, live)
        stalled = live & (t == 0)
        w += dw * t
        b += db * t
        z += u * t
        gw, gb, loss, active = grad(z)
        # a float32 product cannot resolve a gradient far below its rounding: a step that cannot lower
        # the objective ends that class's problem
        done |= (np.sqrt((gw * gw).sum(0) + gb * gb) <= limit) | stalled
    if not done.all():
        warnings.warn(f"LinearSVM: {int((~done).sum())} of {m} one-vs-rest problems not converged in "
                      f"{max_iter} Newton steps; raise svm.max_iter", ConvergenceWarning, stacklevel=3)
    return w, b, steps


def _x(X, v):
    return (X @ v.astype(np.float32)).astype(np.float64)


def _xt(X, r):
    return (X.T @ r.astype(np.float32)).astype(np.float64)


def _cg(X, gw, gb, weights, s, live, max_cg, rel=0.1):
    """Solve ``H d = -g`` column by column (Hessian ``I + 2 X_a^T C_a X_a`` on each column's active rows)
    by conjugate gradients preconditioned by the Hessian's diagonal, to ``rel`` of the gradient's norm;
    finished columns keep ``d = 0``."""
    diag_w = np.ones_like(gw)
    chunk = min(SQUARED_BLOCK_ROWS, max(256, len(X) // 8))    # squares of an eighth of the rows at most
    for start in range(0, X.shape[0], chunk):         # 1 + 2 sum_i C_i a_i x_ij^2, a block of rows at a time
        rows = X[start:start + chunk]
        diag_w += 2.0 * ((rows * rows).T @ weights[start:start + chunk].astype(np.float32))
    diag_b = 1.0 + 2.0 * s * s * weights.sum(0)
    dw, db = np.zeros_like(gw), np.zeros_like(gb)
    rw, rb = np.where(live, -gw, 0.0), np.where(live, -gb, 0.0)
    zw, zb = rw / diag_w, rb / diag_b
    pw, pb = zw.copy(), zb.copy()
    rz = (rw * zw).sum(0) + rb * zb
    stop = rel * rel * ((rw * rw).sum(0) + rb * rb)
    run = live & (rz > 0)
    for _ in range(max_cg):
        if not run.any():
            break
        t = weights * (_x(X, pw) + s * pb)
        hw, hb = pw + 2.0 * _xt(X, t), pb + 2.0 * s * t.sum(0)
        php = (pw * hw).sum(0) + pb * hb
        alpha = np.where(run, rz / np.where(php > 0, php, 1.0), 0.0)
        dw += alpha * pw
        db += alpha * pb
        rw -= alpha * hw
        rb -= alpha * hb
        zw, zb = rw / diag_w, rb / diag_b
        rz_new = (rw * zw).sum(0) + rb * zb
        run &= (rw * rw).sum(0) + rb * rb > stop
        beta = np.where(run, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        pw = np.where(run, zw + beta * pw, 0.0)
        pb = np.where(run, zb + beta * pb, 0.0)
        rz = rz_new
    return dw, db


def _line_search(w, b, dw, db, z, u, signs, cost, loss, gw, gb, live, shrink=0.5, sigma=0.01, tries=20):
    """Armijo backtracking from the Newton step, per column; the objective along the step needs no
    product with ``X`` (the scores move by ``t * u``).  0 where no step lowers the objective."""
    slope = (gw * dw).sum(0) + gb * db
    t = np.where(live, 1.0, 0.0)
    accepted = ~live
    for _ in range(tries):
        ww, bb = w + dw * t, b + db * t
        slack = np.maximum(1.0 - signs * (z + u * t), 0.0)
        f = 0.5 * ((ww * ww).sum(0) + bb * bb) + (cost * slack * slack).sum(0)
        ok = f <= loss + sigma * t * slope
        accepted |= ok
        if accepted.all():
            break
        t = np.where(accepted, t, t * shrink)
    return np.where(accepted & live, t, 0.0)
