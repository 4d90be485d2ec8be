"""Local-feature reducers: PCA (fitted on the source), flatten pooling, pooling 2D.

Local maps are 256 x 55 x 55 = 774,400 values per image.  None of the reducers
builds an n x 774k float64 matrix: flatten and pool2d work image by image, and
PCA works from Gram matrices accumulated block by block from the HDF5 store
(``X_s X_sᵀ`` and ``X_t X_sᵀ``, one pass over channel blocks), which is exact and
needs memory for one block of columns plus n x n numbers.
"""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from layerfuse._linalg import gram
from layerfuse.h5io import MAP_CHUNK_CHANNELS, read_arrays

__all__ = ["REDUCERS", "is_fitted", "check_reducer", "reducer_kwargs", "apply_reducer", "flatten_pool", "pool2d", "GramPCA", "reduce_store_pair", "pca_loadings", "reduce_maps", "project_maps",
           "pca_sample_rows", "fit_pca_sample", "StoredProjection"]

# PCA's components where a reducer entry names none (the schema's `reducers.pca.n_components`)
PCA_COMPONENTS = 256

log = logging.getLogger("layerfuse.reduce")


def flatten_pool(maps: np.ndarray, segment: int = 100) -> np.ndarray:
    """Flatten each image's maps and average consecutive segments of ``segment`` values.

    With 256 x 55 x 55 maps and ``segment=100`` this gives 7,744 values (the
    paper).  When the length is not a multiple of ``segment`` (56 x 56 maps),
    the last segment averages the remaining values.
    """
    if segment < 1:
        raise ValueError(f"flatten segment must be >= 1, got {segment}")
    flat = _float32(maps).reshape(len(maps), -1)
    d = flat.shape[1]
    full = d // segment
    out = flat[:, :full * segment].reshape(len(flat), full, segment).mean(axis=2)
    if d % segment:
        out = _side_by_side(out, flat[:, full * segment:].mean(axis=1, keepdims=True))
    return out


def pool2d(maps: np.ndarray, region: int | None = None) -> np.ndarray:
    """Average each map over non-overlapping ``region`` x ``region`` squares.

    ``region=None`` (or the map size) averages each whole map: 256 values (the
    paper's 55 x 55 region).  Partial squares at the border are dropped.
    """
    maps = _float32(maps)
    if maps.ndim != 4:
        raise ValueError(f"pool2d needs (n, channels, height, width) maps, got shape {maps.shape}")
    n, c, h, w = maps.shape
    r = min(h, w) if region is None else int(region)
    if not 1 <= r <= min(h, w):
        raise ValueError(f"pool2d region must be between 1 and {min(h, w)}, got {region}")
    hh, ww = h // r, w // r
    pooled = maps[:, :, :hh * r, :ww * r].reshape(n, c, hh, r, ww, r).mean(axis=(3, 5))
    return pooled.reshape(n, -1)


