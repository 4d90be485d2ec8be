"""Every alignment of the grid behind one protocol: no adaptation, TCA, JDA/BDA and skada's adapters.

An adapter *method* is an estimator with skada's signature, ``fit_transform(X, y, *, sample_domain=...)``
on the source rows stacked over the target rows (``sample_domain`` >= 0 source, < 0 target; target labels
masked as -1), registered in :data:`METHODS` with the kind of map it applies to a new *target* image:

``"kernel"``
    ``K(x, basis) @ coef`` (TCA, JDA): the estimator exposes ``coef_``, ``basis_index_`` (rows of the
    stacked fit the kernel is taken against), ``kernel``, ``gamma_`` and ``solver_``.  Its components are
    nested where ``nested`` is set: the grid scores the first ``d`` of one fit (TCA's ``tca.dims``).
``"affine"``
    ``x W + b`` (skada's CORAL, Subspace Alignment, linear OT mapping): read off the fitted estimator and
    checked against its own output on the target.  An estimator whose target map is not affine is still
    scored; its cells are no candidates of the label-free pick, since no saved model could apply them.

A grid *cell name* is ``none``, ``tca-<d>`` or an ``adapters`` key; only this module reads one
(:func:`parse_cell`).  Fitting (:func:`fit_adapter`), the features of a cell (:func:`cell_features`),
the map a saved model keeps (:func:`saved_map`) and its application to new images
(:func:`apply_saved_map`) are written once here, for the workflow's scoring, export and ``predict``.

Adding a method: an estimator class in a module of its own, a :func:`register_method` call naming it
(``"module:Class"``) and its ``method`` value in ``schemas/config.schema.yaml``.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._linalg import rbf_kernel

__all__ = ["METHODS", "NO_ADAPTER", "NESTED_KEY", "AdapterMethod", "AdapterFailure", "register_method",
           "adapter_parameters", "check_adapter", "make_adapter", "grid_cells", "parse_cell", "adapter_specs",
           "is_nested", "fit_adapter", "cell_features", "stored_arrays", "saved_map", "apply_saved_map"]

log = logging.getLogger("layerfuse.adapt")

NO_ADAPTER = "none"
# the store key of TCA, the grid's nested adapter (config section ``tca``), and its cells' name prefix
NESTED_KEY = "tca"
# layerfuse's own keys of an adapter's entry (not passed to the estimator)
OWN_KEYS = ("method", "max_features")


@dataclass(frozen=True)
class AdapterMethod:
    """One registered method: its estimator (``"module:Class"``), the kind of its target map
    (``"kernel"`` or ``"affine"``), whether its components are nested, the widest feature set it is
    fitted on by default (``max_features``: d x d covariances and their square roots), and the
    parameters it caps at what the data allow (``n_components`` at the stacked rows, or at the smaller
    domain's rows)."""
    name: str
    estimator: str
    target_map: str
    nested: bool = False
    max_features: int | None = None
    cap_components: str | None = None            # "stacked" | "smaller_domain"
    defaults: dict = field(default_factory=dict)  # layerfuse's defaults where the estimator's differ


METHODS: dict[str, AdapterMethod] = {}


def register_method(name: str, estimator: str, target_map: str, **options) -> AdapterMethod:
    """Register (or replace) the method ``name``; see :class:`AdapterMethod`."""
    if target_map not in ("kernel", "affine"):
        raise ValueError(f"target_map must be 'kernel' or 'affine', got {target_map!r}")
    METHODS[name] = method = AdapterMethod(name, estimator, target_map, **options)
    return method


register_method("tca", "layerfuse.tca:TCA", "kernel", nested=True, cap_components="stacked")
register_method("jda", "layerfuse.tca:JDA", "kernel", cap_components="stacked")
register_method("coral", "skada:CORALAdapter", "affine", max_features=4096)
register_method("subspace_alignment", "skada:SubspaceAlignmentAdapter", "affine", cap_components="smaller_domain",
                defaults={"random_state": 0})
register_method("linear_ot", "skada:LinearOTMappingAdapter", "affine", max_features=4096)


class AdapterFailure(RuntimeError):
    """An adapter could not be fitted on a feature set (the reason is recorded in its cells)."""


def _method(spec: dict) -> AdapterMethod:
    return METHODS[spec["method"]]


def _estimator_class(method: AdapterMethod):
    module, name = method.estimator.split(":")
    return getattr(importlib.import_module(module), name)


def adapter_parameters(method: str) -> list[str]:
    """The parameters the estimator for ``method`` takes, and layerfuse's own (``max_features``)."""
    sig = inspect.signature(_estimator_class(METHODS[method]).__init__)
    return sorted([p for p in sig.parameters if p != "self"] + [k for k in OWN_KEYS if k != "method"])


def check_adapter(key: str, spec: dict) -> None:
    """A ``ValueError`` naming ``adapters.<key>...`` for an unusable entry (unknown method or parameter)."""
    if key in (NO_ADAPTER, NESTED_KEY):
        raise ValueError(f"adapters.{key}: the name is taken ({NO_ADAPTER} and {NESTED_KEY} are the grid's own "
                         "cells: tca.baseline and tca.dims); choose another")
    method = spec.get("method")
    if method not in METHODS or METHODS[method].nested:
        usable = [m for m, v in METHODS.items() if not v.nested]
        raise ValueError(f"adapters.{key}.method: unknown {method!r}; use one of {', '.join(usable)}")
    valid = adapter_parameters(method)
    for name in spec:
        if name != "method" and name not in valid:
            raise ValueError(f"adapters.{key}.{name}: {method} takes no such parameter; valid: {', '.join(valid)}")
    try:
        make_adapter(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"adapters.{key}: {exc}") from None


def make_adapter(spec: dict, *, n_source: int | None = None, n_target: int | None = None):
    """The estimator of an adapter entry, with ``n_components`` capped at what the data allow where the
    method says so (:class:`AdapterMethod`) and the method's layerfuse defaults filled in."""
    method = _method(spec)
    cls = _estimator_class(method)
    params = {**method.defaults, **{k: v for k, v in spec.items() if k not in OWN_KEYS}}
    if method.cap_components and n_source and n_target:
        default = inspect.signature(cls.__init__).parameters["n_components"].default
        wanted = params.get("n_components", default)
        if wanted is not None:
            limit = n_source + n_target if method.cap_components == "stacked" else min(n_source, n_target)
            params["n_components"] = min(int(wanted), limit)
    return cls(**params)


# --- cell names: only this module reads them -------------------------------------------------------------

def grid_cells(tca: dict, adapters: dict) -> list[str]:
    """The grid's adapter cells: ``none`` (if ``tca.baseline``), ``tca-<d>`` for each of ``tca.dims``
    (descending) and each ``adapters`` key."""
    return (([NO_ADAPTER] if tca["baseline"] else []) + [f"{NESTED_KEY}-{d}" for d in sorted(tca["dims"], reverse=True)]
            + list(adapters))


def parse_cell(name: str) -> tuple[str, int | None]:
    """``(store key, dims)`` of a cell name: ``("none", None)``, ``("tca", d)`` or ``(key, None)``."""
    key, sep, dims = name.partition("-")
    if key == NESTED_KEY and sep and dims.isdigit():
        return NESTED_KEY, int(dims)
    return name, None


def is_nested(name: str) -> bool:
    """Whether a cell scores the first ``d`` components of a nested adapter (a ``tca-<d>`` row)."""
    return parse_cell(name)[1] is not None


def adapter_specs(tca: dict, adapters: dict) -> dict[str, dict]:
    """``{store key: spec}`` of every adapter fitted on each feature set: TCA at its largest dimension
    (where any is scored; its components are nested) and each ``adapters`` entry."""
    specs = {}
    if tca["dims"]:
        specs[NESTED_KEY] = {"method": "tca", "n_components": max(tca["dims"]),
                             **{k: v for k, v in tca.items() if k not in ("dims", "baseline")}}
    return {**specs, **adapters}


# --- fitting ---------------------------------------------------------------------------------------------

def _affine_map(adapter, xt: np.ndarray, zt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def fit_adapter(X: np.ndarray, n_source: int, ys: np.ndarray, spec: dict) -> dict:
    """Fit one adapter entry on a feature set's stacked rows ``X`` (the first ``n_source`` the source's,
    labelled ``ys``).  Returns ``source`` and ``target`` (the adapted features, as the SVM sees them),
    ``arrays`` (the target map: ``coef``/``basis_rows`` of a kernel map, ``target_weight``/``target_bias``
    of an affine one; none where ``map_error`` says why it could not be read) and ``attrs`` (what was used).
    Raises :class:`AdapterFailure` with a one-line reason where it cannot be fitted: more features than
    ``max_features``, or a numerical failure (a singular covariance, non-finite output)."""
    method = _method(spec)
    n_features = X.shape[1]
    max_features = spec.get("max_features", method.max_features)
    if max_features is not None and n_features > max_features:
        raise AdapterFailure(f"skipped: {n_features} features > max_features {max_features} "
                             f"(adapters.<key>.max_features)")
    n_target = len(X) - n_source
    adapter = make_adapter(spec, n_source=n_source, n_target=n_target)
    # TCA reads the float32 rows as they are (its kernels widen blocks as needed); the others want float64
    fit_rows = X if method.nested else X.astype(np.float64)
    y = np.r_[ys, -np.ones(n_target, dtype=np.int64)]
    domain = np.r_[np.ones(n_source, int), -np.ones(n_target, int)]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            z = np.asarray(adapter.fit_transform(fit_rows, y, sample_domain=domain))
    except (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError) as exc:
        raise AdapterFailure(f"{spec['method']} failed: {' '.join(str(exc).split())[:200]}") from None
    if not method.nested:
        z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise AdapterFailure(f"{spec['method']} gave non-finite features (a singular covariance?)")
    zs, zt = z[:n_source], z[n_source:]
    attrs = {"adapter": json.dumps(spec), "method": method.name, "target_map": method.target_map,
             "n_features_in": n_features, "n_features_out": int(z.shape[1]),
             "params": json.dumps(adapter.get_params(), default=str), "map_error": ""}
    arrays = {}
    if method.target_map == "kernel":
        arrays = {"coef": adapter.coef_, "basis_rows": adapter.basis_index_}
        attrs.update(kernel=adapter.kernel, gamma_=float(adapter.gamma_), solver_=adapter.solver_)
    else:
        try:
            weight, bias = _affine_map(adapter, X[n_source:].astype(np.float64), zt)
            arrays = {"target_weight": weight, "target_bias": bias}
        except AdapterFailure as exc:
            attrs["map_error"] = str(exc)
    return {"source": zs, "target": zt, "arrays": arrays, "attrs": attrs}


# --- a cell's features, the saved map and its application -------------------------------------------------

def cell_features(pairs: dict, cell: str):
    """``(xs, xt, ys, yt, dims, failed, map_error)`` of one cell: the fused pair (``none``), the first
    ``dims`` components of a nested adapter (``tca-<d>``) or an adapter's store; ``pairs`` holds
    :func:`layerfuse.h5io.read_pair`'s tuples by store key.  ``failed``: the reason the adapter could not be
    fitted, or ""; ``map_error``: why no saved model could apply it, or ""."""
    key, dims = parse_cell(cell)
    xs, xt, ys, yt, attrs = pairs[key]
    if dims is not None:
        if dims > xs.shape[1]:
            log.warning("only %d components available for %s (recorded as n_components_used)", xs.shape[1], cell)
        return xs[:, :dims], xt[:, :dims], ys, yt, dims, str(attrs.get("failed", "")), ""
    return xs, xt, ys, yt, None, str(attrs.get("failed", "")), str(attrs.get("map_error", ""))


def _stored_map(attrs: dict) -> str:
    """The kind of an adapter store's target map (a store written before ``target_map`` was recorded: a
    kernel map where the store names its kernel)."""
    return str(attrs.get("target_map") or ("kernel" if "kernel" in attrs else "affine"))


def stored_arrays(attrs: dict) -> list[str]:
    """The arrays of an adapter store that :func:`saved_map` reads (none where it failed)."""
    if attrs.get("failed") or attrs.get("map_error"):
        return []
    return ["source", "target"] + (["coef", "basis_rows"] if _stored_map(attrs) == "kernel"
                                   else ["target_weight", "target_bias"])


def saved_map(cell: str, store: dict, attrs: dict, xs: np.ndarray, xt: np.ndarray):
    """``((zs, zt), record, arrays)`` for a saved model of ``cell``: its adapted features, what the model's
    JSON says of the adapter and the arrays that map a new target image (nothing for ``none``).
    ``store``: the adapter store's ``source``, ``target`` and map arrays; ``attrs``: its attributes;
    ``xs``/``xt``: the fused pair it was fitted on (a kernel map keeps its basis rows)."""
    if cell == NO_ADAPTER:
        return (xs, xt), {"name": cell}, {}
    _, dims = parse_cell(cell)
    if attrs.get("failed"):
        raise ValueError(f"adapter {cell} failed on this feature set ({attrs['failed']}): no model")
    if attrs.get("map_error"):
        raise ValueError(f"adapter {cell}: {attrs['map_error']}")
    zs, zt = store["source"], store["target"]
    if dims is not None:
        zs, zt = zs[:, :dims], zt[:, :dims]
    record = {"name": cell, "method": str(attrs["method"])}
    if _stored_map(attrs) == "kernel":
        record.update(kernel=str(attrs["kernel"]), gamma=float(attrs["gamma_"]), dims=int(zs.shape[1]),
                      solver=str(attrs["solver_"]))
        arrays = {"adapter/basis": np.vstack([xs, xt])[store["basis_rows"]],
                  "adapter/coef": store["coef"][:, :zs.shape[1]]}
    else:
        arrays = {"adapter/weight": store["target_weight"], "adapter/bias": store["target_bias"]}
    return (zs, zt), record, arrays


def apply_saved_map(x: np.ndarray, record: dict, arrays: dict) -> np.ndarray:
    """A saved model's adapter applied to new target rows ``x`` (float32 out)."""
    if "adapter/weight" in arrays:                      # affine
        return (x.astype(np.float64) @ arrays["adapter/weight"] + arrays["adapter/bias"]).astype(np.float32)
    if "adapter/basis" in arrays:                       # kernel: against the basis rows
        xd, basis = x.astype(np.float64), arrays["adapter/basis"].astype(np.float64)
        k = rbf_kernel(xd, basis, record["gamma"]) if record["kernel"] == "rbf" else xd @ basis.T
        return (k @ arrays["adapter/coef"]).astype(np.float32)
    return x
