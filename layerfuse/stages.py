"""One function per workflow rule: what ``workflow_scripts/*.py`` call.

Each takes plain paths and parameter dicts (the rule's ``params``), so every
stage runs and is tested without Snakemake.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import __version__
from .h5io import (atomic_path, open_feature_store, read_labels, read_pair, read_stacked_pair, write_meta, write_pair,
                   write_text_atomic)

__all__ = [
    "make_demo_data", "prepare_images", "prepare_weights", "extract_features", "manifest_rows", "reduce_layer",
    "reduce_pool_layer", "fuse_features", "fit_tca", "fit_adapter", "evaluate_svm", "aggregate_scores",
    "select_configuration", "export_model",
]

log = logging.getLogger("layerfuse")


def make_demo_data(out_dir, params: dict, size: int) -> None:
    from .synthetic import make_demo_dataset

    make_demo_dataset(out_dir, n_classes=params["n_classes"], n_source=params["n_source"],
                      n_target=params["n_target"], size=size, seed=params["seed"])


def prepare_images(domain: str, params: dict, manifest, store, memory_mb: float | None = None) -> dict:
    from .images import prepare_domain

    facts = prepare_domain(params["domains"], domain, size=params["image_size"], manifest_path=manifest,
                           store_path=store, keep=params["classes"], split=params.get("split"),
                           max_file_mb=params["max_file_mb"], memory_mb=memory_mb)
    log.info("%s: kept %d images, skipped %d; classes %s", domain, facts["kept"], facts["skipped"],
             facts["classes"])
    return facts


def prepare_weights(backbone: dict, tarball, out_pth, out_json) -> None:
    """Write the backbone's state_dict (``.pth``) and a JSON record (sha256, architecture …)."""
    import torch

    from .config import backbone_spec
    from .weights import NPM_PACKAGE, NPM_SHA256, convert_keras_tfjs, load_state_dict, sha256_file, \
        torchvision_state_dict

    w = backbone["weights"]
    if w == "keras-npm":
        sd, origin = convert_keras_tfjs(tarball), {"package": NPM_PACKAGE, "tarball_sha256": NPM_SHA256}
    elif w.startswith("IMAGENET1K_"):
        sd, origin = torchvision_state_dict(w), {"torchvision": w}  # downloads once
    else:
        sd, origin = load_state_dict(w), {"path": str(Path(w).resolve()), "sha256": sha256_file(w)}
    with atomic_path(out_pth) as tmp:
        torch.save(sd, tmp)
    record = {**backbone_spec(backbone), "weights": w, "origin": origin, "sha256": sha256_file(out_pth),
              "layerfuse_version": __version__}
    write_text_atomic(out_json, json.dumps(record, indent=2) + "\n")


def _recorded_backbone(weights_pth, weights_json):
    """(model, spec, record) for a weights file and its JSON record (hash checked)."""
    from .backbones import BackboneSpec
    from .extract import load_backbone

    record = json.loads(Path(weights_json).read_text())
    spec = BackboneSpec(record["architecture"], record["preprocessing"], record["maxpool_pad"])
    return load_backbone(weights_pth, spec, record["sha256"]), spec, record


def _pass_reductions(params: dict, pca_models) -> dict:
    """``{store key: (layer, function)}`` for the reductions ``params["reductions"]`` computes in the pass;
    a PCA reducer projects onto the loadings in its model (``.../pca/<backbone>/<layer>/<reducer>.h5``)."""
    from functools import partial

    from .reduce import StoredProjection, reduce_maps

    out = {}
    for key, (layer, spec) in (params.get("reductions") or {}).items():
        if spec["method"] == "pca":
            out[key] = (layer, StoredProjection(store_of(pca_models, key)))
        else:
            out[key] = (layer, partial(reduce_maps, method=spec["method"], params=spec))
    return out


def extract_features(images, weights_pth, weights_json, params: dict, outputs: dict, threads: int = 1,
                     rows: tuple[int, int] | None = None, pca_models=(), pca_in_pass: bool = False) -> dict:
    """Write ``outputs`` ({store key: path}) in one forward pass over ``images`` (or its ``rows``): a layer's
    store, or a reduction of a local block (``params["reductions"]``).  With ``params["pca_sample"]``, only
    PCA's fitting sample: that many source images (seeded, stratified; every image of a smaller source).
    A PCA reduction projects in a pass of its own through the early layers, holding one block's loadings
    at a time, unless ``pca_in_pass`` (``extract.pca_in_pass``): then in the main pass, holding them all."""
    from .extract import extract_features as extract_pass
    from .reduce import StoredProjection, pca_sample_rows

    image_rows = None
    if "pca_sample" in params:
        labels = read_labels(images)
        image_rows = pca_sample_rows(labels, params["pca_sample"], seed=0)
        if len(image_rows) < len(labels):
            log.info("PCA is fitted on %d of the %d source images (extract.pca_sample)", len(image_rows), len(labels))
    model, spec, record = _recorded_backbone(weights_pth, weights_json)
    ex = params["extract"]
    reductions = _pass_reductions(params, pca_models)
    return extract_pass(images, outputs, layers=params["layers"], model=model, spec=spec,
                        weights_sha256=record["sha256"], batch_size=ex["batch_size"],
                        precision=ex["precision"], local_dtype=ex["local_dtype"],
                        compression=ex["compression"], threads=threads, compile_model=ex["compile"], rows=rows,
                        image_rows=image_rows, reductions=reductions,
                        own_pass=() if pca_in_pass else [k for k, (_, fn) in reductions.items()
                                                         if isinstance(fn, StoredProjection)])


