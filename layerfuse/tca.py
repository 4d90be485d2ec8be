"""Transfer Component Analysis (Pan et al., IEEE TNN 2011) as a scikit-learn transformer.

TCA finds ``W`` maximising ``tr(Wᵀ K H K W)`` subject to ``Wᵀ (K L K + μ I) W = I``:
the kernel PCA of source and target together, penalised by the distance
between the two domains' means in feature space (MMD).  ``L = e eᵀ`` with
``e = [1/ns, …, -1/nt, …]`` is rank one and ``H = I - 11ᵀ/N`` is a centring, so
neither is formed: with ``v = K e`` the constraint matrix is ``μI + v vᵀ``,
whose inverse square root is ``μ^-½ (I + c u uᵀ)`` (``u = v/|v|``,
``c = (1 + |v|²/μ)^-½ - 1``).  The problem becomes the standard symmetric
eigenproblem of ``M = Bᵀ B`` with ``B = H K A^-½``, solved for the top
components only, and ``W = A^-½ Z``.  ``M`` costs one symmetric rank-N update;
above a few thousand samples its top eigenpairs come from block subspace
iteration with locking and deflation (``_top_eigh``), whose cost is matrix
products, instead of LAPACK's tridiagonal reduction, whose cost is memory traffic.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from layerfuse._linalg import gram, rbf_kernel, sq_dists
from layerfuse.solvers import KERNEL_BLOCK_ROWS
from layerfuse.svm import make_svm

__all__ = ["TCA", "JDA", "PSEUDO_LABELERS", "median_gamma", "nearest_source_labels", "rbf_kernel", "stack_domains",
           "domain_labels"]


def stack_domains(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source rows over target rows, and the ``sample_domain`` :meth:`TCA.fit` expects (:func:`domain_labels`)."""
    return np.vstack([xs, xt]), domain_labels(len(xs), len(xt))


def domain_labels(n_source: int, n_target: int) -> np.ndarray:
    """``sample_domain`` of source rows over target rows: 0 for the source, -1 for the (unlabelled) target."""
    return np.r_[np.zeros(n_source), -np.ones(n_target)]


