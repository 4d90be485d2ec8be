"""A small adapter written as a contributor would add one: a module with an estimator in skada's style.

``MeanMatchAdapter`` moves the target onto the source's mean and scales it to the source's spread (an affine
target map); ``SquareAdapter`` squares every feature (not affine: scored, but no saved model can apply it).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class MeanMatchAdapter(TransformerMixin, BaseEstimator):
    def __init__(self, scale: bool = True):
        self.scale = scale

    def fit(self, X, y=None, *, sample_domain=None):
        X, source = np.asarray(X, np.float64), np.asarray(sample_domain) >= 0
        self.source_mean_, self.target_mean_ = X[source].mean(0), X[~source].mean(0)
        spread = lambda rows: np.sqrt(((rows - rows.mean(0)) ** 2).sum(1).mean())  # noqa: E731
        self.ratio_ = spread(X[source]) / spread(X[~source]) if self.scale else 1.0
        return self

    def transform(self, X, *, sample_domain=None):
        X = np.asarray(X, np.float64)
        out = X.copy()
        target = np.asarray(sample_domain) < 0
        out[target] = (X[target] - self.target_mean_) * self.ratio_ + self.source_mean_
        return out

    def fit_transform(self, X, y=None, *, sample_domain=None):
        return self.fit(X, y, sample_domain=sample_domain).transform(X, sample_domain=sample_domain)


class SquareAdapter(MeanMatchAdapter):
    def transform(self, X, *, sample_domain=None):
        return np.asarray(X, np.float64) ** 2
