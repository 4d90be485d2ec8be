"""Memory a downstream job needs, from its input stores' shapes: the rules' ``mem_mb``.

A fixed ``mem_mb`` is wrong at both ends: it reserves gigabytes for a 300-image pair, and at 100,000
images it lets Snakemake start several jobs that each need most of the machine (or SLURM kill them).
The estimates count the copies each job makes of its largest arrays (float32 pairs as stored, float64
where a library widens them) plus a fixed allowance for the interpreter and its libraries; their
constants are checked against measured peaks in ``tests/unit/test_job_memory.py`` and documented in
docs/operations.md.  A file that does not exist yet raises ``FileNotFoundError`` naming it: Snakemake
then evaluates the resource again once the job's inputs are there.
"""
from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np

from .adapt import NESTED_KEY
from .h5io import pair_shape, read_labels
from .solvers import KERNEL_BLOCK_ROWS, SQUARED_BLOCK_ROWS, resolve_solver

__all__ = ["evaluate_svm_mb", "fit_tca_mb", "fit_adapter_mb", "fit_pca_mb", "fit_pca_threads", "extraction_pass_mb"]

BASE_MB = 300                     # the interpreter with numpy, scipy, scikit-learn and h5py loaded
MIN_MB = 1000                     # the other rules' 1 GB: room for a BLAS with many threads' buffers
CRITERIA_MB = 400                 # skada and the criteria's estimators, where a job scores them
_MB = 2 ** 20


PASS_MB = 3000                    # an extraction pass: the network, a batch and its activations
# what one job may ask for by default: a 16 GB laptop beside its desktop, a common 8 GB cluster slot (an
# extraction pass within it projects every PCA block, `extract.pca_in_pass: auto`; `fit_pca` takes the threads
# whose column blocks fit it)
PASS_BUDGET_MB = 8000


