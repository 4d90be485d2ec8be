"""Stages of rules/reduce.smk: local blocks reduced from stored maps."""
from __future__ import annotations

import json

from .. import __version__
from ..h5io import read_arrays, read_labels, write_arrays, write_pair
from ..layout import manifest_rows, rows_of
from ..reduce import is_fitted, reduce_store_pair



def reduce_layer(source_store, target_store, reducer: dict, out, source_manifest=None, target_manifest=None) -> None:
    """Reduce a layer's maps; with manifests, source and target are those rows of the stores."""
    rows_s, rows_t = manifest_rows(source_store, source_manifest), manifest_rows(target_store, target_manifest)
    reduced = reduce_store_pair(source_store, target_store, reducer["method"], reducer, rows_s, rows_t)
    write_pair(out, reduced["source"], reduced["target"], rows_of(read_labels(source_store), rows_s),
               rows_of(read_labels(target_store), rows_t),
               {"reducer": json.dumps(reducer), "layerfuse_version": __version__},
               extra={"pca_coef": reduced["pca_coef"]} if "pca_coef" in reduced else None)


def reduce_pool_layer(store, reducer: dict, out) -> None:
    """A per-image reducer (flatten, pool2d) over every row of a pooled store, written as a store
    (``features``, ``labels``, ``image_ids``): each experiment splitting the dataset reads its rows."""
    if is_fitted(reducer):
        raise ValueError(f"{reducer['method'].upper()} is fitted on each experiment's source rows, not on a whole pool")
    reduced = reduce_store_pair(store, store, reducer["method"], reducer)["source"]
    meta, _ = read_arrays(store, ["labels", "image_ids"])
    write_arrays(out, {"features": reduced, **meta}, {"reducer": json.dumps(reducer), "layerfuse_version": __version__},
                 vectors=("features",))