def median_gamma(x: np.ndarray, *, factor: float = 1.0, max_samples: int = 2000, random_state=0) -> float:
    """``1 / (factor² · median |xi - xj|²)``: the median heuristic, ``factor`` times wider."""
    rng = np.random.default_rng(random_state)
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    x = _wide(np.asarray(x))
    d = sq_dists(x, x)[np.triu_indices(len(x), 1)]
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
    bandwidth_factor : float, default=3.0
        Width multiplier for the median heuristic (ignored for a float ``gamma``); 3 is the
        workflow's default (``tca.bandwidth_factor``, see docs/results.md "When TCA hurts").
    mu : float, default=1.0
        Trade-off: larger ``mu`` keeps more variance, smaller aligns means harder.
    solver : {"auto", "exact", "dense", "nystroem"}, default="auto"
        ``exact``: the structured problem, solved for the top components only:
        LAPACK's subset ``eigh`` (MRRR) up to ``dense_max_samples`` samples, block
        subspace iteration with locking to ``tol`` above (faster there: its cost is
        matrix products, while the dense solver's tridiagonal reduction is bound by
        memory bandwidth); ``dense``: always the subset ``eigh``;
        ``nystroem``: ``n_landmarks`` landmarks, O(N·m) memory;
        ``auto``: ``nystroem`` above ``auto_threshold`` samples, else ``exact``.
    n_landmarks : int, default=1000
    auto_threshold : int, default=3000
    dense_max_samples : int or "auto", default="auto"
        Largest N for the dense solve within ``exact``; ``"auto"``: ``15 n_components + 160``
        (4,000 samples for 256 components), about where the two cost the same on the CPUs measured.
    tol : float, default=1e-9
        Relative residual ``|M x - θ x| / θ`` at which the iterative solver locks a pair.
    max_iter : int, default=300
    random_state : int or None, default=0
        Seeds the median-heuristic subsample, the landmarks and the start block.

    Attributes
    ----------
    gamma_ : float
    eigenvalues_ : ndarray of shape (n_components,)
    coef_ : ndarray of shape (n_basis, n_components)
        ``transform(X) = K(X, X_fit_[basis_index_]) @ coef_``: ``W`` over every fitted row (exact
        solvers), or the Nyström map's coefficients over the landmarks.
    basis_index_ : ndarray of int
        Rows of ``X_fit_`` the kernel is evaluated against out of sample (all, or the landmarks).
    X_fit_ : ndarray
    """

    # skada's pipelines route sample_domain to the steps that request it
    __metadata_request__fit = {"sample_domain": True}

    def __init__(self, n_components=64, *, kernel="rbf", gamma="median", bandwidth_factor=3.0, mu=1.0,
                 solver="auto", n_landmarks=1000, auto_threshold=3000, dense_max_samples="auto", tol=1e-9,
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
        if not (self.dense_max_samples == "auto" or isinstance(self.dense_max_samples, numbers.Integral)):
            raise ValueError(f"dense_max_samples must be 'auto' or an integer, got {self.dense_max_samples!r}")
        if not (isinstance(self.bandwidth_factor, numbers.Real) and self.bandwidth_factor > 0):
            raise ValueError(f"bandwidth_factor must be positive, got {self.bandwidth_factor!r}")

    def _kernel(self, a, b):
        if self.kernel == "linear":
            return a @ b.T
        return rbf_kernel(a, b, self.gamma_)

    def fit(self, X, y=None, *, sample_domain=None):
        """Fit on source and target rows stacked in ``X``.

        ``sample_domain`` marks each row as skada does: ``>= 0`` source, ``< 0`` target.  ``y`` is
        ignored (TCA uses no labels; skada passes the source's with the target's masked).  Without
        ``sample_domain`` all rows count as one domain and TCA reduces to kernel PCA.
        """
        try:
            self._fit(X, sample_domain)
        finally:
            self._gram_cache = None                              # n x n: not kept past the fit
        return self

    def _fit(self, X, domain):
        """TCA's fit; returns the kernel matrix or Nyström basis it solved on (JDA refits on it)."""
        self._check_params()
        self._last_eigenvectors = None                          # no warm start from an earlier fit
        # float32 stays float32: each block of rows is widened exactly to float64 where it enters a kernel,
        # so a float32 input fits as its float64 copy would, without the copy (8 bytes per value)
        X = validate_data(self, X, dtype=(np.float64, np.float32), ensure_min_samples=2)
        n = X.shape[0]
        if np.ptp(X, axis=0).max() == 0:
            raise ValueError("all features are constant: TCA has nothing to align")
        if domain is None:
            source = np.ones(n, dtype=bool)
        else:
            domain = np.asarray(domain).ravel()
            if domain.shape[0] != n:
                raise ValueError(f"sample_domain has {domain.shape[0]} entries for {n} samples")
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
            basis = self._nystroem_basis(X)
        else:
            wide = _wide(X)
            basis = self._kernel(wide, wide)
        self._solve(basis, e[:, None], k)
        self.X_fit_ = X
        return basis

    def _solve(self, basis, E, k):
        """Fit on the kernel matrix (exact solvers) or the Nyström basis, for the MMD directions ``E``."""
        if self.solver_ == "nystroem":
            self._solve_nystroem(basis, E, k)
        else:
            self._solve_exact(basis, E, k, dense=(self.solver_ == "dense"))

    def _centred_gram(self, K):
        """``K H K / μ`` (as ``(K H)(K H)ᵀ``: half the flops of a product), computed once per kernel matrix:
        JDA's refits change only the low-rank constraint around it."""
        cached = getattr(self, "_gram_cache", None)
        if cached is not None and cached[0] is K and cached[1] == self.mu:
            return cached[2]
        C = K - K.mean(axis=1, keepdims=True)
        G = gram(C)
        del C
        G /= float(self.mu)
        self._gram_cache = (K, self.mu, G)
        return G

    def _solve_exact(self, K, E, k, dense=False):
        """Exact TCA through the low-rank/centring structure (see the module docstring), for the MMD
        matrix ``L = E Eᵀ`` (TCA: one column; JDA: one per class more).

        With ``V = K E = U S Rᵀ`` (thin SVD, r columns) the constraint matrix is ``μI + U S² Uᵀ``, whose
        inverse square root is ``μ^-½ (I + U diag(c) Uᵀ)``, ``c = (1 + s²/μ)^-½ - 1`` (Woodbury's identity
        for the square root; for one column Sherman–Morrison's).
        """
        n = K.shape[0]
        U, sv, _ = linalg.svd(K @ E, full_matrices=False)
        keep = sv > (sv.max() if sv.size else 0) * 1e-12
        U, sv = U[:, keep], sv[keep]
        mu = float(self.mu)
        c = 1.0 / np.sqrt(1.0 + sv ** 2 / mu) - 1.0

        def a_inv_sqrt(V):                                     # A^-½ V for a block V
            return (V + U @ (c[:, None] * (U.T @ V))) / np.sqrt(mu)

        G = self._centred_gram(K)                              # K H K / μ, kept for the refits over K
        P = U * c                                              # A^-½ = μ^-½ (I + P Uᵀ): M = (I + U Pᵀ) G (I + P Uᵀ)
        dense_max = 15 * k + 160 if self.dense_max_samples == "auto" else self.dense_max_samples
        if dense or n <= dense_max:
            GP = G @ P
            M = G + U @ GP.T + GP @ U.T + U @ ((P.T @ GP) @ U.T) if len(c) else G.copy()
            evals, Z = linalg.eigh(M, subset_by_index=[n - k, n - 1], driver="evr", overwrite_a=True)
            del M
            evals, Z = evals[::-1], Z[:, ::-1]
            self.n_iter_ = 1  # direct solve
        else:
            def apply_m(V):                                    # V M for a block of rows, M never formed
                V = V + (V @ U) @ P.T
                V = V @ G
                return V + (V @ P) @ U.T

            # a refit (JDA's next iteration) starts from the previous fit's eigenvectors
            start = getattr(self, "_last_eigenvectors", None)
            evals, Z, self.n_iter_ = _top_eigh(apply_m, n, k, tol=self.tol, max_iter=self.max_iter,
                                               random_state=self.random_state,
                                               start=start.T if start is not None and len(start) == n else None)
        self._last_eigenvectors = Z
        W = a_inv_sqrt(Z)
        W = W * _signs(W)
        self.eigenvalues_ = evals
        self.coef_ = W
        self.embedding_ = K @ W
        self.basis_index_ = np.arange(n)

    def _nystroem_basis(self, X):
        """TCA on the Nyström feature map of ``m`` landmarks: O(N·m) memory, O(N·m²) time.

        With ``K ≈ Φ Φᵀ`` and ``Φ = U Σ`` (thin SVD), restricting ``W = U a`` gives the
        r x r generalized problem ``Σ²UᵀHUΣ² a = λ (Σ²UᵀE EᵀUΣ² + μI) a``; the embedding is
        ``U Σ² a``.  With every sample a landmark this is exact TCA.  Returns what
        :meth:`_solve_nystroem` needs: ``(U, s², V, σ, K_mm^-½, landmark rows)``.
        """
        n = X.shape[0]
        m = min(int(self.n_landmarks), n)
        rng = np.random.default_rng(self.random_state)
        idx = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
        landmarks = _wide(X[idx])
        kmm = self._kernel(landmarks, landmarks)
        lam, vec = linalg.eigh(kmm)
        keep = lam > lam.max() * 1e-10
        lam, vec = lam[keep], vec[:, keep]
        proj = vec / np.sqrt(lam)                               # K_mm^-½ on its range
        phi = np.empty((n, proj.shape[1]))                      # N x r feature map, built in row blocks
        for lo in range(0, n, KERNEL_BLOCK_ROWS):
            phi[lo:lo + KERNEL_BLOCK_ROWS] = self._kernel(_wide(X[lo:lo + KERNEL_BLOCK_ROWS]), landmarks) @ proj
        # thin SVD of Φ through its r x r Gram matrix; U overwrites Φ block by block
        s2, V = linalg.eigh(gram(phi.T))
        keep = s2 > s2.max() * 1e-12
        s2, V = s2[keep], V[:, keep]
        sigma = np.sqrt(s2)
        to_u = V / sigma
        U = phi if to_u.shape[1] == phi.shape[1] else np.empty((n, to_u.shape[1]))
        for lo in range(0, n, KERNEL_BLOCK_ROWS):
            U[lo:lo + KERNEL_BLOCK_ROWS] = phi[lo:lo + KERNEL_BLOCK_ROWS] @ to_u
        del phi
        self.n_landmarks_ = m
        return U, s2, V, sigma, proj, idx

    def _solve_nystroem(self, basis, E, k):
        U, s2, V, sigma, proj, idx = basis
        n, r = U.shape
        if k > r:
            raise ValueError(f"n_components={k} exceeds the Nyström rank {r}; raise n_landmarks")
        mean = U.mean(axis=0)
        P = (s2[:, None] * (gram(U.T) - n * np.outer(mean, mean))) * s2[None, :]   # Σ²UᵀHUΣ², H not formed
        q = s2[:, None] * (U.T @ E)
        Q = q @ q.T + float(self.mu) * np.eye(r)
        evals, a = linalg.eigh(P, Q, subset_by_index=[r - k, r - 1])
        evals, a = evals[::-1], a[:, ::-1]
        a = a * _signs(U @ a)
        self.eigenvalues_ = evals
        self.n_iter_ = 1  # direct solve
        self.embedding_ = U @ (s2[:, None] * a)
        # out of sample: K(x, X) W ≈ φ(x) Φᵀ U a = φ(x) V Σ a, with φ(x) = K(x, L) proj
        self.basis_index_ = idx
        self.coef_ = proj @ (V * sigma) @ a

    def fit_transform(self, X, y=None, *, sample_domain=None):
        return self.fit(X, y, sample_domain=sample_domain).embedding_

    def transform(self, X):
        """Project rows of ``X`` (seen or unseen) onto the transfer components."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        basis = self.X_fit_ if len(self.basis_index_) == len(self.X_fit_) else self.X_fit_[self.basis_index_]
        return self._kernel(X, _wide(basis)) @ self.coef_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags


def _wide(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 (float32 values widen exactly; float64 is not copied)."""
    return x.astype(np.float64, copy=False)


