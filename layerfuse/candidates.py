"""Which grid cells the label-free criteria score and may pick (``selection.scope``).

Kept apart from :mod:`layerfuse.select`, whose scorers need scikit-learn and skada: the Snakefile reads
:func:`scoring_settings` while it plans every feature set's job, and each Snakemake process (one per job on
a cluster) parses the Snakefile.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SCOPES", "candidate_cells", "scoring_settings"]

SCOPES = ("global", "all")


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"selection.scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def candidate_cells(cells, scope: str, *, center: str, global_layer: str) -> np.ndarray:
    """The cells a criterion may pick: ``global``, the global feature set's adapters at the tables'
    centring ``center``; ``all``, every cell."""
    _check_scope(scope)
    if scope == "all":
        return np.ones(len(cells), bool)
    return ((cells["featureset"] == global_layer) & (cells["center"] == center)).to_numpy()


def scoring_settings(selection: dict, featureset: str, *, scope: str, center: str, global_layer: str,
                     vote_members: str = "featureset", default: str = "dev"):
    """The criteria's settings for one feature set's ``evaluate_svm`` (``selection`` as given, None where
    no cell of it is scored): with scope ``global``, ``centerings`` limits them to the cells
    :func:`candidate_cells` lets the selection pick, at ``center`` (the criteria are most of a large
    grid's time), and where the vote takes every feature set's cells (``vote_members: all``) the other
    feature sets' cells at ``center`` are scored by the ``default`` criterion alone (their weights in the vote)
    and refined; with ``all``, every cell."""
    _check_scope(scope)
    if scope == "all":
        return selection
    if featureset == global_layer:
        return {**selection, "centerings": [center]}
    if vote_members == "all" and (selection.get("combine") or {}).get("method", "none") != "none":
        return {**selection, "criteria": [default], "centerings": [center]}
    return None
