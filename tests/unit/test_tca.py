"""TCA against a direct dense generalized eigensolve, and as a scikit-learn transformer."""
import numpy as np
import pytest
from scipy import linalg
from sklearn.preprocessing import StandardScaler

from layerfuse.tca import TCA, rbf_kernel


def _shifted(rng, n=40, d=6):
    xs = rng.randn(n, d)
    xt = rng.randn(n, d) * 1.3 + 1.0
    return np.vstack([xs, xt]), np.r_[np.zeros(n), -np.ones(n)]


def _dense_reference(X, domain, gamma, mu, k):
    n = len(X)
    K = rbf_kernel(X, X, gamma)
    src = domain >= 0
    e = np.where(src, 1 / src.sum(), -1 / (~src).sum())
    H = np.eye(n) - 1.0 / n
    vals, vecs = linalg.eigh(K @ H @ K, K @ np.outer(e, e) @ K + mu * np.eye(n))
    return vals[::-1][:k], vecs[:, ::-1][:, :k]


@pytest.mark.parametrize("mu", [0.1, 1.0, 10.0])
def test_exact_matches_dense_reference(rng, mu):
    """Eigenvalues and subspace equal scipy's generalized symmetric eigh on the dense matrices."""
    X, dom = _shifted(rng)
    tca = TCA(8, gamma=0.05, mu=mu).fit(X, sample_domain=dom)
    vals, vecs = _dense_reference(X, dom, 0.05, mu, 8)
    np.testing.assert_allclose(tca.eigenvalues_, vals, rtol=1e-8)
    assert linalg.subspace_angles(tca.coef_, vecs).max() < 1e-6


def test_components_are_nested(rng):
    """The leading k components of a larger fit equal a fit with k (one fit serves all dims)."""
    X, dom = _shifted(rng)
    big = TCA(20, random_state=0).fit_transform(X, sample_domain=dom)
    small = TCA(5, random_state=0).fit_transform(X, sample_domain=dom)
    np.testing.assert_allclose(big[:, :5], small, atol=1e-8)


def test_transform_out_of_sample_and_deterministic(rng):
    X, dom = _shifted(rng)
    a = TCA(4).fit(X, sample_domain=dom)
    b = TCA(4).fit(X, sample_domain=dom)
    np.testing.assert_array_equal(a.transform(X[:5]), b.transform(X[:5]))
    np.testing.assert_allclose(a.transform(X), a.embedding_, atol=1e-10)


def test_tca_reduces_mmd(rng):
    """The domains' mean embeddings are closer after TCA than kernel PCA (no MMD penalty, huge mu)."""
    X, dom = _shifted(rng)
    src = dom >= 0
    gap = lambda Z: np.linalg.norm(Z[src].mean(0) - Z[~src].mean(0)) / np.linalg.norm(Z.std(0))  # noqa: E731
    assert gap(TCA(4, mu=0.01).fit_transform(X, sample_domain=dom)) < gap(TCA(4, mu=1e6).fit_transform(X, sample_domain=dom))


def test_target_labels_never_used(rng):
    """fit takes domains, not labels: shuffling target rows' order only permutes their output."""
    X, dom = _shifted(rng)
    perm = np.r_[np.arange(40), 40 + rng.permutation(40)]
    a = TCA(4, gamma=0.1).fit_transform(X, sample_domain=dom)
    b = TCA(4, gamma=0.1).fit_transform(X[perm], sample_domain=dom)
    np.testing.assert_allclose(a[perm], b, atol=1e-8)


def test_in_skada_pipeline(rng):
    """skada's convention: ``fit(X, y, sample_domain=...)`` with target labels masked as -1; TCA receives
    the domains through skada's pipeline (metadata routing) and a classifier is trained after it."""
    import sklearn
    from skada import make_da_pipeline
    from sklearn.svm import LinearSVC

    X, dom = _shifted(rng)
    y = np.where(dom >= 0, (X[:, 0] > 0).astype(int), -1)
    sd = np.where(dom >= 0, 1, -2)
    pipe = make_da_pipeline(StandardScaler(), TCA(3, random_state=0), LinearSVC())
    with sklearn.config_context(enable_metadata_routing=True):
        pipe.fit(X, y, sample_domain=sd)
        tca = pipe.steps[1][1].base_estimator_
        direct = TCA(3, random_state=0).fit(StandardScaler().fit_transform(X), sample_domain=sd)
        np.testing.assert_allclose(tca.eigenvalues_, direct.eigenvalues_, rtol=1e-10)
        assert pipe.predict(X[dom < 0], sample_domain=sd[dom < 0]).shape == ((dom < 0).sum(),)


def test_iterative_solver_warns_when_unconverged(rng):
    from sklearn.exceptions import ConvergenceWarning

    X, dom = _shifted(rng, n=150, d=5)
    with pytest.warns(ConvergenceWarning, match="components converged"):
        TCA(10, gamma=0.2, solver="exact", dense_max_samples=0, max_iter=1, tol=1e-14).fit(X, sample_domain=dom)


@pytest.mark.parametrize("kwargs,X_fn,match", [
    ({"n_components": 500}, None, "exceeds the number of samples"),
    ({"mu": -1}, None, "mu must be"),
    ({"gamma": "wide"}, None, "gamma must be"),
    ({}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X), "NaN"),
])
def test_bad_input(rng, kwargs, X_fn, match):
    X, dom = _shifted(rng)
    if X_fn:
        X = X_fn(X)
    with pytest.raises(ValueError, match=match):
        TCA(**{"n_components": 3, **kwargs}).fit(X, sample_domain=dom)


