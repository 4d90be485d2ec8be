"""Platt scaling of the SVM's margin (layerfuse.calibration)."""
from __future__ import annotations

import numpy as np
import pytest

from layerfuse.calibration import margin_calibration, platt_fit, platt_probability
from layerfuse.svm import svm_kwargs


def test_platt_fit_recovers_a_logistic_map():
    """Outcomes drawn from sigmoid(2 m - 1) give back a ~ 2, b ~ -1 (Platt's smoothing is negligible at n = 20000)."""
    rng = np.random.default_rng(0)
    m = rng.normal(0.5, 1.0, 20000)
    correct = rng.random(20000) < platt_probability(m, 2.0, -1.0)
    a, b = platt_fit(m, correct)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)


def test_platt_fit_stays_finite_when_every_prediction_is_right():
    a, b = platt_fit(np.linspace(0.2, 3.0, 50), np.ones(50, bool))
    assert np.isfinite([a, b]).all()
    # Platt's target for a right prediction, (n+ + 1)/(n+ + 2), at every margin: sure, never certain
    np.testing.assert_allclose(platt_probability([0.2, 3.0], a, b), 51 / 52, atol=1e-4)


def test_source_calibration_orders_margins_and_needs_two_images_per_class():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 2.0, (3, 10))
    ys = np.repeat(np.arange(3), 30)
    xs = centres[ys] + rng.normal(0, 2.0, (90, 10))
    svm = svm_kwargs({"C": 1.0, "class_weight": "balanced", "max_iter": 5000})
    a, b = margin_calibration(xs, ys, svm=svm, seed=0)
    assert a > 0 and (a, b) == margin_calibration(xs, ys, svm=svm, seed=0)      # deterministic
    assert round(a, 6) == a and round(b, 6) == b                                 # as accuracy.csv keeps them
    assert np.isnan(margin_calibration(xs[:61], ys[:61], svm=svm)).all()        # class 2 has one image
