"""Which method the linear SVM runs, and the rows the estimators hold at a time.

:mod:`layerfuse.svm` and :mod:`layerfuse.tca` read these; so does :mod:`layerfuse.job_memory`, which the Snakefile
imports to size each job: this module needs nothing beyond the standard library, so planning a workflow (every
Snakemake process, one per job on a cluster) does not load scikit-learn.
"""
from __future__ import annotations

__all__ = ["SOLVERS", "resolve_solver", "SQUARED_BLOCK_ROWS", "KERNEL_BLOCK_ROWS"]

SOLVERS = ("auto", "newton", "liblinear")
SQUARED_BLOCK_ROWS = 8192    # the SVM's rows squared at a time for its preconditioner (a float32 copy of this many)
KERNEL_BLOCK_ROWS = 8192     # rows of TCA's Nyström map built at a time (a float64 copy of this many rows)


def resolve_solver(solver: str, n_samples: int, n_features: int) -> str:
    """The method the SVM's ``solver`` runs on an ``n_samples x n_features`` source: ``auto`` is liblinear where
    images <= features (``LinearSVC``'s dual), the Newton method elsewhere."""
    if solver == "liblinear" or (solver == "auto" and n_samples <= n_features):
        return "liblinear"
    return "newton"