def extract_shard(images, weights_pth, weights_json, params: dict, outputs: dict, shard: int, shard_size: int,
                  threads: int = 1, pca_models=(), pca_in_pass: bool = False) -> dict:
    """Shard ``shard`` of a domain's pass: image rows ``shard * shard_size`` to ``(shard + 1) * shard_size``
    (a shard past the last image writes empty stores)."""
    size = int(shard_size)
    return extract_features(images, weights_pth, weights_json, params, outputs, threads,
                            rows=(shard * size, (shard + 1) * size), pca_models=pca_models, pca_in_pass=pca_in_pass)


def fit_pca(sample, images, reducer: dict, out) -> None:
    """PCA's mean and loadings from the sample's maps, with the sample's size and the source's in the
    attributes (``n_sample``, ``n_source``): projected onto in every image's extraction pass."""
    from .h5io import write_arrays
    from .reduce import fit_pca_sample

    fitted = fit_pca_sample(sample, reducer.get("n_components", 256), reducer.get("block_memory_mb", 1024))
    n_sample, n_source = len(read_labels(sample)), len(read_labels(images))
    write_arrays(out, fitted, {"reducer": json.dumps(reducer), "n_sample": n_sample, "n_source": n_source,
                               "layerfuse_version": __version__})


def gather_shards(images, weights_json, params: dict, shards: list[dict], outputs: dict) -> None:
    """The domain's stores ``outputs`` from its shards' (one ``{layer key: path}`` per shard, in order):
    byte for byte what :func:`extract_features` writes in one pass."""
    import h5py

    from .backbones import BackboneSpec
    from .extract import feature_store_attrs, gather_features

    record = json.loads(Path(weights_json).read_text())
    spec = BackboneSpec(record["architecture"], record["preprocessing"], record["maxpool_pad"])
    with h5py.File(images, "r") as src:
        image_list, size = src.attrs.get("image_list_sha256", ""), src["images"].shape[1]
    ex = params["extract"]
    node = {k: params["layers"][k] if k in params["layers"] else params["layers"][params["reductions"][k][0]]
            for k in outputs}
    attrs = {k: feature_store_attrs(k, node[k], spec, record["sha256"], "", image_list, size, batchnorm_folded=True)
             for k in outputs}
    gather_features(images, shards, outputs, attrs=attrs, batch_size=ex["batch_size"], local_dtype=ex["local_dtype"],
                    compression=ex["compression"])


def manifest_rows(store, manifest) -> np.ndarray | None:
    """Rows of ``store`` holding the images kept in ``manifest``, in the manifest's order (None: all rows).

    This is how an experiment that splits one dataset reads its source or
    target from the dataset's shared store (extracted once for every seed).
    """
    if manifest is None:
        return None
    from .h5io import read_arrays

    arrays, _ = read_arrays(store, ["image_ids", "labels"])
    return _rows_in(arrays, store, manifest)


def _rows_in(arrays: dict, store, manifest) -> np.ndarray | None:
    """:func:`manifest_rows` on a store's ``image_ids`` and ``labels`` already read."""
    if manifest is None:
        return None
    from .images import read_manifest

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


def _rows_of(array: np.ndarray, rows):
    return array if rows is None else array[rows]


def reduce_layer(source_store, target_store, reducer: dict, out, source_manifest=None, target_manifest=None) -> None:
    """Reduce a layer's maps; with manifests, source and target are those rows of the stores."""
    from .reduce import reduce_store_pair

    rows_s, rows_t = manifest_rows(source_store, source_manifest), manifest_rows(target_store, target_manifest)
    reduced = reduce_store_pair(source_store, target_store, reducer["method"], reducer, rows_s, rows_t)
    write_pair(out, reduced["source"], reduced["target"], _rows_of(read_labels(source_store), rows_s),
               _rows_of(read_labels(target_store), rows_t),
               {"reducer": json.dumps(reducer), "layerfuse_version": __version__},
               extra={"pca_coef": reduced["pca_coef"]} if "pca_coef" in reduced else None)


def reduce_pool_layer(store, reducer: dict, out) -> None:
    """A per-image reducer (flatten, pool2d) over every row of a pooled store, written as a store
    (``features``, ``labels``, ``image_ids``): each experiment splitting the dataset reads its rows."""
    from .h5io import read_arrays, write_arrays
    from .reduce import reduce_store_pair

    if reducer["method"] == "pca":
        raise ValueError("PCA is fitted on each experiment's source rows, not on a whole pool")
    reduced = reduce_store_pair(store, store, reducer["method"], reducer)["source"]
    meta, _ = read_arrays(store, ["labels", "image_ids"])
    write_arrays(out, {"features": reduced, **meta}, {"reducer": json.dumps(reducer), "layerfuse_version": __version__},
                 vectors=("features",))