def test_one_domain_empty(rng):
    X, _ = _shifted(rng)
    with pytest.raises(ValueError, match="source and target"):
        TCA(3).fit(X, sample_domain=np.zeros(len(X)))


def test_iterative_exact_matches_dense(rng):
    """The block subspace iteration reaches the dense solution (forced with dense_max_samples=0)."""
    X, dom = _shifted(rng, n=150, d=5)
    dense = TCA(6, gamma=0.2, solver="dense").fit(X, sample_domain=dom)
    it = TCA(6, gamma=0.2, solver="exact", dense_max_samples=0, tol=1e-11).fit(X, sample_domain=dom)
    assert it.n_iter_ > 1
    np.testing.assert_allclose(it.eigenvalues_, dense.eigenvalues_, rtol=1e-7)
    assert linalg.subspace_angles(it.coef_, dense.coef_).max() < 1e-6


def test_iterative_few_guards_and_iteration_cap(rng):
    """Near n_components = N the guard band shrinks to what is left; a capped run still returns k sorted pairs."""
    X, dom = _shifted(rng, n=40, d=5)  # 80 samples: 10 left for guards
    dense = TCA(70, gamma=0.2, solver="dense").fit(X, sample_domain=dom)
    it = TCA(70, gamma=0.2, solver="exact", dense_max_samples=0, tol=1e-10).fit(X, sample_domain=dom)
    np.testing.assert_allclose(it.eigenvalues_, dense.eigenvalues_, rtol=1e-6)
    capped = TCA(70, gamma=0.2, solver="exact", dense_max_samples=0, max_iter=1).fit(X, sample_domain=dom)
    assert capped.n_iter_ == 1 and capped.coef_.shape == (len(X), 70)
    assert np.all(np.diff(capped.eigenvalues_) <= 0)


def test_nystroem_converges_to_exact(rng):
    """Nyström's eigenvalues approach exact TCA as landmarks grow, and equal it with all samples."""
    X, dom = _shifted(rng, n=100, d=5)
    exact = TCA(5, gamma=0.1, solver="exact").fit(X, sample_domain=dom)
    errors = []
    for m in (20, 60, 200):
        nys = TCA(5, gamma=0.1, solver="nystroem", n_landmarks=m).fit(X, sample_domain=dom)
        errors.append(np.abs(nys.eigenvalues_ - exact.eigenvalues_).max() / exact.eigenvalues_[0])
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8
    full = TCA(5, gamma=0.1, solver="nystroem", n_landmarks=200).fit(X, sample_domain=dom)
    np.testing.assert_allclose(np.abs(full.embedding_), np.abs(exact.embedding_), atol=1e-6)
    np.testing.assert_allclose(full.transform(X[:7]), full.embedding_[:7], atol=1e-6)


@pytest.mark.parametrize("solver", ["nystroem", "exact"])
def test_float32_input_fits_as_its_float64_copy_without_making_it(rng, solver):
    """A float32 stack (the fused pairs' dtype) is used as given, each block widened where it enters a
    kernel: the same embedding and out-of-sample map, bit for bit, as the float64 copy it no longer makes."""
    X, dom = _shifted(rng, n=300, d=12)
    X32 = X.astype(np.float32)
    narrow = TCA(6, solver=solver, n_landmarks=100).fit(X32, sample_domain=dom)
    wide = TCA(6, solver=solver, n_landmarks=100).fit(X32.astype(np.float64), sample_domain=dom)
    assert narrow.X_fit_ is X32
    np.testing.assert_array_equal(narrow.embedding_, wide.embedding_)
    np.testing.assert_array_equal(narrow.transform(X32[:9]), wide.transform(X32[:9]))


def test_nystroem_deterministic_with_random_state(rng):
    X, dom = _shifted(rng, n=100, d=5)
    a = TCA(4, solver="nystroem", n_landmarks=30, random_state=1).fit_transform(X, sample_domain=dom)
    b = TCA(4, solver="nystroem", n_landmarks=30, random_state=1).fit_transform(X, sample_domain=dom)
    c = TCA(4, solver="nystroem", n_landmarks=30, random_state=2).fit_transform(X, sample_domain=dom)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_auto_picks_solver(rng):
    X, dom = _shifted(rng, n=60)
    assert TCA(3, auto_threshold=200).fit(X, sample_domain=dom).solver_ == "exact"
    assert TCA(3, auto_threshold=100, n_landmarks=40).fit(X, sample_domain=dom).solver_ == "nystroem"


def test_constant_features_are_not_an_error(rng):
    """Constant columns carry no distance; TCA still fits (the median heuristic ignores them)."""
    X, dom = _shifted(rng)
    X[:, 2] = 7.0
    assert np.isfinite(TCA(3).fit_transform(X, sample_domain=dom)).all()
    with pytest.raises(ValueError, match="all features are constant"):
        TCA(3).fit(np.ones_like(X), dom)


from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


@parametrize_with_checks([TCA(n_components=2), TCA(n_components=2, solver="nystroem", n_landmarks=10)])
def test_sklearn_estimator_checks(estimator, check):
    """Every applicable scikit-learn estimator check (clone, pickling, dtypes, NaN, n_features_in_ …)."""
    check(estimator)


def test_blocked_gram_matches_product(rng):
    """The blocked a @ a.T (kept clear of OpenBLAS syrk's large-size segfault) is the same matrix."""
    from layerfuse._linalg import gram

    a = rng.randn(23, 5)
    for block in (4, 7, 23, 100):
        np.testing.assert_allclose(gram(a, block=block), a @ a.T, rtol=1e-12, atol=1e-12)
