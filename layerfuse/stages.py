"""One function per workflow rule: what ``workflow_scripts/*.py`` call.

Each takes plain paths and parameter dicts (the rule's ``params``), so every
stage runs and is tested without Snakemake.
"""
from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from . import __version__, adapt
from . import model as saved_model
from .config import backbone_spec
from .evaluate import score_grid
from .fusion import fuse_stores
from .h5io import (atomic_path, read_arrays, read_labels, read_pair, read_stacked_pair, write_arrays, write_pair,
                   write_text_atomic)
from .images import manifest_classes, prepare_domain
from .layout import image_thumbnails, manifest_rows, rows_of, store_of
from .reduce import StoredProjection, fit_pca_sample, is_fitted, pca_sample_rows, reduce_maps, reduce_store_pair
from .report import (gather_scores, group_markdown, landing_rst, markdown_html, plot_accuracy_vs_dims, plot_confusion,
                     plot_fusion_vs_global, plot_message, predictions_html, tables_markdown, write_score_rows)
from .select import confusion_table, picked_predictions, selection_table
from .synthetic import make_demo_dataset
from .weights import write_weights

__all__ = ["make_demo_data", "prepare_images", "prepare_weights", "extract_features", "extract_shard", "fit_pca",
           "gather_shards", "reduce_layer", "reduce_pool_layer", "fuse_features", "fit_adapter", "evaluate_svm",
           "aggregate_scores", "select_configuration", "export_model", "report_landing", "report_group",
           "dump_config", "finetune_backbone"]

log = logging.getLogger("layerfuse")


def make_demo_data(out_dir, params: dict, size: int) -> None:
    make_demo_dataset(out_dir, n_classes=params["n_classes"], n_source=params["n_source"],
                      n_target=params["n_target"], size=size, seed=params["seed"])


def prepare_images(domain: str, params: dict, manifest, store, memory_mb: float | None = None) -> dict:
    facts = prepare_domain(params["domains"], domain, size=params["image_size"], manifest_path=manifest,
                           store_path=store, keep=params["classes"], split=params.get("split"),
                           max_file_mb=params["max_file_mb"], memory_mb=memory_mb)
    log.info("%s: kept %d images, skipped %d; classes %s", domain, facts["kept"], facts["skipped"],
             facts["classes"])
    return facts


def prepare_weights(backbone: dict, tarball, out_pth, out_json) -> None:
    """Write the backbone's state_dict (``.pth``) and a JSON record (sha256, architecture …)."""
    write_weights(backbone["weights"], tarball, out_pth, out_json, {**backbone_spec(backbone),
                                                                    "layerfuse_version": __version__})


def _pass_reductions(params: dict, pca_models) -> dict:
    """``{store key: (layer, function)}`` for the reductions ``params["reductions"]`` computes in the pass;
    a PCA reducer projects onto the loadings in its model (``.../pca/<backbone>/<layer>/<reducer>.h5``)."""
    out = {}
    for key, (layer, spec) in (params.get("reductions") or {}).items():
        if is_fitted(spec):
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
    from .extract import extract_features as extract_pass, load_recorded_backbone  # torch: the network's stages

    image_rows = None
    if "pca_sample" in params:
        labels = read_labels(images)
        image_rows = pca_sample_rows(labels, params["pca_sample"], seed=0)
        if len(image_rows) < len(labels):
            log.info("PCA is fitted on %d of the %d source images (extract.pca_sample)", len(image_rows), len(labels))
    model, spec, record = load_recorded_backbone(weights_pth, weights_json)
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
    fitted = fit_pca_sample(sample, **{k: reducer[k] for k in ("n_components", "block_memory_mb") if k in reducer})
    n_sample, n_source = len(read_labels(sample)), len(read_labels(images))
    write_arrays(out, fitted, {"reducer": json.dumps(reducer), "n_sample": n_sample, "n_source": n_source,
                               "layerfuse_version": __version__})


def gather_shards(images, weights_json, params: dict, shards: list[dict], outputs: dict) -> None:
    """The domain's stores ``outputs`` from its shards' (one ``{layer key: path}`` per shard, in order):
    byte for byte what :func:`extract_features` writes in one pass."""
    from .extract import BackboneSpec, feature_store_attrs, gather_features  # torch: the network's stages only

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
    xs, xt, ys, yt, attrs = fuse_stores(global_source, global_target, local_pair, scaling, out, source_manifest,
                                        target_manifest, local_stores, global_pair)
    write_pair(out, xs, xt, ys, yt, attrs)