def _store_pair(source_store, target_store, source_manifest=None, target_manifest=None):
    """(features, labels) of both domains; one store for both (a pool) is read once."""
    from .h5io import read_arrays

    names = ["features", "labels", "image_ids"]
    s, _ = read_arrays(source_store, names)
    t = s if Path(source_store).resolve() == Path(target_store).resolve() else read_arrays(target_store, names)[0]
    rs, rt = _rows_in(s, source_store, source_manifest), _rows_in(t, target_store, target_manifest)
    return (_rows_of(s["features"], rs), _rows_of(t["features"], rt), _rows_of(s["labels"], rs),
            _rows_of(t["labels"], rt))


def fuse_features(global_source, global_target, local_pair, scaling: str, out, source_manifest=None,
                  target_manifest=None, local_stores=None, global_pair=None) -> None:
    """Global features alone or concatenated with a reduced local block: a pair file of the
    experiment (``local_pair``), or ``local_stores``, the (source, target) stores of per-image vectors
    (one pooled store twice, or the extraction pass's stores where maps are not stored).

    ``global_pair``: the fused pair of the global features alone (this function's output without a
    local block).  Given with a local block, the global vectors are read from it (``global_source`` and
    ``global_target`` are not needed) and ``out`` holds the scaled block's columns only, with
    ``global_pair`` in its attributes: :func:`layerfuse.h5io.read_pair` puts the global columns first.

    ``source_manifest``/``target_manifest`` select the rows of every store (see :func:`manifest_rows`).
    """
    import os

    from .fusion import apply_scale, block_scale

    if global_pair is not None:
        if local_pair is None and local_stores is None:
            raise ValueError(f"{out}: global_pair extends a local block, and none was given")
        gs, gt, ys, yt, global_attrs = read_pair(global_pair)              # scaled already
        if global_attrs.get("scaling") != scaling or int(global_attrs.get("blocks", 1)) != 1:
            raise ValueError(f"{global_pair} is not the global features alone fused with scaling {scaling!r}")
        scales, columns = [json.loads(global_attrs["block_scales"])[0]], []
        attrs = {"global_pair": os.path.relpath(global_pair, Path(out).parent), "global_width": gs.shape[1]}
    else:
        gs, gt, ys, yt = _store_pair(global_source, global_target, source_manifest, target_manifest)
        scales = [block_scale(gs, scaling)]
        columns, attrs = [(apply_scale(gs, scaling, scales[0]), apply_scale(gt, scaling, scales[0]))], {}
    local_width = 0
    if local_pair is not None or local_stores is not None:
        if local_stores is not None:
            ls, lt, lys, lyt = _store_pair(*local_stores, source_manifest, target_manifest)
        else:
            ls, lt, lys, lyt, _ = read_pair(local_pair)
        if not (np.array_equal(lys, ys) and np.array_equal(lyt, yt)):
            raise ValueError(f"{local_pair or local_stores[0]} rows do not match the global features "
                             f"{global_pair or global_source}")
        scales.append(block_scale(ls, scaling))
        columns.append((apply_scale(ls, scaling, scales[-1]), apply_scale(lt, scaling, scales[-1])))
        local_width = ls.shape[1]
    # the blocks side by side, as layerfuse.fusion.fuse concatenates them
    xs, xt = (np.concatenate([c[side] for c in columns], axis=1) for side in (0, 1))
    write_pair(out, xs, xt, ys, yt, {"scaling": scaling, "blocks": len(scales), "local_width": local_width,
                                     "block_scales": json.dumps(scales), **attrs})


def fit_tca(fused, params: dict, out) -> None:
    """Fit TCA at the largest requested dimension (components are nested) and store the embedding."""
    from .tca import TCA, domain_labels

    X, ns, ys, yt, _ = read_stacked_pair(fused)        # the stack TCA fits on, read in place: no copy
    k = min(int(params["n_components"]), len(X))
    tca = TCA(k, kernel=params["kernel"], gamma=params["gamma"], bandwidth_factor=params["bandwidth_factor"],
              mu=params["mu"], solver=params["solver"], n_landmarks=params["n_landmarks"],
              auto_threshold=params["auto_threshold"])
    z = tca.fit_transform(X, sample_domain=domain_labels(ns, len(yt)))
    # coef and basis_rows (rows of the fused source-over-target stack): the out-of-sample map of a saved model
    write_pair(out, z[:ns], z[ns:], ys, yt,
               {"tca": json.dumps(params), "gamma_": tca.gamma_, "n_components_": k, "solver_": tca.solver_},
               extra={"coef": tca.coef_, "basis_rows": tca.basis_index_})