def extraction_pass_mb(image_size: int, held_components: int = 0) -> int:
    """An extraction pass's memory: :data:`PASS_MB` plus the PCA loadings it holds (``held_components``
    over the blocks it projects; 256 x (image_size / 4)² float32 values per component of an early block)."""
    return PASS_MB + int(4 * 256 * (image_size // 4) ** 2 * held_components / _MB)


def _existing(path):
    if not Path(path).exists():
        raise FileNotFoundError(errno.ENOENT, "not made yet", str(path))
    return path


def _shape(path) -> tuple[int, int, int]:
    return pair_shape(_existing(path))


def _classifier_bytes(ns: int, width: int, n_classes: int, solver: str) -> int:
    """The SVM's working memory on ``ns`` source rows: liblinear copies the matrix to float64 and then into
    its own rows (8 + 16 bytes a value); the Newton method keeps a few ``ns x classes`` float64 arrays and
    squares a block of rows for its preconditioner."""
    if resolve_solver(solver, ns, width) == "liblinear":
        return 24 * ns * width
    return 8 * 8 * ns * max(n_classes, 1) + 4 * min(ns, SQUARED_BLOCK_ROWS) * width


def evaluate_svm_mb(none_pair, adapted: dict, *, solver: str = "auto", selection: dict | None = None,
                    center: str = "domain") -> int:
    """``evaluate_svm``: every store it scores held at once (the fused pair ``none_pair``, None where
    ``none`` is not scored, and the ``adapted`` stores; each read in place, :func:`layerfuse.h5io.read_stacked_pair`)
    plus one cell's work: a centred copy (TCA's cells, column slices of one embedding, and with ``prior``
    centring the widest store: its ``domain`` cell comes before the last use, which centres in place),
    the classifier, and where the job scores the label-free criteria (``selection``) their copies of the
    capped samples (float64, held out and refitted: six copies)."""
    paths = ([none_pair] if none_pair else []) + list(adapted.values())
    shapes = [_shape(p) for p in paths]
    n_classes = len(np.unique(read_labels(paths[0], "source_labels")))
    held = sum(4 * (ns + nt) * w for ns, nt, w in shapes)
    ns, nt, width = max(shapes, key=lambda shape: shape[2])
    copied = [s for p, s in zip(paths, shapes) if center == "prior" or p == adapted.get(NESTED_KEY)]
    work = max((4 * (s[0] + s[1]) * s[2] for s in copied), default=0)
    work += max(_classifier_bytes(s[0], s[2], n_classes, solver) for s in shapes)
    if selection:
        work += CRITERIA_MB * _MB + 6 * 8 * width * (min(ns, selection.get("max_source_images", ns))
                                 + min(nt, selection.get("max_target_images", nt)))
    return max(MIN_MB, BASE_MB + int((held + work) / _MB))


def fit_pca_mb(sample_store, *, n_components: int = 256, block_memory_mb: float = 1024, threads: int = 1) -> int:
    """``fit_pca`` on a sample store of ``n`` maps of ``d`` values (:func:`layerfuse.reduce.fit_pca_sample`): a
    block of columns (``block_memory_mb``) per thread, with its ``n x n`` float32 Gram product, the summed
    ``n x n`` Gram matrix (float64, with its eigensolver's copy and workspace), the ``d x k`` float32 loadings
    and the ``n x k`` scores."""
    with h5py.File(_existing(sample_store), "r") as f:
        n, d = f["features"].shape[0], int(np.prod(f["features"].shape[1:]))
    k = min(n_components, max(n - 1, 1))
    jobs = max(1, int(threads))
    work = jobs * _fit_pca_thread_bytes(n, block_memory_mb) + 3 * 8 * n * n + 4 * d * k + 8 * n * k
    return max(MIN_MB, BASE_MB + int(work / _MB))


def fit_pca_threads(cores: int, *, n_sample: int, block_memory_mb: float = 1024,
                    budget_mb: float = PASS_BUDGET_MB) -> int:
    """``fit_pca``'s threads: ``cores``, but no more than the column blocks (one per thread, ``block_memory_mb``
    and its ``n x n`` float32 product, :func:`fit_pca_mb`) that fit ``budget_mb`` at a sample of ``n_sample``
    images, and at least one.  The model is the same bits on any number of threads, so the cap changes no
    result: it keeps a many-core machine from holding a gigabyte per core (``--cores 16``: 17 GB)."""
    return max(1, min(int(cores), int(budget_mb * _MB // _fit_pca_thread_bytes(n_sample, block_memory_mb))))


def _fit_pca_thread_bytes(n: int, block_memory_mb: float) -> float:
    """What each of ``fit_pca``'s threads holds: a block of columns and its ``n x n`` float32 Gram product."""
    return block_memory_mb * _MB + 4 * n * n


def fit_tca_mb(fused_pair, *, n_landmarks: int = 1000, auto_threshold: int = 3000, solver: str = "auto") -> int:
    """``fit_tca``: the stacked rows as read (in place, :func:`layerfuse.h5io.read_stacked_pair`), a kernel
    block widened to float64, and the Nyström map and its basis (``n x landmarks`` float64, twice); the
    exact solvers' ``n x n`` kernel and Gram matrices instead where they run."""
    ns, nt, width = _shape(fused_pair)
    n = ns + nt
    if solver == "exact" or solver == "dense" or (solver == "auto" and n <= auto_threshold):
        work = 3 * 8 * n * n
    else:
        work = 8 * min(KERNEL_BLOCK_ROWS, n) * width + 2 * 8 * n * min(n_landmarks, n)
    return max(MIN_MB, BASE_MB + int((4 * n * width + work) / _MB))


def fit_adapter_mb(fused_pair, spec: dict | None = None) -> int:
    """``fit_adapter`` of ``spec`` (an :func:`layerfuse.adapt.adapter_specs` entry): TCA's by
    :func:`fit_tca_mb`; skada's CORAL, Subspace Alignment, linear OT and JDA: the stacked rows widened to
    float64, the adapters' own copies and ``d x d`` covariances: 40 bytes a value, the most any of them
    took in docs/benchmarks.md's "Downstream at size"."""
    if spec is not None and spec.get("method") == "tca":
        return fit_tca_mb(fused_pair, **{k: spec[k] for k in ("n_landmarks", "auto_threshold", "solver") if k in spec})
    ns, nt, width = _shape(fused_pair)
    return max(MIN_MB, BASE_MB + int((40 * (ns + nt) * width + 3 * 8 * width * width) / _MB))
