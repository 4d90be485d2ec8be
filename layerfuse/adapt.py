"""Feature-level adapters beside the paper's TCA: scikit-adaptation's (skada) and layerfuse's JDA/BDA.

Each configured adapter (``adapters: {key: {method: ..., <parameters>}}``) is one estimator, fitted
once per feature set on both domains' features (``fit_transform(X, y, sample_domain=...)``, target
labels masked) and scored like a TCA dimension: its own grid cell, both centrings.

skada's methods here map a *target* image by an affine map ``x W + b`` (CORAL centres it, Subspace
Alignment projects it on the target's principal axes, the linear OT mapping leaves it as it is), so a
saved model applies a fitted adapter to new target images without skada: :func:`fit_adapter` reads
that map off the fitted estimator and checks it against skada's own output.  JDA (``method: jda``;
``balance: β`` makes it BDA) is a kernel method like TCA: a saved model keeps its kernel basis and
coefficients.
"""
from __future__ import annotations

import inspect
import json
import logging

import numpy as np

__all__ = ["ADAPTER_METHODS", "DEFAULT_MAX_FEATURES", "KERNEL_METHODS", "RESERVED_KEYS", "AdapterFailure", "adapter_parameters", "check_adapter", "make_adapter",
           "fit_adapter"]

log = logging.getLogger("layerfuse.adapt")

# method name in the config -> "module:class"; parameters are the class's own (its __init__ signature)
ADAPTER_METHODS = {
    "coral": "skada:CORALAdapter",
    "subspace_alignment": "skada:SubspaceAlignmentAdapter",
    "linear_ot": "skada:LinearOTMappingAdapter",
    "jda": "layerfuse.tca:JDA",
}
# methods whose target map is a kernel expansion (basis rows and coefficients), not affine
KERNEL_METHODS = ("jda",)
# layerfuse's own keys of an adapter's entry (not passed to skada)
OWN_KEYS = ("method", "max_features")
# feature sets wider than this are skipped by default: these methods build d x d covariances and their
# square roots (a fused flatten block's ~9,800 features would take minutes and GBs per fit)
DEFAULT_MAX_FEATURES = {"coral": 4096, "linear_ot": 4096}
# names of the grid's other adapter cells: no adaptation and TCA (``tca-<dims>``)
RESERVED_KEYS = ("none", "tca")


class AdapterFailure(RuntimeError):
    """An adapter could not be fitted on a feature set (the reason is recorded in its cells)."""


def _adapter_class(method: str):
    import importlib

    module, name = ADAPTER_METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)


def adapter_parameters(method: str) -> list[str]:
    """The parameters the estimator for ``method`` takes, and layerfuse's own (``max_features``)."""
    sig = inspect.signature(_adapter_class(method).__init__)
    return sorted([p for p in sig.parameters if p != "self"] + [k for k in OWN_KEYS if k != "method"])


def check_adapter(key: str, spec: dict) -> None:
    """A ``ValueError`` naming ``adapters.<key>...`` for an unusable entry (unknown method or parameter)."""
    if key in RESERVED_KEYS:
        raise ValueError(f"adapters.{key}: the name is taken ({' and '.join(RESERVED_KEYS)} are the grid's own "
                         "cells: tca.baseline and tca.dims); choose another")
    method = spec.get("method")
    if method not in ADAPTER_METHODS:
        raise ValueError(f"adapters.{key}.method: unknown {method!r}; use one of {', '.join(ADAPTER_METHODS)}")
    valid = adapter_parameters(method)
    for name in spec:
        if name != "method" and name not in valid:
            raise ValueError(f"adapters.{key}.{name}: {method} takes no such parameter; valid: {', '.join(valid)}")
    try:
        make_adapter(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"adapters.{key}: {exc}") from None