def fit_adapter(fused, spec: dict, out) -> None:
    """Fit one adapter (an ``adapters`` entry) on a fused pair and store the adapted features with the
    target's map (what a saved model applies: ``target_weight``/``target_bias`` of skada's affine maps,
    ``coef``/``basis_rows`` of JDA's kernel expansion).  An
    adapter that cannot be fitted writes a store with no features and the reason in attribute ``failed``:
    its cells are recorded as failed and the rest of the grid goes on."""
    from .adapt import AdapterFailure, fit_adapter as fit

    xs, xt, ys, yt, _ = read_pair(fused)
    attrs = {"adapter": json.dumps(spec), "layerfuse_version": __version__}
    try:
        fitted = fit(xs, ys, xt, spec)
    except AdapterFailure as exc:
        log.warning("%s: %s", fused, exc)
        write_pair(out, np.zeros((len(xs), 0)), np.zeros((len(xt), 0)), ys, yt, {**attrs, "failed": str(exc)})
        return
    write_pair(out, fitted["source"], fitted["target"], ys, yt, {**attrs, **fitted["info"], "failed": ""},
               extra=fitted["arrays"])


def _adapter_features(pairs: dict, adapter: str, features: dict):
    """``(xs, xt, ys, yt, dims, failed)`` of one adapter cell: the fused pair (``none``), the first ``dims``
    TCA components (``tca-<dims>``) or an ``adapters`` entry's store (``failed``: its reason, or "")."""
    if adapter.startswith("tca-"):
        dims = int(adapter.split("-", 1)[1])
        xs, xt, ys, yt, _ = pairs["tca"]
        if dims > xs.shape[1]:
            log.warning("%s: only %d components available for %s (recorded as n_components_used)",
                        features["tca"], xs.shape[1], adapter)
        return xs[:, :dims], xt[:, :dims], ys, yt, dims, ""
    xs, xt, ys, yt, attrs = pairs[adapter]
    return xs, xt, ys, yt, None, str(attrs.get("failed", ""))


