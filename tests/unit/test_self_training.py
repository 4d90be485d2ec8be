"""Target self-training (layerfuse.self_training): the selection, the refits, and that no target label is read."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from layerfuse.self_training import SelfTrainingSVM, select_confident
from layerfuse.svm import make_svm


def _shifted_classes(rng, n=400, d=30, classes=4):
    """Overlapping Gaussian classes; each target class moved by an offset of its own (a conditional shift the
    centring cannot undo), both domains centred as the workflow's cells are."""
    means = rng.normal(0, 0.45, (classes, d))
    ys = np.arange(n) % classes
    yt = rng.permutation(ys)
    xs = means[ys] + rng.normal(0, 1.0, (n, d))
    xt = means[yt] + rng.normal(0, 0.35, (classes, d))[yt] + rng.normal(0, 1.0, (n, d))
    return xs - xs.mean(0), ys, xt - xt.mean(0), yt


def _fit(xs, ys, xt, **kw):
    X = np.vstack([xs, xt])
    return SelfTrainingSVM(**kw).fit(X, np.r_[ys, -np.ones(len(xt), int)],
                                     sample_domain=np.r_[np.ones(len(xs)), -np.ones(len(xt))])


def test_select_confident_shares_rows_out_among_the_classes():
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    margin = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.4, 0.8])
    # uniform: ceil(0.5 * 8 / 2) = 2 a class, the most confident of each
    np.testing.assert_array_equal(select_confident(pred, margin, np.array([0, 1]), 0.5), [1, 4, 6, 7])
    # predicted: half of each class's predictions: 3 of class 0, 1 of class 1
    np.testing.assert_array_equal(select_confident(pred, margin, np.array([0, 1]), 0.5, "predicted"), [1, 2, 4, 7])
    with pytest.raises(ValueError, match="balance must be one of uniform, predicted"):
        select_confident(pred, margin, np.array([0, 1]), 0.5, "random")


def test_no_rounds_is_the_workflows_svm(rng):
    xs, ys, xt, _ = _shifted_classes(rng)
    np.testing.assert_array_equal(_fit(xs, ys, xt, rounds=0).predict(xt), make_svm().fit(xs, ys).predict(xt))


def test_self_training_follows_a_shifted_target_without_its_labels(rng):
    """The source's SVM misses part of each shifted target class; refitting on confident pseudo-labels
    moves the boundaries towards the target's classes (+3 points here).  The target's labels, given or
    masked, change nothing."""
    xs, ys, xt, yt = _shifted_classes(rng)
    plain = (make_svm().fit(xs, ys).predict(xt) == yt).mean()
    model = _fit(xs, ys, xt, rounds=5)
    trained = (model.predict(xt) == yt).mean()
    assert plain < 0.9 and trained >= plain + 0.02, (plain, trained)
    # the last round keeps up to every target row (a class predicted fewer times than its share gives fewer)
    assert len(model.history_) == 5 and 0.9 * len(xt) <= model.history_[-1]["kept"] <= len(xt)
    X, domain = np.vstack([xs, xt]), np.r_[np.ones(len(xs)), -np.ones(len(xt))]
    labelled = SelfTrainingSVM(5).fit(X, np.r_[ys, yt], sample_domain=domain)
    np.testing.assert_array_equal(labelled.predict(xt), model.predict(xt))


def test_parameters_are_checked_at_fit_and_clone_keeps_them(rng):
    xs, ys, xt, _ = _shifted_classes(rng, n=40)
    assert clone(SelfTrainingSVM(4, balance="predicted")).get_params()["balance"] == "predicted"
    for kw, message in [({"rounds": -1}, "rounds"), ({"final_share": 0}, "final_share"),
                        ({"balance": "x"}, "balance")]:
        with pytest.raises(ValueError, match=message):
            _fit(xs, ys, xt, **kw)
