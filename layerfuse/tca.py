"""Transfer Component Analysis (Pan et al., IEEE TNN 2011) as a scikit-learn transformer.

TCA finds ``W`` maximising ``tr(Wᵀ K H K W)`` subject to ``Wᵀ (K L K + μ I) W = I``:
the kernel PCA of source and target together, penalised by the distance
between the two domains' means in feature space (MMD).  ``L = e eᵀ`` with
``e = [1/ns, …, -1/nt, …]`` is rank one and ``H = I - 11ᵀ/N`` is a centring, so
neither is formed: with ``v = K e`` the constraint matrix is ``μI + v vᵀ``,
whose inverse square root is ``μ^-½ (I + c u uᵀ)`` (``u = v/|v|``,
``c = (1 + |v|²/μ)^-½ - 1``).  The problem becomes the standard symmetric
eigenproblem of ``M = Bᵀ B`` with ``B = H K A^-½``, solved for the top
components only, and ``W = A^-½ Z``.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["TCA", "median_gamma", "rbf_kernel"]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(aa + bb - 2.0 * (a @ b.T), 0.0)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * |a - b|²)`` with squared Euclidean distances."""
    return np.exp(-gamma * _sq_dists(a, b))


def median_gamma(x: np.ndarray, *, factor: float = 1.0, max_samples: int = 2000, random_state=0) -> float:
    """``1 / (factor² · median |xi - xj|²)``: the median heuristic, ``factor`` times wider."""
    rng = np.random.default_rng(random_state)
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    d = _sq_dists(x, x)[np.triu_indices(len(x), 1)]
    med = float(np.median(d)) if d.size else 0.0
    if not np.isfinite(med) or med <= 0:
        med = 1.0
    return 1.0 / (factor ** 2 * med)


class TCA(TransformerMixin, BaseEstimator):
    """Transfer Component Analysis.

    Parameters
    ----------
    n_components : int, default=64
        Number of transfer components.  Components are nested: the first ``k``
        of a fit with more components equal a fit with ``k``.
    kernel : {"rbf", "linear"}, default="rbf"
    gamma : "median" or float, default="median"
        RBF coefficient; ``"median"`` uses ``1 / (bandwidth_factor² · median |xi-xj|²)``.
    bandwidth_factor : float, default=1.0
        Width multiplier for the median heuristic (ignored for a float ``gamma``).
    mu : float, default=1.0
        Trade-off: larger ``mu`` keeps more variance, smaller aligns means harder.
    random_state : int or None, default=0
        Seeds the median-heuristic subsample.

    Attributes
    ----------
    gamma_ : float
    eigenvalues_ : ndarray of shape (n_components,)
    coef_ : ndarray of shape (n_samples_fit, n_components)
        ``W``; ``transform(X) = K(X, X_fit_) @ coef_``.
    X_fit_ : ndarray
    """

    def __init__(self, n_components=64, *, kernel="rbf", gamma="median", bandwidth_factor=1.0, mu=1.0,
                 random_state=0):
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.bandwidth_factor = bandwidth_factor
        self.mu = mu
        self.random_state = random_state

    def _check_params(self):
        if not isinstance(self.n_components, numbers.Integral) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.kernel not in ("rbf", "linear"):
            raise ValueError(f"kernel must be 'rbf' or 'linear', got {self.kernel!r}")
        if not (self.gamma == "median" or (isinstance(self.gamma, numbers.Real) and self.gamma > 0)):
            raise ValueError(f"gamma must be 'median' or a positive number, got {self.gamma!r}")
        if not (isinstance(self.mu, numbers.Real) and self.mu > 0):
            raise ValueError(f"mu must be a positive number, got {self.mu!r}")
        if not (isinstance(self.bandwidth_factor, numbers.Real) and self.bandwidth_factor > 0):
            raise ValueError(f"bandwidth_factor must be positive, got {self.bandwidth_factor!r}")

    def _kernel(self, a, b):
        if self.kernel == "linear":
            return a @ b.T
        return rbf_kernel(a, b, self.gamma_)

    def fit(self, X, domain=None):
        """Fit on source and target rows stacked in ``X``.

        ``domain`` marks each row: ``>= 0`` source, ``< 0`` target (skada's
        ``sample_domain``).  Labels are never used.  Without ``domain`` all
        rows count as one domain and TCA reduces to kernel PCA.
        """
        self._check_params()
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        n = X.shape[0]
        if domain is None:
            source = np.ones(n, dtype=bool)
        else:
            domain = np.asarray(domain).ravel()
            if domain.shape[0] != n:
                raise ValueError(f"domain has {domain.shape[0]} entries for {n} samples")
            source = domain >= 0
        ns, nt = int(source.sum()), int((~source).sum())
        if domain is not None and (ns == 0 or nt == 0):
            raise ValueError(f"TCA needs source and target samples, got {ns} source and {nt} target")
        if self.n_components > n:
            raise ValueError(f"n_components={self.n_components} exceeds the number of samples {n}")
        self.gamma_ = (median_gamma(X, factor=self.bandwidth_factor, random_state=self.random_state)
                       if self.gamma == "median" else float(self.gamma))
        K = self._kernel(X, X)
        e = np.where(source, 1.0 / max(ns, 1), -1.0 / max(nt, 1)) if nt else np.zeros(n)
        v = K @ e
        vnorm2 = float(v @ v)
        mu = float(self.mu)
        u = v / np.sqrt(vnorm2) if vnorm2 > 0 else np.zeros(n)
        c = 1.0 / np.sqrt(1.0 + vnorm2 / mu) - 1.0
        HK = K - K.mean(axis=0, keepdims=True)
        B = (HK + c * np.outer(HK @ u, u)) / np.sqrt(mu)       # H K A^-½
        M = B.T @ B
        k = int(self.n_components)
        evals, Z = linalg.eigh(M, subset_by_index=[n - k, n - 1], driver="evr")
        evals, Z = evals[::-1], Z[:, ::-1]
        W = (Z + c * np.outer(u, u @ Z)) / np.sqrt(mu)        # A^-½ Z
        signs = np.sign(W[np.abs(W).argmax(axis=0), np.arange(k)])
        W = W * np.where(signs == 0, 1.0, signs)
        self.eigenvalues_ = evals
        self.coef_ = W
        self.X_fit_ = X
        self.embedding_ = K @ W
        return self

    def fit_transform(self, X, domain=None, **fit_params):
        return self.fit(X, domain).embedding_

    def transform(self, X):
        """Project rows of ``X`` (seen or unseen) onto the transfer components."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._kernel(X, self.X_fit_) @ self.coef_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags
