"""JDA/BDA on TCA's structured solvers: every iteration equals a dense generalized eigensolve."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg
from sklearn.utils.estimator_checks import parametrize_with_checks

from layerfuse.tca import JDA, TCA, _class_columns


def _conditional_shift(rng, ns=240, nt=160, d=15, classes=3):
    """Overlapping classes; the target scaled and moved, with its own class proportions."""
    means = rng.normal(0, 1.2, (classes, d))
    ys = rng.randint(0, classes, ns)
    yt = rng.choice(classes, nt, p=[0.5, 0.3, 0.2])
    xs = means[ys] + rng.normal(size=(ns, d))
    xt = (means[yt] + rng.normal(size=(nt, d))) * 0.8 + 0.7
    X = np.vstack([xs, xt])
    return X, np.r_[ys, -np.ones(nt, int)], np.r_[np.zeros(ns), -np.ones(nt)], ys, yt


def _dense_eigenvalues(jda, sample_domain, ys, pseudo, k):
    """Top-k of ``K H K w = λ (K M K + μ I) w`` with ``M`` formed densely (JDA's, or BDA's weights)."""
    K = jda._kernel(jda.X_fit_, jda.X_fit_)
    n = len(K)
    H = np.eye(n) - 1.0 / n
    src = sample_domain >= 0
    e0 = np.where(src, 1.0 / src.sum(), -1.0 / (~src).sum())
    # the first fit is TCA (weight 1); later ones weigh the terms as BDA does
    w0, wc = (1.0, 1.0) if jda.balance is None or pseudo is None else (1 - jda.balance, jda.balance)
    M = w0 * np.outer(e0, e0)
    if pseudo is not None:
        for col in _class_columns(src, ys, pseudo):
            M += wc * np.outer(col, col)
    return linalg.eigh(K @ H @ K, K @ M @ K + jda.mu * np.eye(n), eigvals_only=True)[::-1][:k]


@pytest.mark.parametrize("solver,balance", [("dense", None), ("exact", None), ("exact", 0.3), ("dense", 1.0)])
def test_every_iteration_equals_the_dense_generalized_eigensolve(rng, solver, balance):
    X, y, sd, ys, _ = _conditional_shift(rng)
    # exact with a small dense_max_samples: the iterative (subspace) solver
    jda = JDA(12, solver=solver, balance=balance, n_iter=4, dense_max_samples=50).fit(X, y, sample_domain=sd)
    assert len(jda.history_) >= 2                       # TCA, then at least one JDA fit
    for step in jda.history_:
        dense = _dense_eigenvalues(jda, sd, ys, step["pseudo_labels"], 12)
        np.testing.assert_allclose(step["eigenvalues"], dense, rtol=1e-7, atol=1e-9 * dense[0])


def test_first_fit_is_tca_and_nystroem_with_every_landmark_is_exact(rng):
    X, y, sd, ys, _ = _conditional_shift(rng, ns=120, nt=80)
    jda = JDA(8, solver="exact", n_iter=3).fit(X, y, sample_domain=sd)
    tca = TCA(8, solver="exact").fit(X, sample_domain=sd)
    np.testing.assert_allclose(jda.history_[0]["eigenvalues"], tca.eigenvalues_, rtol=1e-10)
    ny = JDA(8, solver="nystroem", n_landmarks=len(X), n_iter=3).fit(X, y, sample_domain=sd)
    assert len(ny.history_) == len(jda.history_)
    for a, b in zip(ny.history_, jda.history_):
        np.testing.assert_array_equal(a["pseudo_labels"] if a["pseudo_labels"] is not None else [],
                                      b["pseudo_labels"] if b["pseudo_labels"] is not None else [])
        np.testing.assert_allclose(a["eigenvalues"], b["eigenvalues"], rtol=1e-6)


def test_jda_in_a_skada_pipeline(rng):
    """``fit(X, y, *, sample_domain=...)`` as skada routes it, the target's labels masked: the pipeline
    classifies the shifted target (skada's own adapter tests ask > 0.75)."""
    import sklearn
    from sklearn.svm import LinearSVC
    from skada import make_da_pipeline

    X, y, sd, ys, yt = _conditional_shift(rng)
    sd = np.where(sd >= 0, 1, -2)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_da_pipeline(JDA(12, n_iter=3), LinearSVC(dual="auto"))
        pipe.fit(X, y, sample_domain=sd)
        pred = pipe.predict(X[sd < 0], sample_domain=sd[sd < 0])
    assert pred.shape == yt.shape and (pred == yt).mean() > 0.9


def test_jda_refuses_unlabelled_input(rng):
    X, y, sd, _, _ = _conditional_shift(rng, ns=40, nt=20)
    with pytest.raises(ValueError, match="source's labels"):
        JDA(4).fit(X, sample_domain=sd)
    with pytest.raises(ValueError, match="balance"):
        JDA(4, balance=2).fit(X, y, sample_domain=sd)


class SplitDomainJDA(JDA):
    """JDA as scikit-learn's estimator checks call it (no ``sample_domain``, often no ``y``): the first half of
    the rows is the source, the rest the target, and without ``y`` the source is labelled alternately."""

    def fit(self, X, y=None, *, sample_domain=None):
        n = X.shape[0] if hasattr(X, "shape") else np.asarray(X).shape[0]
        if sample_domain is None:
            sample_domain = np.where(np.arange(n) < (n + 1) // 2, 1, -1)
        if y is None:
            y = np.arange(n) % 2
        return super().fit(X, y, sample_domain=sample_domain)


@parametrize_with_checks([SplitDomainJDA(n_components=2, n_iter=2)], expected_failed_checks=lambda est: {
    # the check fits on y of one class only (np.ones): JDA's class-conditional term needs two source classes,
    # and refuses with that message before the NaN in the second fit can be seen
    "check_estimators_nan_inf": "one-class y: JDA needs at least 2 source classes"})
def test_sklearn_estimator_checks(estimator, check):
    """Every applicable scikit-learn estimator check on JDA, behind a wrapper that supplies the domains."""
    check(estimator)


def test_nearest_source_labels_is_1nn_on_unit_rows(rng):
    """The 1-NN pseudo-labels: each target row takes the label of the nearest source row once both are
    scaled to unit length (Euclidean distances computed in full here)."""
    from layerfuse.tca import nearest_source_labels

    zs, zt, ys = rng.randn(40, 5), rng.randn(25, 5), rng.randint(0, 4, 40)
    us, ut = zs / np.linalg.norm(zs, axis=1, keepdims=True), zt / np.linalg.norm(zt, axis=1, keepdims=True)
    d = ((ut[:, None, :] - us[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(nearest_source_labels(zs, ys, zt, block=7), ys[d.argmin(1)])


def test_pseudo_labeler_is_checked_and_each_refit_uses_it(rng):
    X, y, sd, ys, _ = _conditional_shift(rng, ns=60, nt=40)
    with pytest.raises(ValueError, match="pseudo_labeler must be one of svm, 1nn"):
        JDA(4, pseudo_labeler="knn").fit(X, y, sample_domain=sd)
    from layerfuse.tca import nearest_source_labels

    jda = JDA(6, n_iter=2, pseudo_labeler="1nn").fit(X, y, sample_domain=sd)
    source = sd >= 0
    first = TCA(6).fit_transform(X, sample_domain=sd)
    np.testing.assert_array_equal(jda.history_[1]["pseudo_labels"],
                                  nearest_source_labels(first[source], ys, first[~source]))
