"""Class-proportion shift: the target's proportions estimated without its labels, and prior centring."""
from __future__ import annotations

import numpy as np
import pytest

from layerfuse.evaluate import center_domains, classify, evaluate_svm
from layerfuse.label_shift import em_priors, estimate_target_priors

SVM = {"C": 1.0, "class_weight": "balanced", "max_iter": 20000}


def _label_shifted(rng, source_priors, target_priors, n=1200, d=20, offset=3.0):
    """Gaussian classes (overlapping); the target has other class proportions and a constant domain offset."""
    means = rng.normal(0, 0.8, (len(source_priors), d))

    def draw(priors, m):
        y = rng.choice(len(priors), size=m, p=priors)
        return means[y] + rng.normal(0, 1, (m, d)), y

    xs, ys = draw(source_priors, n)
    xt, yt = draw(target_priors, n // 2)
    return xs, ys, xt + offset, yt


def test_em_recovers_proportions_from_exact_posteriors(rng):
    """Two 1-d Gaussians: posteriors under the source's 50/50 on a 20/80 target give back 20/80."""
    y = rng.choice(2, size=20000, p=[0.2, 0.8])
    x = rng.normal(0, 1, len(y)) + 2.0 * y
    lik = np.stack([np.exp(-x ** 2 / 2), np.exp(-(x - 2) ** 2 / 2)], axis=1)
    posteriors = lik / lik.sum(axis=1, keepdims=True)            # under source priors 0.5/0.5
    np.testing.assert_allclose(em_priors(posteriors, [0.5, 0.5]), [0.2, 0.8], atol=0.02)
    np.testing.assert_allclose(em_priors(posteriors[y == 0], [0.5, 0.5]).sum(), 1.0)


@pytest.mark.parametrize("target_priors", [[0.6, 0.4], [0.9, 0.1], [0.3, 0.7]])
def test_estimate_moves_towards_the_truth_under_a_domain_offset(rng, target_priors):
    """One round (the default) moves the estimate from the source's proportions towards the truth; more
    rounds reach it on these separable classes."""
    xs, ys, xt, yt = _label_shifted(rng, [0.9, 0.1], target_priors)
    truth = np.bincount(yt, minlength=2) / len(yt)
    gap = np.abs(np.array([0.9, 0.1]) - truth).max()
    est = estimate_target_priors(xs, ys, xt, svm=SVM)
    assert np.abs(est - truth).max() <= max(gap - 0.05, 0.03), (est, truth)
    est = estimate_target_priors(xs, ys, xt, svm=SVM, rounds=5)
    assert np.abs(est - truth).max() < 0.05, (est, truth)


def test_estimate_fits_its_classifier_on_a_capped_source_sample(rng):
    """``max_source_images`` caps the calibrated classifier's rows (a seeded stratified sample): below the
    source's size the estimate changes, stays deterministic and still moves towards the truth; at or
    above it nothing changes."""
    xs, ys, xt, yt = _label_shifted(rng, [0.9, 0.1], [0.6, 0.4])
    truth = np.bincount(yt, minlength=2) / len(yt)
    full = estimate_target_priors(xs, ys, xt, svm=SVM)
    np.testing.assert_array_equal(estimate_target_priors(xs, ys, xt, svm=SVM, max_source_images=len(ys)), full)
    capped = estimate_target_priors(xs, ys, xt, svm=SVM, max_source_images=300)
    np.testing.assert_array_equal(estimate_target_priors(xs, ys, xt, svm=SVM, max_source_images=300), capped)
    assert not np.array_equal(capped, full)
    assert np.abs(capped - truth).max() < np.abs(np.array([0.9, 0.1]) - truth).max() - 0.05, (capped, truth)


def test_prior_centring_restores_the_minority_class(rng):
    """Source 90/10, target 60/40: domain centring under-predicts the minority class, prior centring much less,
    and where nothing shifted it changes next to nothing."""
    xs, ys, xt, yt = _label_shifted(rng, [0.9, 0.1], [0.6, 0.4])
    dom, _ = evaluate_svm(xs, ys, xt, yt, center="domain")
    pri, pred = evaluate_svm(xs, ys, xt, yt, center="prior")
    assert pri["balanced_accuracy"] > dom["balanced_accuracy"] + 0.03
    assert pri["accuracy"] > dom["accuracy"] + 0.03
    assert float(pri["recall"].split(";")[1]) > float(dom["recall"].split(";")[1]) + 0.05
    xs, ys, xt, yt = _label_shifted(rng, [0.7, 0.3], [0.7, 0.3])
    dom, _ = evaluate_svm(xs, ys, xt, yt, center="domain")
    pri, _ = evaluate_svm(xs, ys, xt, yt, center="prior")
    assert abs(pri["accuracy"] - dom["accuracy"]) < 0.02


def test_prior_centring_needs_labels_and_proportions(rng):
    xs, xt = rng.normal(size=(10, 3)), rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="prior centring needs"):
        center_domains(xs, xt, "prior")
    cs, ct = center_domains(xs, xt, "prior", ys=np.arange(10) % 2, target_priors=[0.5, 0.5])
    np.testing.assert_allclose(cs.mean(0), 0, atol=1e-12)
    pred, _ = classify(cs, np.arange(10) % 2, ct)
    assert pred.shape == (5,)