def _signs(W: np.ndarray) -> np.ndarray:
    """Per-column signs making each column's largest-magnitude entry positive."""
    s = np.sign(W[np.abs(W).argmax(axis=0), np.arange(W.shape[1])])
    return np.where(s == 0, 1.0, s)


_GUARD_FACTOR = 1.0   # guard vectors per wanted one in the iterative solver (fewest seconds: docs/benchmarks.md)
_MAX_DEGREE = 6       # highest Chebyshev degree per Rayleigh-Ritz cycle
_MAX_GROWTH = 1e5     # largest spread a filter may put between the block's Ritz values


def _guards(k: int) -> int:
    """Guard vectors the iterative solver carries beyond the ``k`` wanted ones."""
    return int(np.ceil(_GUARD_FACTOR * k)) + 16


def _ritz(T: np.ndarray, G: np.ndarray):
    """Rayleigh-Ritz on a basis with Gram matrix ``G``: ``T s = θ G s``, descending, ``S`` as rows.

    ``G`` is usually near the identity: whitening by its Cholesky factor and a
    standard divide-and-conquer ``eigh`` is exact and 3x faster than ``sygvd``.
    Where a filtered block has lost rank (Cholesky fails), whitening by ``G``'s
    eigenvectors drops the directions it no longer spans: fewer Ritz pairs than rows.
    """
    T, G = (T + T.T) / 2, (G + G.T) / 2
    try:
        L = linalg.cholesky(G, lower=True, check_finite=False)
        Y = linalg.solve_triangular(L, T, lower=True, check_finite=False)
        Y = linalg.solve_triangular(L, Y.T, lower=True, check_finite=False)
        theta, V = linalg.eigh((Y + Y.T) / 2, driver="evd", check_finite=False)
        S = linalg.solve_triangular(L, V[:, ::-1], lower=True, trans="T", check_finite=False)
        return theta[::-1], np.ascontiguousarray(S.T)
    except linalg.LinAlgError:
        g, U = linalg.eigh(G, driver="evd", check_finite=False)
        spanned = g > g[-1] * 1e-10
        W = U[:, spanned] / np.sqrt(g[spanned])
        theta, V = linalg.eigh(W.T @ T @ W, driver="evd", check_finite=False)
        return theta[::-1], np.ascontiguousarray((W @ V[:, ::-1]).T)