def evaluate_svm(features: dict, adapters: list[str], svm: dict, meta: dict, out, predictions=None,
                 selection: dict | None = None, label_shift: dict | None = None) -> list[dict]:
    """Score every cell of one feature set: adapter (raw features ``none``, the first ``d`` TCA components
    ``tca-d``, or a configured adapter's features, named by its ``adapters`` key) x centring (each of
    :data:`layerfuse.evaluate.GRID_CENTERINGS`, and ``prior`` where ``svm["center"]`` is ``prior``), one
    linear SVM each; all rows in one CSV.  ``target_priors``: the target's class proportions estimated
    without labels (:mod:`layerfuse.label_shift`), for prior centring and for the global feature set
    without adaptation (the report's Class proportions).

    ``features`` maps ``"none"`` to the fused pair, ``"tca"`` to the TCA embedding (fitted once at
    the largest ``d``; components are nested) and each ``adapters`` key to its store, as far as
    ``adapters`` needs them.  An adapter that failed on the feature set gives rows with no scores
    and the reason in ``failed``.  ``predictions``: an HDF5 file for every cell's target predictions
    (``pred``, -1 for a failed cell) and SVM margins (``margin``), one row per cell in the CSV's order.
    ``selection`` (``criteria``, ``validation_size``, ``seed``, optionally ``max_*_images``): each cell
    also gets the label-free criteria of :mod:`layerfuse.select` as ``crit_<name>`` columns; with
    ``centerings`` only the cells at those centrings do (the others' columns are empty): the criteria are
    most of a large grid's time, and ``selection.scope: global`` picks at ``svm.center`` only.  ``label_shift``: keywords of the
    class-proportion estimate (``max_source_images``).
    """
    from .evaluate import GRID_CENTERINGS, center_domains, classify, svm_kwargs, target_metrics
    from .label_shift import estimate_target_priors
    from .report import write_score_rows
    from .select import criteria_scores

    pairs = {key: read_pair(path) for key, path in features.items()}
    layer, _, reducer = meta["featureset"].partition("-")
    local_width = (pairs["none"][4] if "none" in pairs else {}).get("local_width", "")
    svm_args = svm_kwargs(svm)
    centerings = GRID_CENTERINGS + (("prior",) if svm.get("center") == "prior" else ())
    rows, preds, margins, priors = [], [], [], {}
    scored = (selection or {}).get("centerings", centerings)
    no_crit = {f"crit_{k}": float("nan") for k in (selection or {}).get("criteria", ())}
    for adapter in adapters:
        xs, xt, ys, yt, dims, failed = _adapter_features(pairs, adapter, features)
        # the target's class proportions: for prior centring, and for the report (global features, no adapter)
        if not failed and ("prior" in centerings or (adapter == "none" and not reducer)):
            priors[adapter] = estimate_target_priors(xs, ys, xt, svm=svm_args, **(label_shift or {})).tolist()
        for center in centerings:
            if failed:
                pred, margin = np.full(len(yt), -1), np.full(len(yt), np.nan, np.float32)
                metrics = {**{k: float("nan") for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                           "n_source": len(ys), "n_target": len(yt)}
                crit = no_crit
            else:
                # the last centring of stored features needs them no more: centred in place, held once
                # (TCA's cells, those with dims, are column slices of one embedding that the next cell reads)
                last_use = center == centerings[-1] and dims is None
                cs, ct = center_domains(xs, xt, center, ys=ys, target_priors=priors.get(adapter), copy=not last_use)
                pred, margin = classify(cs, ys, ct, **svm_args)
                metrics = target_metrics(yt, pred, len(ys), n_classes=int(ys.max()) + 1)
                crit = no_crit
                if selection and center in scored:
                    crit = {f"crit_{k}": v for k, v in criteria_scores(
                        cs, ys, ct, svm=svm_args, criteria=selection["criteria"],
                        validation_size=selection["validation_size"], seed=selection["seed"],
                        **{k: selection[k] for k in ("max_target_images", "max_source_images") if k in selection}).items()}
            preds.append(pred)
            margins.append(margin)
            rows.append({**meta, "layer": layer, "reducer": reducer or "", "adapter": adapter, "center": center,
                         "n_components": dims if dims is not None else "",
                         "n_components_used": xs.shape[1] if dims is not None else "",
                         "local_width": local_width, **metrics, **crit, "failed": failed,
                         "target_priors": ";".join(f"{p:.4f}" for p in priors.get(adapter, []))})
    write_score_rows(out, rows)
    if predictions is not None:
        from .h5io import write_arrays

        write_arrays(predictions, {"pred": np.asarray(preds, np.int16), "margin": np.asarray(margins, np.float32),
                                   "labels": yt},
                     {"cells": json.dumps([[r["adapter"], r["center"]] for r in rows]),
                      "featureset": meta["featureset"], "target_priors": json.dumps(priors)})
    return rows


def data_section(manifests: dict, max_listed: int = 50) -> str:
    """Markdown: images kept per domain, skipped files with reasons, source/target duplicates."""
    from .images import manifest_summary

    s = manifest_summary(manifests)
    lines = ["### Data", "", "Images used: " + ", ".join(f"{d} {n}" for d, n in s["kept"].items())
             + f"; skipped: {len(s['skipped'])}.", ""]
    if s["duplicates"]:
        lines += [f"**Warning:** {len(s['duplicates'])} target image(s) are byte-identical to source images, "
                  "so the target leaks into training:", ""]
        lines += [f"- source `{a}` = target `{b}`" for a, b in s["duplicates"][:max_listed]] + [""]
    if s["dropped"]:
        lines += [f"Class folders not used ({len(s['dropped'])}):", ""]
        lines += [f"- {d} `{f}`: {r}" for d, f, r in s["dropped"][:max_listed]] + [""]
    if s["few"]:
        lines += ["**Warning:** classes with fewer than 2 usable images: "
                  + ", ".join(f"{d} `{c}` ({n})" for d, c, n in s["few"][:max_listed]) + ".", ""]
    if s["skipped"]:
        lines += ["| domain | file | reason |", "|---|---|---|"]
        lines += [f"| {d} | `{f}` | {r} |" for d, f, r in s["skipped"][:max_listed]]
        if len(s["skipped"]) > max_listed:
            lines.append(f"| … | {len(s['skipped']) - max_listed} more | see the manifests |")
        lines.append("")
    return "\n".join(lines)


def proportions_section(cells, manifests: dict, global_layer: str = "global", picks=None, max_classes: int = 30) -> str:
    """Markdown: each class's share of the source, the target's share estimated without labels (EM, the
    ``prior`` centring of the global features without adaptation) beside the true share where the target
    is labelled, and each class's recall at the default criterion's pick (a row of ``picks``), per backbone."""
    import pandas as pd

    from .images import manifest_classes, read_manifest

    names = manifest_classes(manifests["source"], manifests["target"])
    if not names or len(names) > max_classes or "target_priors" not in cells:
        return ""

    def shares(path):
        labels = [int(r["label"]) for r in read_manifest(path) if r["status"] == "ok" and int(r["label"]) >= 0]
        return np.bincount(labels, minlength=len(names)) / max(len(labels), 1) if labels else None

    source, target = shares(manifests["source"]), shares(manifests["target"])
    lines = ["### Class proportions", "", "The target's share of each class estimated without its labels (EM on "
             "calibrated source-classifier probabilities, global features, no adaptation; what `prior` centring "
             "uses; a test of whether the classes' shares moved), the truth where the target is labelled, and each class's recall at the default pick.", "",
             "| backbone | class | source | target, estimated | target, true | recall at the pick |",
             "|---|---|---|---|---|---|"]
    for backbone, group in cells.groupby("backbone", sort=True):
        est = group[(group["featureset"] == global_layer) & (group["adapter"] == "none")]
        est = [float(v) for v in str(est["target_priors"].iloc[0]).split(";")] if len(est) and \
            not pd.isna(est["target_priors"].iloc[0]) else None
        pick = group.iloc[:0]
        if picks is not None:
            for r in picks[(picks["backbone"] == backbone) & picks["default"].astype(bool)].itertuples():
                pick = group[(group["featureset"] == r.featureset) & (group["adapter"] == r.adapter)
                             & (group["center"] == r.center)]
        recall = str(pick["recall"].iloc[0]).split(";") if len(pick) and not pd.isna(pick["recall"].iloc[0]) else None
        for i, name in enumerate(names):
            pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
            lines.append(f"| {backbone} | {name} | {pct(source[i] if source is not None else None)} | "
                         f"{pct(est[i] if est and i < len(est) else None)} | "
                         f"{pct(target[i] if target is not None else None)} | "
                         f"{pct(float(recall[i]) if recall and i < len(recall) else None)} |")
    return "\n".join(lines) + "\n"


def _table_metrics(cells) -> tuple[str, ...]:
    """The metrics worth a table: balanced accuracy only where it differs from accuracy somewhere (with
    every target class the same size they are equal, and a second table would repeat the first)."""
    same = np.allclose(cells["accuracy"], cells["balanced_accuracy"], atol=5e-7, equal_nan=True)
    return ("accuracy",) if same else ("accuracy", "balanced_accuracy")


def aggregate_scores(score_csvs, out_csv, out_md, manifests: dict | None = None, center: str = "domain",
              selections=(), global_layer: str = "global", pca_models=()) -> str:
    """``accuracy.csv`` (every cell; ``selected_by`` names the criteria that picked it) and ``tables.md``:
    the paper's layout at the tables' centring ``center``, the label-free selection, PCA's fitting sample
    (``pca_models``: maps not stored), the Data section."""
    import pandas as pd

    from .report import gather_scores, paper_table, selection_markdown, table_markdown

    df = gather_scores(score_csvs)
    picks = pd.concat([pd.read_csv(p) for p in selections], ignore_index=True) if selections else None
    df["selected_by"] = ""
    if picks is not None:
        for r in picks[picks["kind"] == "criterion"].itertuples():
            hit = ((df["backbone"] == r.backbone) & (df["featureset"] == r.featureset)
                   & (df["adapter"] == r.adapter) & (df["center"] == r.center))
            df.loc[hit, "selected_by"] = [";".join(filter(None, [v, r.criterion])) for v in df.loc[hit, "selected_by"]]
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    parts = []
    tables = df[df["center"] == center]
    for (exp, backbone), group in tables.groupby(["experiment", "backbone"], sort=True):
        if group["accuracy"].isna().all():
            parts.append(f"### {exp} / {backbone}\n\nThe target is unlabelled: no accuracy; see the selection "
                         "and `predictions/`.\n")
            continue
        for metric in _table_metrics(group):
            parts.append(table_markdown(paper_table(group, metric, global_layer), f"{exp} / {backbone} / {metric} (%)"))
    parts.append(f"Tables: SVM centring `{center}` (`svm.center`); every cell is also scored with the other "
                 "centring in `accuracy.csv` (column `center`). **Bold**: a fusion above Global in the same row. "
                 "Balanced accuracy gets its own table where it differs from accuracy (an unbalanced target).\n")
    if picks is not None:
        parts.append(selection_markdown(picks))
    capped = df[df["n_components_used"].notna() & (df["n_components_used"] < df["n_components"])]
    if len(capped):
        parts.append("**TCA dims capped** (fewer usable images than components): "
                     + ", ".join(sorted({f"{r.backbone} {r.featureset} {r.adapter} used {int(r.n_components_used)}"
                                         for r in capped.itertuples()})) + ".\n")
    if pca_models:
        from .h5io import read_arrays

        fits = {}
        for path in pca_models:
            attrs = read_arrays(path, [])[1]
            fits.setdefault((int(attrs["n_sample"]), int(attrs["n_source"])), []).append(
                f"{Path(path).parent.parent.name} {Path(path).parent.name}")
        parts.append("**PCA fitted on** (maps not stored, `extract.pca_sample`): " + "; ".join(
            f"{n} of {total} source images ({', '.join(sorted(where))})" for (n, total), where in sorted(fits.items()))
            + ".\n")
    if manifests:
        parts.append(proportions_section(df, manifests, global_layer, picks))
    failed = df[df["failed"].astype("string").fillna("") != ""] if "failed" in df else df.iloc[:0]
    if len(failed):
        parts.append("**Adapter cells not scored** (`failed` in `accuracy.csv`): " + "; ".join(sorted(
            {f"{r.backbone} {r.featureset} {r.adapter}: {r.failed}" for r in failed.itertuples()})) + ".\n")
    if manifests:
        parts.append(data_section(manifests))
    text = "\n".join(parts)
    write_text_atomic(out_md, text)
    return text


def select_configuration(score_csvs, prediction_stores, source_manifest, target_manifest, params: dict,
                         outputs, target_images=None) -> "pd.DataFrame":
    """Each label-free criterion's pick among one backbone's cells; the default criterion's predictions.

    Writes ``outputs.selection`` (a row per criterion: the cell it picks, its score, and, where the target
    is labelled, its accuracy, balanced accuracy and regret against the oracle; plus the oracle, the Global
    cell without an adapter and the source-only Global cell), ``outputs.predictions`` (a row per target
    image: ``image`` relative to the target folder, ``predicted``, ``confidence`` = the SVM margin,
    ``cell``, and ``true`` where labelled), and the confusion matrix ``outputs.confusion`` /
    ``outputs.figure`` (true classes by predicted; one row ``unlabelled`` for an unlabelled target); with
    ``outputs.summary``, the report's Predictions page (thumbnails from the image store ``target_images``).
    """
    import pandas as pd

    from .images import manifest_classes, read_manifest
    from .report import gather_scores, plot_confusion
    from .select import selection_table

    sel = params["selection"]
    df = gather_scores(score_csvs)
    labelled = not df["accuracy"].isna().all()
    names = manifest_classes(source_manifest, target_manifest)
    out = selection_table(df, sel["criteria"], default=sel["default"], center=params["center"],
                          global_layer=params["global_layer"], scope=sel.get("scope", "global"))
    out.insert(0, "backbone", df["backbone"].iloc[0])
    out.insert(0, "experiment", df["experiment"].iloc[0])
    with atomic_path(outputs.selection) as tmp:
        out.drop(columns="row").to_csv(tmp, index=False, float_format="%.6f")

    pick = out.loc[out["default"].astype(bool), "row"]
    if pick.empty:
        raise ValueError(f"selection.default: {sel['default']!r} scored no cell (see the evaluate_svm logs); "
                         "choose another criterion")
    chosen = df.iloc[int(pick.iloc[0])]
    pred, margin, labels = cell_predictions(prediction_stores, chosen["featureset"], chosen["adapter"],
                                            chosen["center"])
    images = [r["image_id"] for r in read_manifest(target_manifest) if r["status"] == "ok"]
    if len(images) != len(pred):
        raise ValueError(f"{target_manifest} lists {len(images)} usable images, the predictions {len(pred)}: "
                         "rerun the workflow")
    table = pd.DataFrame({"image": images, "predicted": [names[i] for i in pred],
                          "confidence": margin, "cell": f"{chosen['featureset']}/{chosen['adapter']}/"
                                                        f"{chosen['center']}"})
    if labelled:
        table["true"] = [names[i] for i in labels]
    with atomic_path(outputs.predictions) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    truth = table["true"] if labelled else pd.Series(["unlabelled"] * len(table))
    confusion = pd.crosstab(pd.Categorical(truth, categories=names if labelled else ["unlabelled"]),
                            pd.Categorical(table["predicted"], categories=names), dropna=False)
    confusion.index.name, confusion.columns.name = "true", "predicted"
    with atomic_path(outputs.confusion) as tmp:
        confusion.to_csv(tmp)
    with atomic_path(outputs.figure) as tmp:
        plot_confusion(confusion, tmp, f"{chosen['experiment']} / {chosen['backbone']}: "
                                       f"{table['cell'].iloc[0]} (picked by {sel['default']})")
    if getattr(outputs, "summary", None):
        from .report import predictions_html

        per_class = 6
        shown = table.sort_values("confidence", ascending=False).groupby("predicted").head(per_class)["image"]
        html = predictions_html(f"{chosen['experiment']} / {chosen['backbone']}", out, table,
                                _thumbnails(target_images, target_manifest, set(shown)),
                                outputs.figure if labelled else None, per_class)
        write_text_atomic(outputs.summary, html)
    return out


def _thumbnails(images_store, manifest, wanted: set) -> dict:
    """{image id: uint8 RGB} of the ``wanted`` target images, from the (possibly pooled) image store."""
    if images_store is None or not wanted:
        return {}
    import h5py

    with h5py.File(images_store, "r") as f:
        ids = f["image_ids"].asstr()[()]
        rows = _rows_in({"image_ids": ids, "labels": f["labels"][()]}, images_store, manifest)
        rows = np.arange(len(ids)) if rows is None else rows
        pick = sorted(int(r) for r in rows if ids[r] in wanted)
        return dict(zip(ids[pick], f["images"][pick])) if pick else {}


def export_model(inputs: dict, params: dict, out_dir, cell: dict | None = None) -> dict:
    """The selected cell (or ``cell``) as a saved model folder: see :mod:`layerfuse.model`."""
    from .model import export_model as export

    return export(inputs, params, out_dir, cell)


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


def cell_predictions(stores, featureset: str, adapter: str, center: str):
    """``(pred, margin, labels)`` of one cell from its feature set's predictions store."""
    import h5py

    with h5py.File(store_of(stores, featureset), "r") as f:
        k = json.loads(f.attrs["cells"]).index([adapter, center])
        return f["pred"][k], f["margin"][k], f["labels"][()]


# the line of report/workflow.rst the landing table replaces (a Jinja comment: nothing where it stays)
LANDING_MARK = "{# at a glance: rule report_landing puts each experiment's results here #}"


def report_landing(intro, selection_csvs, params: dict, out) -> None:
    """The Snakemake report's landing page: ``intro`` (``report/workflow.rst``) and a table of every
    experiment's pick beside its source-only classifier, best cell and the paper's number
    (:func:`layerfuse.report.landing_rst`).  ``selection_csvs``: every ``results/<experiment>/selection/
    <backbone>.csv``; ``params``: ``paper_tables`` (``{experiment: table id or None}``) and ``finetuned``
    (backbone keys)."""
    import pandas as pd

    from .report import landing_rst

    selections = {(Path(path).parents[1].name, Path(path).stem): pd.read_csv(path) for path in selection_csvs}
    glance = ("At a glance: accuracy (%) on each target of the cell picked without its labels, beside the "
              "classifier that never saw the target (no adapter, no centring), the best cell of the grid and the "
              "paper's number.\n\n" + landing_rst(selections, params["paper_tables"], params.get("finetuned", ())))
    text = Path(intro).read_text()
    if LANDING_MARK not in text:
        raise ValueError(f"{intro}: no line {LANDING_MARK!r} to put the results at")
    write_text_atomic(out, text.replace(LANDING_MARK, glance.rstrip("\n")))


def report_group(accuracy_csvs, params: dict, out_md, out_fusion_png, out_dims_png, out_html=None) -> str:
    """Tables (mean ± std over the group's experiments), the paper's numbers beside ours, two figures."""
    import pandas as pd

    from .report import (comparison_markdown, group_table, markdown_html, paper_backbone, paper_comparison,
                         plot_accuracy_vs_dims, plot_fusion_vs_global, plot_message, table_markdown)

    df = pd.concat([pd.read_csv(p) for p in accuracy_csvs], ignore_index=True)
    df = df[df["center"] == params.get("center", "domain")]
    group, table_id = params["group"], params.get("paper_table")
    n = df["experiment"].nunique()
    parts = [f"# {group}", "", f"{n} experiment(s): {', '.join(sorted(df['experiment'].unique()))}.", ""]
    accuracy_tables = {}
    for backbone, bdf in df.groupby("backbone", sort=True):
        if bdf["accuracy"].isna().all():
            parts.append(f"{backbone}: the target is unlabelled, no accuracy (predictions in "
                         "`results/<experiment>/predictions/`).\n")
            continue
        for metric in _table_metrics(bdf):
            mean, std = group_table(bdf, metric, params.get("global_layer", "global"))
            parts.append(table_markdown(mean, f"{backbone}: {metric} (%), mean over {n} run(s)"))
            if n > 1:
                parts.append(table_markdown(std, f"{backbone}: {metric} standard deviation (points)"))
            if metric == "accuracy" and table_id:
                comp = paper_comparison(mean, table_id, paper_backbone(backbone, params.get("finetuned", ())))
                parts.append(comparison_markdown(comp, f"{backbone}: ours / paper Table {table_id} (difference)"))
            if metric == "accuracy":
                accuracy_tables[backbone] = mean
    if accuracy_tables:
        with atomic_path(out_fusion_png) as tmp:
            plot_fusion_vs_global(accuracy_tables, tmp, group)
        with atomic_path(out_dims_png) as tmp:
            plot_accuracy_vs_dims(accuracy_tables, tmp, group)
    else:                                                 # outputs of the rule: say why they are empty
        for path in (out_fusion_png, out_dims_png):
            with atomic_path(path) as tmp:
                plot_message(tmp, f"{group}: the target is unlabelled, no accuracy to plot")
    text = "\n".join(parts)
    write_text_atomic(out_md, text)
    if out_html is not None:
        write_text_atomic(out_html, markdown_html(text, group))
    return text


def dump_config(config: dict, out) -> None:
    """Write the effective (validated, defaults filled) configuration, for the report."""
    import yaml

    write_text_atomic(out, yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=True))