@pytest.mark.parametrize("center", ["none", "domain", "prior"])
def test_centring_in_place_gives_the_copy_s_values(rng, center):
    """copy=False (evaluate_svm's last use of stored features) centres the caller's arrays to the same bits."""
    xs, xt = rng.normal(2, 1, (40, 5)).astype(np.float32), rng.normal(-1, 1, (30, 5)).astype(np.float32)
    ys, priors = np.arange(40) % 3, [0.2, 0.3, 0.5]
    want_s, want_t = center_domains(xs, xt, center, ys=ys, target_priors=priors)
    ins, int_ = xs.copy(), xt.copy()
    got_s, got_t = center_domains(ins, int_, center, ys=ys, target_priors=priors, copy=False)
    assert np.array_equal(got_s, want_s) and np.array_equal(got_t, want_t) and got_t.dtype == want_t.dtype
    assert got_s is ins and np.array_equal(ins, xs if center == "none" else want_s)   # the caller's array


@pytest.mark.parametrize("method", ["bbse", "mlls_bcts"])
def test_bbse_and_mlls_bcts_recover_a_pure_label_shift(rng, method):
    """Three overlapping classes, no domain offset, the target's proportions far from the source's: both
    estimators land within 0.05 of the truth in each class, where the source's proportions are 0.4 off."""
    from layerfuse.label_shift import shifted_priors

    xs, ys, xt, yt = _label_shifted(rng, [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], n=3000, offset=0.0)
    truth = np.bincount(yt, minlength=3) / len(yt)
    est = shifted_priors(xs, ys, xt, method=method, svm=SVM)
    assert est.sum() == pytest.approx(1.0) and np.abs(est - truth).max() < 0.05, (est, truth)


def test_bcts_recovers_a_temperature_and_a_bias(rng):
    """Labels drawn from softmax(z / 2 + b): the fit gives back 1/T = 0.5 and b."""
    from scipy.special import softmax

    from layerfuse.label_shift import fit_bcts

    z = rng.normal(0, 3, (20000, 3))
    p = softmax(z / 2 + np.array([0.0, 0.7, -0.5]), axis=1)
    y = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    inv_t, b = fit_bcts(z, y)
    assert inv_t == pytest.approx(0.5, abs=0.03) and b == pytest.approx([0.0, 0.7, -0.5], abs=0.06)


def test_bbse_solves_the_confusion_system():
    """Held-out (50/50): class 0 predicted right 80% of the time, class 1 always, so ``C = [[.4, 0], [.1, .5]]``;
    target predictions 50/50 give ``w = (1.25, 0.75)``: 62.5% class 0."""
    from layerfuse.label_shift import bbse_priors

    held_y = np.r_[np.zeros(10, int), np.ones(10, int)]
    held_pred = np.r_[np.zeros(8, int), np.ones(2, int), np.ones(10, int)]
    est = bbse_priors(held_pred, held_y, np.r_[np.zeros(50, int), np.ones(50, int)], 2)
    np.testing.assert_allclose(est, [0.625, 0.375])
    with pytest.raises(ValueError, match="method must be one of em, bbse, mlls_bcts"):
        from layerfuse.label_shift import shifted_priors
        shifted_priors(np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 2)), method="kmm", svm=SVM)
