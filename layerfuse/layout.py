"""Where the workflow's stores are and which rows of them an experiment reads.

A store's path says which feature set (and adapter) it holds: ``fused/<bb>/<fs>.h5``,
``scores/<bb>/<fs>.h5``, ``adapted/<bb>/<fs>/<adapter>.h5``, ``reduced/<bb>/<layer>/<reducer>.h5``,
``pca/<bb>/<layer>/<reducer>.h5``; an experiment that splits one dataset reads its rows of the
dataset's shared store, listed in its manifests.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from .h5io import read_arrays
from .images import read_manifest

__all__ = ["manifest_rows", "rows_in", "rows_of", "store_pair", "featureset_of", "store_of", "cell_predictions",
           "cell_decisions", "image_thumbnails", "report_folder"]


def report_folder(experiments) -> str:
    """``results/report/runs/<run>``: the folder of one run's landing page and config dump, named by the
    experiments it runs, so two configs in one working directory never share them.  Long lists end in a hash."""
    keys = sorted(experiments)
    name = "-".join(keys)
    if len(name) > 60:
        digest = hashlib.sha256("\0".join(keys).encode()).hexdigest()[:8]
        name = f"{'-'.join(keys[:2])[:40]}-and-{len(keys) - 2}-more-{digest}"
    return f"results/report/runs/{name}"


def manifest_rows(store, manifest) -> np.ndarray | None:
    """Rows of ``store`` holding the images kept in ``manifest``, in the manifest's order (None: all rows).

    This is how an experiment that splits one dataset reads its source or
    target from the dataset's shared store (extracted once for every seed).
    """
    if manifest is None:
        return None
    arrays, _ = read_arrays(store, ["image_ids", "labels"])
    return rows_in(arrays, store, manifest)


def rows_in(arrays: dict, store, manifest) -> np.ndarray | None:
    """:func:`manifest_rows` on a store's ``image_ids`` and ``labels`` already read."""
    if manifest is None:
        return None
    kept = [r for r in read_manifest(manifest) if r["status"] == "ok"]
    index = {image_id: i for i, image_id in enumerate(arrays["image_ids"])}
    missing = [r["image_id"] for r in kept if r["image_id"] not in index]
    if missing:
        raise ValueError(f"{store} has no row for {missing[0]!r} listed in {manifest} "
                         f"({len(missing)} missing): rebuild the store")
    rows = np.array([index[r["image_id"]] for r in kept], dtype=np.int64)
    if not np.array_equal(arrays["labels"][rows], np.array([int(r["label"]) for r in kept], dtype=np.int64)):
        raise ValueError(f"labels in {store} differ from {manifest}: rebuild the store")
    return rows


def rows_of(array: np.ndarray, rows):
    return array if rows is None else array[rows]


def store_pair(source_store, target_store, source_manifest=None, target_manifest=None):
    """(features, labels) of both domains; one store for both (a pool) is read once."""
    names = ["features", "labels", "image_ids"]
    s, _ = read_arrays(source_store, names)
    t = s if Path(source_store).resolve() == Path(target_store).resolve() else read_arrays(target_store, names)[0]
    rs, rt = rows_in(s, source_store, source_manifest), rows_in(t, target_store, target_manifest)
    return (rows_of(s["features"], rs), rows_of(t["features"], rt), rows_of(s["labels"], rs),
            rows_of(t["labels"], rt))


def featureset_of(path) -> str:
    """The feature set a store belongs to: ``fused/<bb>/<fs>.h5``, ``scores/<bb>/<fs>.h5``,
    ``adapted/<bb>/<fs>/<adapter>.h5``, ``reduced/<bb>/<layer>/<reducer>.h5``, ``pca/<bb>/<layer>/<reducer>.h5``."""
    p = Path(path)
    kind = p.parents[2].name
    if kind == "adapted":
        return p.parent.name
    if kind in ("reduced", "pca"):
        return f"{p.parent.name}-{p.stem}"
    return p.stem


def store_of(stores, featureset: str, adapter: str | None = None) -> str:
    """The store of ``featureset`` among a backbone's stores of one kind (of ``adapter``: ``adapted/``)."""
    for path in stores:
        if featureset_of(path) == featureset and adapter in (None, Path(path).stem):
            return str(path)
    raise ValueError(f"no store of feature set {featureset!r} among {list(stores)[:3]}…")


def cell_predictions(stores, featureset: str, adapter: str, center: str, *, refined: bool = False):
    """``(pred, margin, labels)`` of one cell from its feature set's predictions store (``refined``: its
    refined classifier's, ``selection.refine``)."""
    prefix = "refined_" if refined else ""
    with h5py.File(store_of(stores, featureset), "r") as f:
        k = json.loads(f.attrs["cells"]).index([adapter, center])
        if f"{prefix}pred" not in f:
            raise ValueError(f"{f.filename} holds no refined predictions: rerun the workflow")
        return f[f"{prefix}pred"][k], f[f"{prefix}margin"][k], f["labels"][()]


def cell_decisions(stores, featureset: str) -> dict:
    """``{(adapter, centring): decision values}`` of the cells of a feature set whose decision values its
    predictions store keeps (``selection.combine``'s voters; empty where it keeps none)."""
    with h5py.File(store_of(stores, featureset), "r") as f:
        cells = json.loads(f.attrs["cells"])
        rows = json.loads(f.attrs.get("decision_rows", "[]"))
        return {tuple(cells[r]): f["decisions"][i] for i, r in enumerate(rows)}


def image_thumbnails(images_store, manifest, wanted: set) -> dict:
    """{image id: uint8 RGB} of the ``wanted`` target images, from the (possibly pooled) image store."""
    if images_store is None or not wanted:
        return {}
    with h5py.File(images_store, "r") as f:
        ids = f["image_ids"].asstr()[()]
        rows = rows_in({"image_ids": ids, "labels": f["labels"][()]}, images_store, manifest)
        rows = np.arange(len(ids)) if rows is None else rows
        pick = sorted(int(r) for r in rows if ids[r] in wanted)
        return dict(zip(ids[pick], f["images"][pick])) if pick else {}