def _top_eigh(apply_m, n: int, k: int, *, tol: float, max_iter: int, random_state=0, start=None):
    """Top-``k`` eigenpairs of a symmetric PSD operator: Chebyshev-filtered block subspace
    iteration with locking.

    ``apply_m(V)`` returns ``V M`` for a block of row vectors ``V`` (``b x n``; rows
    keep every per-vector operation contiguous).  The active block holds the
    still-wanted vectors plus ``_GUARD_FACTOR · k`` guards.  Each cycle:
    Rayleigh-Ritz on the block (with its Gram matrix, so the block needs no QR);
    lock each wanted pair whose residual ``|x M - θ x|`` is below ``tol · θ`` (it is
    deflated from every later product and never multiplied again); then filter
    the rest by the Chebyshev polynomial that is bounded by 1 on ``[0, θ_b]`` (θ_b
    the block's smallest Ritz value): per product with ``M`` it shrinks the error
    of pair ``i`` by about ``1/(x + sqrt(x² - 1))``, ``x = 2θ_i/θ_b - 1``, against
    ``θ_b/θ_i`` for plain subspace iteration.  The degree (1 to
    ``_MAX_DEGREE``) is the highest whose gain over the block's Ritz values stays
    within ``_MAX_GROWTH``, so no wanted direction drowns in rounding error.
    Stops when ``k`` pairs are locked.  ``start``: rows to begin the block with (a previous, nearby
    problem's eigenvectors), random rows fill the rest.  Returns eigenvalues (descending),
    eigenvectors as columns, cycles.
    """
    rng = np.random.default_rng(random_state)
    guards = min(n - k, _guards(k))
    Q = rng.standard_normal((k + guards, n)) / np.sqrt(n)    # nearly orthonormal; Rayleigh-Ritz needs no more
    if start is not None:
        Q[:len(start)] = start[:len(Q)]
    tiny = np.finfo(float).tiny
    locked_x, locked_theta = np.empty((0, n)), np.empty(0)

    def deflate(V):                                            # V (I - XLᵀ XL): out of the locked span
        return V - (V @ locked_x.T) @ locked_x if len(locked_theta) else V

    def times_m(V):
        return deflate(apply_m(V))

    Z = times_m(Q)
    for it in range(1, max_iter + 1):
        theta, S = _ritz(Q @ Z.T, gram(Q))
        want = min(k - len(locked_theta), len(theta))
        X = S @ Q                                              # Ritz vectors
        MX = S @ Z                                             # and their products with M
        res = np.linalg.norm(MX[:want] - theta[:want, None] * X[:want], axis=1)
        done = res <= tol * np.maximum(theta[:want], tiny)
        if done.any():
            locked_x = np.vstack([locked_x, X[:want][done]])
            locked_theta = np.r_[locked_theta, theta[:want][done]]
        if len(locked_theta) == k or it == max_iter:
            break
        keep = np.r_[~done, np.ones(len(theta) - want, dtype=bool)]
        X, MX, theta = X[keep], MX[keep], theta[keep]
        half = max(theta[-1], 0.0) / 2                         # damp [0, θ_b]: centre and half-width θ_b/2
        degree = (_chebyshev_degree(theta[0] / half - 1, theta[want - done.sum() - 1] / half - 1)
                  if half > theta[0] * 1e-12 else 1)
        Y = MX - half * X                                      # degree 1, up to a scale (rows are normalised)
        if degree > 1:
            Y_prev, Y = X, Y / half
            for _ in range(degree - 1):
                Y_prev, Y = Y, 2 * (times_m(Y) - half * Y) / half - Y_prev
        short = k - len(locked_theta) + guards - len(Y)      # rows lost with rank: fresh random ones
        if short > 0:
            Y = np.vstack([Y, deflate(rng.standard_normal((short, n)))])
        Q = Y / np.maximum(np.linalg.norm(Y, axis=1), tiny)[:, None]
        Z = times_m(Q)
    if len(locked_theta) < k:                                  # out of iterations: the best Ritz pairs so far
        warnings.warn(f"TCA's iterative solver stopped after {it} cycles with {len(locked_theta)} of {k} "
                      f"components converged to tol={tol:g}; raise max_iter or use solver='dense'",
                      ConvergenceWarning, stacklevel=3)
        rest = ~done
        locked_x = np.vstack([locked_x, X[:want][rest]])
        locked_theta = np.r_[locked_theta, theta[:want][rest]]
    order = np.argsort(-locked_theta, kind="stable")
    return locked_theta[order], np.ascontiguousarray(locked_x[order].T), it