def finetune_backbone(images, base_pth, base_json, params: dict, outputs, threads: int = 1,
                      global_layer: str = "global") -> list:
    """Fine-tune ``params['trainable']`` of the base backbone on the source images only.

    ``outputs`` has ``pth``, ``record``, ``curve``, ``plot`` and optionally
    ``source_global``: the fine-tuned network's ``flatten`` features of the
    source, computed from the cached activations (stored as layer ``global_layer``).
    """
    import h5py
    import torch

    from .backbones import resolve_precision
    from .extract import feature_store_attrs
    from .finetune import FinetuneConfig, finetune_tail, merge_tail, tail_features, write_history
    from .weights import sha256_file

    torch.set_num_threads(int(threads))
    model, spec, record = _recorded_backbone(base_pth, base_json)
    with h5py.File(images, "r") as f:
        x, y = f["images"][()], f["labels"][()]
        image_ids, image_list_sha256 = f["image_ids"].asstr()[()], f.attrs.get("image_list_sha256", "")
    cfg = FinetuneConfig(**{k: v for k, v in params.items() if k != "base"})
    tail, cached, history = finetune_tail(model, x, y, spec, cfg)
    with atomic_path(outputs.pth) as tmp:
        torch.save(merge_tail(model, tail, cfg.trainable), tmp)
    out = {**{k: record[k] for k in ("architecture", "preprocessing", "maxpool_pad")},
           "weights": "finetune", "base_sha256": record["sha256"], "finetune": params,
           "sha256": sha256_file(outputs.pth), "final_loss": history[-1]["loss"],
           "final_source_accuracy": history[-1]["source_accuracy"],
           "precision_used": resolve_precision(cfg.precision), "layerfuse_version": __version__}
    if "source_global" in outputs.keys():
        # the source's global store from the cache: no second pass over the images
        features = tail_features(tail, cached)
        with atomic_path(outputs.source_global) as tmp:
            f, dset = open_feature_store(tmp, features.shape, "float32", None)
            with f:
                dset[...] = features
                write_meta(f, y, image_ids, feature_store_attrs(
                    global_layer, "flatten", spec, out["sha256"], out["precision_used"], image_list_sha256,
                    x.shape[1], compiled=False, computed_from="fine-tuning cache"))
    write_text_atomic(outputs.record, json.dumps(out, indent=2) + "\n")
    write_history(history, outputs.curve, outputs.plot)
    log.info("fine-tuned %s: final loss %.4f, source accuracy %.3f", params["trainable"], history[-1]["loss"],
             history[-1]["source_accuracy"])
    return history