def make_adapter(spec: dict, *, n_source: int | None = None, n_target: int | None = None):
    """The estimator of an adapter entry; Subspace Alignment's ``n_components`` is capped at what the
    smaller domain allows (PCA on each domain), JDA's at both domains' images, and Subspace Alignment's
    ``random_state`` defaults to 0 (reproducible)."""
    params = {k: v for k, v in spec.items() if k not in OWN_KEYS}
    if spec["method"] == "subspace_alignment":
        params.setdefault("random_state", 0)
        if params.get("n_components") is not None and n_source and n_target:
            params["n_components"] = min(int(params["n_components"]), n_source, n_target)
    if spec["method"] in KERNEL_METHODS and n_source and n_target:
        default = inspect.signature(_adapter_class(spec["method"]).__init__).parameters["n_components"].default
        params["n_components"] = min(int(params.get("n_components", default)), n_source + n_target)
    return _adapter_class(spec["method"])(**params)


def _target_map(adapter, xt: np.ndarray, zt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` with ``adapter.transform(x) = x W + b`` for target rows, read off the fitted estimator at
    0 and the unit vectors and checked on the target's own rows."""
    d = xt.shape[1]
    probe = np.vstack([np.zeros((1, d)), np.eye(d)])
    out = adapter.transform(probe, sample_domain=-np.ones(d + 1, int))
    bias, weight = out[0], out[1:] - out[0]
    mapped = xt @ weight + bias
    scale = max(float(np.abs(zt).max()), 1e-12)
    if not np.allclose(mapped, zt, rtol=0, atol=1e-6 * scale):
        raise AdapterFailure("its target transform is not affine; a saved model cannot apply it")
    return weight, bias


def fit_adapter(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, spec: dict) -> dict:
    """Fit one adapter on a feature set: ``source`` and ``target`` (the adapted features, as the SVM sees
    them), ``arrays`` (the target map, for a saved model: ``target_weight``/``target_bias`` of an affine
    map, or a kernel method's ``coef``/``basis_rows``) and ``info`` (what was used).  Raises :class:`AdapterFailure` with a one-line reason where it cannot be fitted: more features
    than ``max_features`` (default :data:`DEFAULT_MAX_FEATURES`), or a numerical failure (a singular
    covariance, non-finite output)."""
    import warnings

    n_features = xs.shape[1]
    max_features = spec.get("max_features", DEFAULT_MAX_FEATURES.get(spec["method"]))
    if max_features is not None and n_features > max_features:
        raise AdapterFailure(f"skipped: {n_features} features > max_features {max_features} "
                             f"(adapters.<key>.max_features)")
    adapter = make_adapter(spec, n_source=len(xs), n_target=len(xt))
    X = np.vstack([xs, xt]).astype(np.float64)
    y = np.r_[ys, -np.ones(len(xt), dtype=np.int64)]
    domain = np.r_[np.ones(len(xs), int), -np.ones(len(xt), int)]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            z = np.asarray(adapter.fit_transform(X, y, sample_domain=domain), dtype=np.float64)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError) as exc:
        raise AdapterFailure(f"{spec['method']} failed: {' '.join(str(exc).split())[:200]}") from None
    if not np.isfinite(z).all():
        raise AdapterFailure(f"{spec['method']} gave non-finite features (a singular covariance?)")
    zs, zt = z[:len(xs)], z[len(xs):]
    info = {"method": spec["method"], "n_features_in": n_features, "n_features_out": int(z.shape[1]),
            "params": json.dumps({k: v for k, v in adapter.get_params().items()}, default=str)}
    if spec["method"] in KERNEL_METHODS:
        # rows of the source-over-target stack the kernel is taken against, and the coefficients
        arrays = {"coef": adapter.coef_, "basis_rows": adapter.basis_index_}
        info.update(kernel=adapter.kernel, gamma_=float(adapter.gamma_), solver_=adapter.solver_)
    else:
        weight, bias = _target_map(adapter, xt.astype(np.float64), zt)
        arrays = {"target_weight": weight, "target_bias": bias}
    return {"source": zs, "target": zt, "arrays": arrays, "info": info}