def _chebyshev_degree(x_top: float, x_low: float) -> int:
    """Highest degree ``m <= _MAX_DEGREE`` with ``T_m(x_top) / T_m(x_low) <= _MAX_GROWTH`` (at least 1)."""
    x_top, x_low = max(x_top, 1.0), max(x_low, 1.0)
    degree = 1
    for m in range(2, _MAX_DEGREE + 1):
        growth = m * (np.arccosh(x_top) - np.arccosh(x_low))    # log T_m(top)/T_m(low), for large arguments
        if growth > np.log(_MAX_GROWTH):
            break
        degree = m
    return degree


# how JDA labels the target between its fits
PSEUDO_LABELERS = ("svm", "1nn")


class JDA(TCA):
    """Joint Distribution Adaptation (Long et al., ICCV 2013) and Balanced Distribution Adaptation
    (Wang et al., ICDM 2017) on TCA's structured solvers.

    TCA's marginal MMD term plus one class-conditional MMD term per class, built from target
    pseudo-labels predicted from the source's embedding, refitted ``n_iter`` times (the first fit is
    TCA): by a linear SVM (``pseudo_labeler="svm"``, the workflow's), or by the nearest source row of
    the embedding with each row scaled to unit length (``"1nn"``, the paper's protocol).  The MMD matrix is ``E Eᵀ`` with one column per term, so the constraint's
    inverse square root is a rank-``C+1`` update (Woodbury) instead of TCA's rank one, and the exact,
    iterative and Nyström solvers of :class:`TCA` apply unchanged.  ``balance`` ``β`` weighs the terms
    as BDA does, ``(1 - β)`` marginal and ``β`` conditional; ``None`` (JDA) weighs both 1.

    Parameters are :class:`TCA`'s, plus ``n_iter`` (default 10; fewer when the pseudo-labels stop
    changing), ``balance``, ``pseudo_labeler`` and ``C`` (the pseudo-labelling SVM's).  ``fit(X, y, *, sample_domain=...)``
    needs the source's labels in ``y`` (the target's are ignored: skada masks them as -1).

    Attributes
    ----------
    pseudo_labels_ : ndarray
        The target's pseudo-labels after the last fit.
    history_ : list of dict
        Per fit: ``eigenvalues`` and the ``pseudo_labels`` its MMD terms were built from (None: TCA).
    """

    __metadata_request__fit = {"sample_domain": True}

    def __init__(self, n_components=64, *, kernel="rbf", gamma="median", bandwidth_factor=3.0, mu=1.0,
                 n_iter=10, balance=None, C=1.0, pseudo_labeler="svm", solver="auto", n_landmarks=1000,
                 auto_threshold=3000, dense_max_samples="auto", tol=1e-9, max_iter=300, random_state=0):
        super().__init__(n_components, kernel=kernel, gamma=gamma, bandwidth_factor=bandwidth_factor, mu=mu,
                         solver=solver, n_landmarks=n_landmarks, auto_threshold=auto_threshold,
                         dense_max_samples=dense_max_samples, tol=tol, max_iter=max_iter,
                         random_state=random_state)
        self.n_iter = n_iter
        self.balance = balance
        self.C = C
        self.pseudo_labeler = pseudo_labeler

    def fit(self, X, y=None, *, sample_domain=None):
        # scikit-learn's own messages for empty, sparse, complex or non-finite input come first
        validate_data(self, X, dtype=(np.float64, np.float32), ensure_min_samples=2)
        if sample_domain is None or y is None:
            raise ValueError("JDA needs sample_domain (>= 0 source, < 0 target) and the source's labels y")
        if self.balance is not None and not 0 <= self.balance <= 1:
            raise ValueError(f"balance must be None or in [0, 1], got {self.balance!r}")
        if not (isinstance(self.n_iter, numbers.Integral) and self.n_iter >= 1):
            raise ValueError(f"n_iter must be a positive integer, got {self.n_iter!r}")
        if self.pseudo_labeler not in PSEUDO_LABELERS:
            raise ValueError(f"pseudo_labeler must be one of {', '.join(PSEUDO_LABELERS)}, got {self.pseudo_labeler!r}")
        try:
            self._fit_jda(X, y, sample_domain)
        finally:
            self._gram_cache = None
        return self

    def _fit_jda(self, X, y, sample_domain):
        basis = self._fit(X, sample_domain)                  # TCA: gamma_, solver_, the first embedding
        source = np.asarray(sample_domain).ravel() >= 0
        ys = np.asarray(y).ravel()[source].astype(int)
        if len(np.unique(ys)) < 2:
            raise ValueError("JDA needs at least 2 source classes")
        k = int(self.n_components)
        e0 = np.where(source, 1.0 / source.sum(), -1.0 / (~source).sum())
        w0, wc = (1.0, 1.0) if self.balance is None else (1.0 - self.balance, float(self.balance))
        self.history_ = [{"pseudo_labels": None, "eigenvalues": self.eigenvalues_}]
        pseudo = None
        for _ in range(self.n_iter):
            new = self._pseudo_labels(self.embedding_[source], ys, self.embedding_[~source])
            if pseudo is not None and np.array_equal(new, pseudo):
                break
            pseudo = new
            E = np.column_stack([np.sqrt(w0) * e0] + [np.sqrt(wc) * col for col in _class_columns(source, ys, pseudo)])
            self._solve(basis, E, k)
            self.history_.append({"pseudo_labels": pseudo, "eigenvalues": self.eigenvalues_})
        self.pseudo_labels_ = pseudo


    def _pseudo_labels(self, zs: np.ndarray, ys: np.ndarray, zt: np.ndarray) -> np.ndarray:
        if self.pseudo_labeler == "svm":
            return make_svm(C=self.C, random_state=self.random_state).fit(zs, ys).predict(zt)
        return nearest_source_labels(zs, ys, zt)