def fit_adapter(fused, spec: dict, out) -> None:
    """Fit one adapter (TCA at its largest dimension, or an ``adapters`` entry: :mod:`layerfuse.adapt`) on a
    fused pair and store the adapted features with the target's map (what a saved model applies).  An
    adapter that cannot be fitted writes a store with no features and the reason in attribute ``failed``:
    its cells are recorded as failed and the rest of the grid goes on."""
    X, ns, ys, yt, _ = read_stacked_pair(fused)        # the stack the adapter fits on, read in place: no copy
    attrs = {"adapter": json.dumps(spec), "layerfuse_version": __version__}
    try:
        fitted = adapt.fit_adapter(X, ns, ys, spec)
    except adapt.AdapterFailure as exc:
        log.warning("%s: %s", fused, exc)
        write_pair(out, np.zeros((ns, 0)), np.zeros((len(yt), 0)), ys, yt, {**attrs, "failed": str(exc)})
        return
    if fitted["attrs"]["map_error"]:
        log.warning("%s: %s: scored, but no candidate of the label-free pick", fused, fitted["attrs"]["map_error"])
    write_pair(out, fitted["source"], fitted["target"], ys, yt, {**attrs, **fitted["attrs"], "failed": ""},
               extra=fitted["arrays"])


def evaluate_svm(features: dict, adapters: list[str], svm: dict, meta: dict, out, predictions=None,
                 selection: dict | None = None, label_shift: dict | None = None) -> list[dict]:
    """Score every cell of one feature set (:func:`layerfuse.evaluate.score_grid`); all rows in one CSV.

    ``features`` maps ``"none"`` to the fused pair and each fitted adapter's store key (``tca``, the
    ``adapters`` keys) to its store, as far as the cells ``adapters`` need them.  ``predictions``: an HDF5
    file for every cell's target predictions (``pred``, -1 for a failed cell) and SVM margins
    (``margin``), one row per cell in the CSV's order.
    """
    pairs = {key: read_pair(path) for key, path in features.items()}
    rows, preds, margins, priors = score_grid(pairs, adapters, svm, meta, selection=selection,
                                              label_shift=label_shift)
    write_score_rows(out, rows)
    if predictions is not None:
        write_arrays(predictions, {"pred": np.asarray(preds, np.int16), "margin": np.asarray(margins, np.float32),
                                   "labels": pairs[next(iter(pairs))][3]},
                     {"cells": json.dumps([[r["adapter"], r["center"]] for r in rows]),
                      "featureset": meta["featureset"], "target_priors": json.dumps(priors)})
    return rows


def aggregate_scores(score_csvs, out_csv, out_md, manifests: dict | None = None, center: str = "domain",
                     selections=(), global_layer: str = "global", pca_models=()) -> str:
    """``accuracy.csv`` (every cell; ``selected_by`` names the criteria that picked it) and ``tables.md``
    (:func:`layerfuse.report.tables_markdown`)."""
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
    pca_fits = {path: read_arrays(path, [])[1] for path in pca_models}
    text = tables_markdown(df, picks, center=center, global_layer=global_layer, pca_fits=pca_fits, manifests=manifests)
    write_text_atomic(out_md, text)
    return text


def select_configuration(score_csvs, prediction_stores, source_manifest, target_manifest, params: dict,
                         outputs, target_images=None):
    """Each label-free criterion's pick among one backbone's cells; the default criterion's predictions.

    Writes ``outputs.selection`` (a row per criterion: the cell it picks, its score, and, where the target
    is labelled, its accuracy, balanced accuracy and regret against the oracle; plus the oracle, the Global
    cell without an adapter and the source-only Global cell), ``outputs.predictions`` (a row per target
    image: ``image`` relative to the target folder, ``predicted``, ``confidence`` = the SVM margin,
    ``cell``, and ``true`` where labelled), and the confusion matrix ``outputs.confusion`` /
    ``outputs.figure`` (true classes by predicted; one row ``unlabelled`` for an unlabelled target); with
    ``outputs.summary``, the report's Predictions page (thumbnails from the image store ``target_images``).
    """
    sel = params["selection"]
    df = gather_scores(score_csvs)
    labelled = not df["accuracy"].isna().all()
    names = manifest_classes(source_manifest, target_manifest)
    out = selection_table(df, sel["criteria"], default=sel["default"], center=params["center"],
                          global_layer=params["global_layer"], scope=sel["scope"])
    out.insert(0, "backbone", df["backbone"].iloc[0])
    out.insert(0, "experiment", df["experiment"].iloc[0])
    with atomic_path(outputs.selection) as tmp:
        out.drop(columns="row").to_csv(tmp, index=False, float_format="%.6f")

    chosen, table = picked_predictions(df, out, prediction_stores, target_manifest, names,
                                       default=sel["default"])
    with atomic_path(outputs.predictions) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    confusion = confusion_table(table, names)
    with atomic_path(outputs.confusion) as tmp:
        confusion.to_csv(tmp)
    with atomic_path(outputs.figure) as tmp:
        plot_confusion(confusion, tmp, f"{chosen['experiment']} / {chosen['backbone']}: "
                                       f"{table['cell'].iloc[0]} (picked by {sel['default']})")
    if getattr(outputs, "summary", None):
        per_class = 6
        shown = table.sort_values("confidence", ascending=False).groupby("predicted").head(per_class)["image"]
        html = predictions_html(f"{chosen['experiment']} / {chosen['backbone']}", out, table,
                                image_thumbnails(target_images, target_manifest, set(shown)),
                                outputs.figure if labelled else None, per_class)
        write_text_atomic(outputs.summary, html)
    return out


