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
    """Squared Euclidean distances, computed in place in one N x M buffer."""
    d = a @ b.T
    aa = np.einsum("ij,ij->i", a, a)
    bb = aa if b is a else np.einsum("ij,ij->i", b, b)
    d *= -2.0
    d += aa[:, None]
    d += bb[None, :]
    return np.maximum(d, 0.0, out=d)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * |a - b|²)`` with squared Euclidean distances (no temporaries beyond the result)."""
    k = _sq_dists(a, b)
    k *= -gamma
    return np.exp(k, out=k)


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
    solver : {"auto", "exact", "dense", "nystroem"}, default="auto"
        ``exact``: the structured problem; a dense subset ``eigh`` (float64) up to
        ``dense_max_samples`` samples, block subspace iteration with
        Rayleigh-Ritz to ``tol`` above (memory 2 N² instead of 3 N²);
        ``dense``: always the dense subset ``eigh``;
        ``nystroem``: ``n_landmarks`` landmarks, O(N·m) memory;
        ``auto``: ``nystroem`` above ``auto_threshold`` samples, else ``exact``.
    n_landmarks : int, default=1000
    auto_threshold : int, default=3000
    dense_max_samples : int, default=8000
    tol : float, default=1e-9
        Relative residual at which the iterative exact solver stops.
    max_iter : int, default=300
    random_state : int or None, default=0
        Seeds the median-heuristic subsample, the landmarks and the start block.

    Attributes
    ----------
    gamma_ : float
    eigenvalues_ : ndarray of shape (n_components,)
    coef_ : ndarray of shape (n_samples_fit, n_components)
        ``W``; ``transform(X) = K(X, X_fit_) @ coef_``.
    X_fit_ : ndarray
    """

    def __init__(self, n_components=64, *, kernel="rbf", gamma="median", bandwidth_factor=1.0, mu=1.0,
                 solver="auto", n_landmarks=1000, auto_threshold=3000, dense_max_samples=8000, tol=1e-9,
                 max_iter=300, random_state=0):
        self.n_components = n_components
        self.solver = solver
        self.n_landmarks = n_landmarks
        self.auto_threshold = auto_threshold
        self.dense_max_samples = dense_max_samples
        self.tol = tol
        self.max_iter = max_iter
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
        if self.solver not in ("auto", "exact", "dense", "nystroem"):
            raise ValueError(f"solver must be 'auto', 'exact', 'dense' or 'nystroem', got {self.solver!r}")
        if not (isinstance(self.n_landmarks, numbers.Integral) and self.n_landmarks >= 1):
            raise ValueError(f"n_landmarks must be a positive integer, got {self.n_landmarks!r}")
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
        if np.ptp(X, axis=0).max() == 0:
            raise ValueError("all features are constant: TCA has nothing to align")
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
        e = np.where(source, 1.0 / max(ns, 1), -1.0 / max(nt, 1)) if nt else np.zeros(n)
        solver = self.solver
        if solver == "auto":
            solver = "nystroem" if n > self.auto_threshold else "exact"
        self.solver_ = solver
        k = int(self.n_components)
        if solver == "nystroem":
            self._fit_nystroem(X, e, k)
        else:
            self._fit_exact(X, e, k, dense=(solver == "dense"))
        self.X_fit_ = X
        return self

    def _fit_exact(self, X, e, k, dense=False):
        """Exact TCA through the rank-one/centring structure (see the module docstring)."""
        n = X.shape[0]
        K = self._kernel(X, X)
        v = K @ e
        vnorm2 = float(v @ v)
        mu = float(self.mu)
        u = v / np.sqrt(vnorm2) if vnorm2 > 0 else np.zeros(n)
        c = 1.0 / np.sqrt(1.0 + vnorm2 / mu) - 1.0

        def a_inv_sqrt(V):                                     # A^-½ V for a block V
            return (V + c * np.outer(u, u @ V)) / np.sqrt(mu)

        def apply_m(V):                                        # M V = A^-½ K H K A^-½ V
            Y = K @ a_inv_sqrt(V)
            Y -= Y.mean(axis=0, keepdims=True)
            return a_inv_sqrt(K @ Y)

        if dense or n <= self.dense_max_samples:
            B = K - K.mean(axis=0, keepdims=True)              # H K, then H K A^-½ in place
            B += c * np.outer(B @ u, u)
            B = B.T @ B
            B /= mu
            evals, Z = linalg.eigh(B, subset_by_index=[n - k, n - 1], driver="evr", overwrite_a=True)
            del B
            evals, Z = evals[::-1], Z[:, ::-1]
            self.n_iter_ = 1  # direct solve
        else:
            evals, Z, self.n_iter_ = _top_eigh(apply_m, n, k, tol=self.tol, max_iter=self.max_iter,
                                               random_state=self.random_state)
        W = a_inv_sqrt(Z)
        W = W * _signs(W)
        self.eigenvalues_ = evals
        self.coef_ = W
        self.embedding_ = K @ W
        self._nystroem = None

    def _fit_nystroem(self, X, e, k):
        """TCA on the Nyström feature map of ``m`` landmarks: O(N·m) memory, O(N·m²) time.

        With ``K ≈ Φ Φᵀ`` and ``Φ = U Σ`` (thin SVD), restricting ``W = U a`` gives the
        r x r generalized problem ``Σ²UᵀHUΣ² a = λ (Σ²Uᵀe eᵀUΣ² + μI) a``; the embedding is
        ``U Σ² a``.  With every sample a landmark this is exact TCA.
        """
        n = X.shape[0]
        m = min(int(self.n_landmarks), n)
        rng = np.random.default_rng(self.random_state)
        idx = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
        landmarks = X[idx]
        kmm = self._kernel(landmarks, landmarks)
        lam, vec = linalg.eigh(kmm)
        keep = lam > lam.max() * 1e-10
        lam, vec = lam[keep], vec[:, keep]
        proj = vec / np.sqrt(lam)                               # K_mm^-½ on its range
        phi = np.empty((n, proj.shape[1]))                      # N x r feature map, built in row blocks
        for lo in range(0, n, 8192):
            phi[lo:lo + 8192] = self._kernel(X[lo:lo + 8192], landmarks) @ proj
        # thin SVD of Φ through its r x r Gram matrix; U overwrites Φ block by block
        s2, V = linalg.eigh(phi.T @ phi)
        keep = s2 > s2.max() * 1e-12
        s2, V = s2[keep], V[:, keep]
        sigma = np.sqrt(s2)
        to_u = V / sigma
        U = phi if to_u.shape[1] == phi.shape[1] else np.empty((n, to_u.shape[1]))
        for lo in range(0, n, 8192):
            U[lo:lo + 8192] = phi[lo:lo + 8192] @ to_u
        del phi
        r = U.shape[1]
        if k > r:
            raise ValueError(f"n_components={k} exceeds the Nyström rank {r}; raise n_landmarks")
        mean = U.mean(axis=0)
        P = (s2[:, None] * (U.T @ U - n * np.outer(mean, mean))) * s2[None, :]   # Σ²UᵀHUΣ², H not formed
        q = s2 * (U.T @ e)
        Q = np.outer(q, q) + float(self.mu) * np.eye(r)
        evals, a = linalg.eigh(P, Q, subset_by_index=[r - k, r - 1])
        evals, a = evals[::-1], a[:, ::-1]
        a = a * _signs(U @ a)
        self.eigenvalues_ = evals
        self.n_landmarks_ = m
        self.n_iter_ = 1  # direct solve
        self.embedding_ = U @ (s2[:, None] * a)
        # out of sample: K(x, X) W ≈ φ(x) Φᵀ U a = φ(x) V Σ a, with φ(x) = K(x, L) proj
        self._nystroem = (landmarks, proj @ (V * sigma) @ a)
        self.coef_ = None

    def fit_transform(self, X, domain=None, **fit_params):
        return self.fit(X, domain).embedding_

    def transform(self, X):
        """Project rows of ``X`` (seen or unseen) onto the transfer components."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self._nystroem is not None:
            landmarks, coef = self._nystroem
            return self._kernel(X, landmarks) @ coef
        return self._kernel(X, self.X_fit_) @ self.coef_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags


def _signs(W: np.ndarray) -> np.ndarray:
    """Per-column signs making each column's largest-magnitude entry positive."""
    s = np.sign(W[np.abs(W).argmax(axis=0), np.arange(W.shape[1])])
    return np.where(s == 0, 1.0, s)


def _top_eigh(apply_m, n: int, k: int, *, tol: float, max_iter: int, random_state=0):
    """Top-``k`` eigenpairs of a symmetric PSD operator by block subspace iteration.

    Block size ``k + p`` (oversampled), Rayleigh-Ritz each iteration, stops when
    every wanted Ritz pair has ``|M x - θ x| <= tol · θ``.  Only block
    products with ``M`` are needed (BLAS-3, two N x N x b products each).
    """
    rng = np.random.default_rng(random_state)
    b = min(n, k + max(16, k // 2))
    Q, _ = linalg.qr(rng.standard_normal((n, b)), mode="economic")
    theta = None
    for it in range(1, max_iter + 1):
        Z = apply_m(Q)
        T = Q.T @ Z
        theta, S = linalg.eigh((T + T.T) / 2)
        theta, S = theta[::-1], S[:, ::-1]
        X = Q @ S[:, :k]
        R = Z @ S[:, :k] - X * theta[:k]
        if np.all(np.linalg.norm(R, axis=0) <= tol * np.maximum(theta[:k], np.finfo(float).tiny)):
            return theta[:k], X, it
        Q, _ = linalg.qr(Z @ S, mode="economic")
    return theta[:k], X, max_iter