def nearest_source_labels(zs: np.ndarray, ys: np.ndarray, zt: np.ndarray, block: int = 2048) -> np.ndarray:
    """The label of each target row's nearest source row (Euclidean), rows first scaled to unit length:
    JDA's 1-NN pseudo-labels, and its papers' evaluation."""
    def unit(z):
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), np.finfo(float).tiny)

    zs, zt = unit(np.asarray(zs, np.float64)), unit(np.asarray(zt, np.float64))
    out = np.empty(len(zt), dtype=np.asarray(ys).dtype)
    for lo in range(0, len(zt), block):                 # unit rows: nearest = largest inner product
        out[lo:lo + block] = np.asarray(ys)[(zt[lo:lo + block] @ zs.T).argmax(axis=1)]
    return out


def _class_columns(source: np.ndarray, ys: np.ndarray, pseudo: np.ndarray) -> list:
    """One MMD direction per class present in both domains: ``1/ns_c`` on the source's class-``c`` rows,
    ``-1/nt_c`` on the target rows pseudo-labelled ``c``."""
    label = np.full(len(source), -1)
    label[source], label[~source] = ys, pseudo
    cols = []
    for c in np.unique(ys):
        s_rows, t_rows = source & (label == c), ~source & (label == c)
        if s_rows.any() and t_rows.any():
            cols.append(np.where(s_rows, 1.0 / s_rows.sum(), 0.0) - np.where(t_rows, 1.0 / t_rows.sum(), 0.0))
    return cols