def export_model(inputs: dict, params: dict, out_dir, cell: dict | None = None) -> dict:
    """The selected cell (or ``cell``) as a saved model folder: see :mod:`layerfuse.model`."""
    return saved_model.export_model(inputs, params, out_dir, cell)


# the line of report/workflow.rst the landing table replaces (a Jinja comment: nothing where it stays)
LANDING_MARK = "{# at a glance: rule report_landing puts each experiment's results here #}"


def report_landing(intro, selection_csvs, params: dict, out) -> None:
    """The Snakemake report's landing page: ``intro`` (``report/workflow.rst``) and a table of every
    experiment's pick beside its source-only classifier, best cell and the paper's number
    (:func:`layerfuse.report.landing_rst`).  ``selection_csvs``: every ``results/<experiment>/selection/
    <backbone>.csv``; ``params``: ``paper_tables`` (``{experiment: table id or None}``) and ``finetuned``
    (backbone keys)."""
    selections = {(Path(path).parents[1].name, Path(path).stem): pd.read_csv(path) for path in selection_csvs}
    glance = ("At a glance: accuracy (%) on each target of the cell picked without its labels, beside the "
              "classifier that never saw the target (no adapter, no centring), the best cell of the grid and the "
              "paper's number.\n\n" + landing_rst(selections, params["paper_tables"], params.get("finetuned", ())))
    text = Path(intro).read_text()
    if LANDING_MARK not in text:
        raise ValueError(f"{intro}: no line {LANDING_MARK!r} to put the results at")
    write_text_atomic(out, text.replace(LANDING_MARK, glance.rstrip("\n")))


def report_group(accuracy_csvs, params: dict, out_md, out_fusion_png, out_dims_png, out_html=None) -> str:
    """Tables (mean ± std over the group's experiments), the paper's numbers beside ours, two figures
    (:func:`layerfuse.report.group_markdown`)."""
    group = params["group"]
    text, accuracy_tables = group_markdown(pd.concat([pd.read_csv(p) for p in accuracy_csvs], ignore_index=True),
                                           params)
    if accuracy_tables:
        with atomic_path(out_fusion_png) as tmp:
            plot_fusion_vs_global(accuracy_tables, tmp, group)
        with atomic_path(out_dims_png) as tmp:
            plot_accuracy_vs_dims(accuracy_tables, tmp, group)
    else:                                                 # outputs of the rule: say why they are empty
        for path in (out_fusion_png, out_dims_png):
            with atomic_path(path) as tmp:
                plot_message(tmp, f"{group}: the target is unlabelled, no accuracy to plot")
    write_text_atomic(out_md, text)
    if out_html is not None:
        write_text_atomic(out_html, markdown_html(text, group))
    return text


def dump_config(config: dict, out) -> None:
    """Write the effective (validated, defaults filled) configuration, for the report."""
    write_text_atomic(out, yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=True))


def finetune_backbone(images, base_pth, base_json, params: dict, outputs, threads: int = 1,
                      global_layer: str = "global") -> list:
    """Fine-tune ``params['trainable']`` of the base backbone on the source images only.

    ``outputs`` has ``pth``, ``record``, ``curve``, ``plot`` and optionally
    ``source_global``: the fine-tuned network's ``flatten`` features of the
    source, computed from the cached activations (stored as layer ``global_layer``).
    """
    import torch  # torch, and the network's modules, load in the network's stages only (2 s)

    from .extract import load_recorded_backbone  # torch: as above
    from .finetune import finetune_and_record  # torch: as above

    torch.set_num_threads(int(threads))
    model, spec, record = load_recorded_backbone(base_pth, base_json)
    return finetune_and_record(images, model, spec, record, params, outputs, global_layer)