def _is_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor (a pass on a GPU reduces its maps there: :func:`flatten_pool`,
    :func:`pool2d` and :func:`project_maps` take numpy arrays or tensors, and torch is not imported here)."""
    return type(x).__module__.partition(".")[0] == "torch"


def _float32(maps):
    """``maps`` as float32: a numpy array, or a torch tensor kept on its device."""
    return maps.float() if _is_tensor(maps) else np.asarray(maps, dtype=np.float32)


def _side_by_side(a, b):
    """The columns of ``a`` then ``b`` (numpy arrays, or torch tensors on one device)."""
    if not _is_tensor(a):
        return np.concatenate([a, b], axis=1)
    both = a.new_empty((a.shape[0], a.shape[1] + b.shape[1]))
    both[:, :a.shape[1]], both[:, a.shape[1]:] = a, b
    return both


def _in_order(items, work, n_jobs: int = 1):
    """``work(item)`` for each item of the iterator ``items``, ``n_jobs`` items at a time in threads, results
    in the items' order.  At most ``n_jobs`` items exist at once (the next is drawn, i.e. read, in this
    thread once one finishes), so memory is ``n_jobs`` items.  Each call runs whole on one thread: with BLAS
    on one thread (:data:`_ONE_BLAS_THREAD`) every product is the call a single thread makes, and the
    results are the same bits whatever ``n_jobs``."""
    if n_jobs <= 1:
        for item in items:
            yield work(item)
        return
    with ThreadPoolExecutor(n_jobs) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# BLAS on one thread while the decorated fit runs: a product's last bits depend on its threads, so a fit computes
# the same numbers on any machine, and parallel work is spread over whole products (_in_order)
_ONE_BLAS_THREAD = threadpool_limits.wrap(limits=1, user_api="blas")


def _row_blocks(n: int, n_features: int, memory_mb: float, align: int = 32):
    rows = max(1, int(memory_mb * 2**20 // (4 * max(n_features, 1))))
    rows = max(align, rows // align * align)  # whole 32-image chunks
    return [(lo, min(n, lo + rows)) for lo in range(0, n, rows)]


@dataclass
class PCAResult:
    """Named result of :meth:`GramPCA.fit_transform_stores`."""

    source: np.ndarray
    target: np.ndarray
    explained_variance: np.ndarray
    source_coef: np.ndarray        # U Λ^-½: loadings = (X_s - mean)ᵀ source_coef (see :func:`pca_loadings`)


class GramPCA:
    """Exact PCA of very wide data through Gram matrices, streamed from HDF5.

    Parameters
    ----------
    n_components : int, default=256
        Capped at ``n_source - 1`` (the rank of the centred source).
    block_memory_mb : float, default=1024
        Memory for one block of feature columns of both domains (float32);
        bounds the peak memory together with the ``n x n`` Gram matrices.
    n_jobs : int, default=1
        Blocks of columns multiplied at once, each on one thread (``n_jobs`` blocks held): the same bits
        whatever ``n_jobs``, since every product is the one a single thread computes and the blocks' Gram
        matrices are summed in their order (BLAS runs on one thread throughout the fit).
    """

    def __init__(self, n_components: int = PCA_COMPONENTS, *, block_memory_mb: float = 1024, n_jobs: int = 1):
        self.n_components = n_components
        self.block_memory_mb = block_memory_mb
        self.n_jobs = n_jobs

    def _grams(self, source, target, source_rows=None, target_rows=None):
        """``X_s X_sᵀ`` and ``X_t X_sᵀ`` in one pass over blocks of feature columns.

        Stores of maps are chunked by channel, so a block of channels over all
        images reads each chunk once; memory is one column block of the rows
        read.  ``source_rows``/``target_rows`` select rows (a split of one
        dataset's store); when both domains are rows of the same dataset it is
        read once and split in memory.
        """
        shared = source is target or target is None
        ns = source.shape[0] if source_rows is None else len(source_rows)
        nt = 0 if target is None else target.shape[0] if target_rows is None else len(target_rows)
        n_read = source.shape[0] if shared else source.shape[0] + target.shape[0]
        n_cols = source.shape[1]
        step = _column_step(source, n_read, self.block_memory_mb, whole_chunks=True)

        def read(lo):                               # HDF5 reads one at a time (h5py's lock), here
            block = _columns(source, lo, lo + step)
            target_block = None if target is None else block if shared else _columns(target, lo, lo + step)
            return block, target_block

        def products(blocks):
            xs = _pick(blocks[0], source_rows)
            return gram(xs), None if blocks[1] is None else _pick(blocks[1], target_rows) @ xs.T

        g = np.zeros((ns, ns))
        c = np.zeros((nt, ns))
        for gs, cs in _in_order(map(read, range(0, n_cols, step)), products, self.n_jobs):
            g += gs                                   # in the blocks' order: the sum's bits do not depend on n_jobs
            if cs is not None:
                c += cs
        return g, c

    @_ONE_BLAS_THREAD
    def fit_transform_stores(self, source_dset, target_dset, source_rows=None, target_rows=None) -> PCAResult:
        """Fit on the source rows and return source and target scores (rows as in :meth:`_grams`)."""
        ns = source_dset.shape[0] if source_rows is None else len(source_rows)
        d = int(np.prod(source_dset.shape[1:]))
        if ns < 2:
            raise ValueError(f"PCA needs at least 2 source images, got {ns}")
        k = min(int(self.n_components), ns - 1, d)
        g, c = self._grams(source_dset, target_dset, source_rows, target_rows)   # X_s X_sᵀ, X_t X_sᵀ
        row_mean = g.mean(axis=0)                              # (1ᵀ G / n)
        gc = g - row_mean[None, :] - row_mean[:, None] + row_mean.mean()   # H G H
        evals, evecs = np.linalg.eigh(gc)
        order = np.argsort(evals)[::-1][:k]
        evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
        keep = evals > evals[0] * 1e-10 if evals.size and evals[0] > 0 else np.zeros_like(evals, bool)
        evals, evecs = evals[keep], evecs[:, keep]
        # deterministic signs: largest |loading| positive
        signs = np.sign(evecs[np.abs(evecs).argmax(axis=0), np.arange(evecs.shape[1])])
        evecs = evecs * np.where(signs == 0, 1, signs)
        scale = 1.0 / np.sqrt(evals)
        source = evecs * np.sqrt(evals)                        # U Λ^½
        cc = c - row_mean[None, :]                             # (X_t - μ) X_sᵀ, before centring columns
        cc = cc - cc.mean(axis=1, keepdims=True)               # ... times H
        target = cc @ evecs * scale                            # (X_t - μ) V_kᵀ
        self.n_components_ = evecs.shape[1]
        if self.n_components_ < int(self.n_components):
            log.warning("PCA keeps %d of the %d components asked for (%d source images, rank %d); "
                        "recorded as local_width in the scores", self.n_components_, int(self.n_components), ns,
                        self.n_components_)
        self.explained_variance_ = evals / (ns - 1)
        self.source_coef_ = evecs * scale
        return PCAResult(source.astype(np.float32), target.astype(np.float32), self.explained_variance_,
                         self.source_coef_)


@_ONE_BLAS_THREAD
def pca_loadings(source_dset, source_coef: np.ndarray, source_rows=None, block_memory_mb: float = 512,
                 n_jobs: int = 1):
    """``(mean, loadings)`` of a fitted :class:`GramPCA` for projecting new maps: ``(x - mean) @ loadings``.

    The Gram-matrix PCA never forms its ``d x k`` loadings; a saved model needs them:
    ``loadings = (X_s - mean)ᵀ U Λ^-½`` in one pass over the source store's columns, so that
    ``(X_t - mean) @ loadings`` equals the target scores of :meth:`GramPCA.fit_transform_stores`.
    ``n_jobs`` blocks of columns at once, each on one thread (the same bits whatever ``n_jobs``).
    """
    per_col = int(np.prod(source_dset.shape[2:])) if source_dset.ndim > 2 else 1
    step = _column_step(source_dset, source_dset.shape[0], block_memory_mb)
    # float32 products, as the Gram's: the loadings are stored as float32, float64 doubled this pass's time
    coef = np.asarray(source_coef, np.float32)
    d = int(np.prod(source_dset.shape[1:]))
    # filled in place, block by block: the loadings (4 bytes per value and component) are held once
    mean, loadings = np.empty(d), np.empty((d, coef.shape[1]), np.float32)

    def read(lo):
        return lo, _pick(_columns(source_dset, lo, lo + step), source_rows)   # every row: no copy of the block

    def project(item):                            # each block fills its own rows of mean and loadings
        lo, block = item
        cols = slice(lo * per_col, lo * per_col + block.shape[1])
        mean[cols] = block.mean(axis=0, dtype=np.float64)
        block -= mean[cols].astype(np.float32)
        np.matmul(block.T, coef, out=loadings[cols])

    deque(_in_order(map(read, range(0, source_dset.shape[1], step)), project, n_jobs), maxlen=0)   # run them all
    return mean, loadings


def _column_step(dset, n_rows: int, memory_mb: float, whole_chunks: bool = False) -> int:
    """Feature columns (channels of maps) per block: ``n_rows`` rows of them fill ``memory_mb`` in float32.
    ``whole_chunks``: a multiple of a map store's chunk (whole chunks of a compressed store; the same blocks
    in an uncompressed one)."""
    per_col = int(np.prod(dset.shape[2:])) if dset.ndim > 2 else 1
    step = max(1, int(memory_mb * 2**20 // (4 * per_col * n_rows)))
    if whole_chunks and dset.ndim == 4:
        align = dset.chunks[1] if dset.chunks is not None else MAP_CHUNK_CHANNELS
        step = max(align, step // align * align)
    return step


def _columns(dset, lo, hi) -> np.ndarray:
    """Feature columns ``lo:hi`` (channels of maps) of every row, as a new float32 ``(n, -1)`` array (an HDF5
    read is one; a numpy slice is copied), which callers may change in place."""
    copy = True if isinstance(dset, np.ndarray) else None
    return np.array(dset[:, lo:hi], dtype=np.float32, copy=copy).reshape(dset.shape[0], -1)


def _pick(block: np.ndarray, rows) -> np.ndarray:
    return block if rows is None else block[rows]


def _map_blocks(dset, fn, memory_mb=256):
    n = dset.shape[0]
    d = int(np.prod(dset.shape[1:]))
    parts = [fn(np.asarray(dset[lo:hi], dtype=np.float32)) for lo, hi in _row_blocks(n, d, memory_mb)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def reducer_kwargs(spec: dict, method: str | None = None) -> dict:
    """The keyword arguments a reducer entry (of ``method``, default its own) sets for the method's function
    (:data:`REDUCERS`' ``params``): the others take the library's defaults (the schema's, one source)."""
    return {k: spec[k] for k in REDUCERS[method or spec["method"]]["params"] if k in spec}


# The reducers: a method is fitted on the source (PCA: its mean and loadings are a model of their own,
# fitted before any image is projected, exported with a saved model) or a function of each image's maps
# alone; ``params``: the keys of its ``reducers`` entry.  Adding one: its function, an entry here, its
# ``method`` in the schema (and a title in ``layerfuse.report.REDUCER_TITLES``).
REDUCERS = {
    "pca": {"fitted": True, "params": ("n_components", "block_memory_mb")},
    "flatten": {"fitted": False, "params": ("segment",),
                "apply": lambda maps, p: flatten_pool(maps, **reducer_kwargs(p, "flatten"))},
    "pool2d": {"fitted": False, "params": ("region",),
               "apply": lambda maps, p: pool2d(maps, **reducer_kwargs(p, "pool2d"))},
}


def is_fitted(spec: dict) -> bool:
    """Whether a reducer entry is fitted on the source (PCA) rather than applied to each image alone."""
    return REDUCERS[spec["method"]]["fitted"]


def check_reducer(name: str, spec: dict) -> None:
    """A ``ValueError`` naming ``reducers.<name>.<key>`` for a key the entry's method does not take."""
    method = REDUCERS[spec["method"]]
    for key in spec:
        if key != "method" and key not in method["params"]:
            raise ValueError(f"reducers.{name}: {key!r} applies to "
                             f"{' or '.join(m for m, v in REDUCERS.items() if key in v['params'])}, not {spec['method']}")


def reduce_maps(maps: np.ndarray, method: str, params: dict) -> np.ndarray:
    """A per-image reducer (``flatten`` or ``pool2d``) on a batch of maps."""
    if method not in REDUCERS or REDUCERS[method]["fitted"]:
        raise ValueError(f"unknown per-image reducer method {method!r}: use "
                         f"{' or '.join(m for m, v in REDUCERS.items() if not v['fitted'])}")
    return REDUCERS[method]["apply"](maps, params)


def apply_reducer(maps: np.ndarray, spec: dict, fitted: dict | None = None) -> np.ndarray:
    """A reducer entry on a batch of maps: a fitted one projects onto its ``fitted`` ``mean`` and
    ``loadings`` (:func:`project_maps`), the others reduce each image alone (:func:`reduce_maps`)."""
    if is_fitted(spec):
        return project_maps(maps, fitted["mean"], fitted["loadings"])
    return reduce_maps(maps, spec["method"], spec)


# Rows per projection product: a float32 product's last bits depend on its number of rows, so every pass
# projects the same groups of rows (a pass of its own runs half of the default 32-image batch), and the stores
# are the same whether the main pass or a pass per block projects (extract.pca_in_pass).
PROJECTION_ROWS = 16


def project_maps(maps: np.ndarray, mean: np.ndarray, loadings: np.ndarray) -> np.ndarray:
    """PCA scores of a batch of maps, ``(x - mean) @ loadings`` (:func:`pca_loadings`), float32, in products of
    :data:`PROJECTION_ROWS` rows.  A torch tensor of maps, with ``mean`` and ``loadings`` tensors on its device,
    is projected there."""
    flat = _float32(maps).reshape(len(maps), -1)
    out = flat.new_empty((len(flat), loadings.shape[1])) if _is_tensor(flat) else \
        np.empty((len(flat), loadings.shape[1]), np.float32)
    for lo in range(0, len(flat), PROJECTION_ROWS):
        out[lo:lo + PROJECTION_ROWS] = (flat[lo:lo + PROJECTION_ROWS] - mean) @ loadings
    return out


class StoredProjection:
    """:func:`project_maps` onto the ``mean`` and ``loadings`` of a PCA model store (:func:`fit_pca_sample`),
    read when first called and dropped by :meth:`release`, so that a pass holds a block's loadings
    (4 bytes per map value and component) only while it projects that block."""

    def __init__(self, path):
        self.path = path
        self.arrays = None
        self.on_device = None                 # (mean, loadings) as float32 tensors on the device of the last maps

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        if self.arrays is None:
            self.arrays, _ = read_arrays(self.path, ["mean", "loadings"])
        maps = _float32(maps)
        if not _is_tensor(maps):
            return project_maps(maps, self.arrays["mean"], self.arrays["loadings"])
        if self.on_device is None or self.on_device[0].device != maps.device:   # copied there once a pass
            self.on_device = (maps.new_tensor(self.arrays["mean"]), maps.new_tensor(self.arrays["loadings"]))
        return project_maps(maps, *self.on_device)

    def release(self) -> None:
        self.arrays = self.on_device = None


def pca_sample_rows(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of a seeded sample of ``size`` images stratified by ``labels`` (every row where the
    source has no more): the images whose maps PCA is fitted on when maps are not stored."""
    from sklearn.model_selection import StratifiedShuffleSplit  # scikit-learn (0.5 s): only PCA's sample

    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    try:
        keep, _ = next(StratifiedShuffleSplit(1, train_size=int(size), random_state=seed).split(labels, labels))
    except ValueError:                                 # classes too small to stratify: a plain seeded sample
        keep = np.random.default_rng(seed).choice(len(labels), int(size), replace=False)
    return np.sort(keep)


def fit_pca_sample(store, n_components: int = PCA_COMPONENTS, block_memory_mb: float = 1024,
                   n_jobs: int = 1) -> dict:
    """PCA fitted on every row of a map store (the source's fitting sample): ``mean`` and ``loadings``
    (``d x k`` float32) for :func:`project_maps`, and the ``explained_variance``.  On the whole source
    this is the PCA :func:`reduce_store_pair` fits, up to rounding.  ``n_jobs``: blocks of columns
    multiplied at once (:class:`GramPCA`); the same bits whatever it is, ``n_jobs`` blocks held."""
    with h5py.File(store, "r") as f:
        x = f["features"]
        res = GramPCA(n_components, block_memory_mb=block_memory_mb, n_jobs=n_jobs).fit_transform_stores(x, None)
        # the loadings (d x k float32) are held beside each block of columns: the block gets what they leave
        loadings_mb = int(np.prod(x.shape[1:])) * res.source_coef.shape[1] * 4 / 2**20
        mean, loadings = pca_loadings(x, res.source_coef, block_memory_mb=max(64.0, block_memory_mb - loadings_mb),
                                      n_jobs=n_jobs)
    return {"mean": mean.astype(np.float32), "loadings": loadings,
            "explained_variance": res.explained_variance}


def reduce_store_pair(source_path, target_path, method: str, params: dict,
                      source_rows=None, target_rows=None) -> dict[str, np.ndarray]:
    """Reduce a layer's source and target stores with ``method`` (pca, flatten, pool2d).

    ``source_rows``/``target_rows`` (integer arrays) select rows of the stores:
    with one store for both (a seeded split of one dataset) every row is read
    once.  Returns ``{"source": Xs, "target": Xt}`` (PCA also ``pca_coef``: see :func:`pca_loadings`).
    """
    shared = Path(source_path).resolve() == Path(target_path).resolve()
    with h5py.File(source_path, "r") as fs, \
            (contextlib.nullcontext(fs) if shared else h5py.File(target_path, "r")) as ft:
        xs, xt = fs["features"], ft["features"]
        if xs.shape[1:] != xt.shape[1:]:
            raise ValueError(f"{source_path} and {target_path} have different feature shapes "
                             f"{xs.shape[1:]} vs {xt.shape[1:]}")
        if method == "pca":
            res = GramPCA(**reducer_kwargs(params, "pca")).fit_transform_stores(xs, xs if shared else xt, source_rows, target_rows)
            return {"source": res.source, "target": res.target, "pca_coef": res.source_coef}
        fn = lambda a: reduce_maps(a, method, params)  # noqa: E731
        reduced_source = _map_blocks(xs, fn)                    # per-image reducers: every stored row once
        reduced_target = reduced_source if shared else _map_blocks(xt, fn)
        return {"source": _pick(reduced_source, source_rows), "target": _pick(reduced_target, target_rows)}
