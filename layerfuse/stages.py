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
from .h5io import atomic_path, read_labels, read_pair, write_pair, write_text_atomic

__all__ = [
    "make_demo_data", "prepare_images", "prepare_weights", "extract_layer", "reduce_layer",
    "fuse_featureset", "fit_tca", "score_cell", "summarize",
]

log = logging.getLogger("layerfuse")


def make_demo_data(out_dir, params: dict, size: int) -> None:
    from .synthetic import make_demo_dataset

    make_demo_dataset(out_dir, n_classes=params["n_classes"], n_source=params["n_source"],
                      n_target=params["n_target"], size=size, seed=params["seed"])


def prepare_images(domain: str, params: dict, manifest, store) -> dict:
    from .images import prepare_domain

    facts = prepare_domain(params["domains"], domain, size=params["image_size"], manifest_path=manifest,
                           store_path=store, keep=params["classes"], split=params.get("split"))
    log.info("%s: kept %d images, skipped %d; classes %s", domain, facts["kept"], facts["skipped"],
             facts["classes"])
    return facts


def prepare_weights(backbone: dict, tarball, out_pth, out_json) -> None:
    """Write the backbone's state_dict (``.pth``) and a JSON record (sha256, architecture …)."""
    import torch

    from .config import backbone_spec
    from .weights import NPM_PACKAGE, NPM_SHA256, convert_keras_tfjs, load_state_dict, sha256_file

    w = backbone["weights"]
    if w == "keras-npm":
        sd, origin = convert_keras_tfjs(tarball), {"package": NPM_PACKAGE, "tarball_sha256": NPM_SHA256}
    elif w.startswith("IMAGENET1K_"):
        from torchvision.models import ResNet50_Weights

        sd = ResNet50_Weights[w].get_state_dict(progress=False)  # needs internet once
        origin = {"torchvision": w}
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


def extract_layer(images, weights_pth, weights_json, layer: str, params: dict, out, threads: int = 1) -> dict:
    from .extract import extract_features

    model, spec, record = _recorded_backbone(weights_pth, weights_json)
    ex = params["extract"]
    return extract_features(images, {layer: out}, layers=params["layers"], model=model, spec=spec,
                            weights_sha256=record["sha256"], batch_size=ex["batch_size"],
                            precision=ex["precision"], local_dtype=ex["local_dtype"],
                            compression=ex["compression"], threads=threads, compile_model=ex["compile"])


def reduce_layer(source_store, target_store, reducer: dict, out) -> None:
    from .reduce import reduce_store_pair

    reduced = reduce_store_pair(source_store, target_store, reducer["method"], reducer)
    write_pair(out, reduced["source"], reduced["target"], read_labels(source_store), read_labels(target_store),
               {"reducer": json.dumps(reducer), "layerfuse_version": __version__})


def _global_pair(source_store, target_store):
    from .h5io import read_arrays

    s, _ = read_arrays(source_store, ["features", "labels"])
    t, _ = read_arrays(target_store, ["features", "labels"])
    return s["features"], t["features"], s["labels"], t["labels"]


def fuse_featureset(global_source, global_target, local_pair, scaling: str, out) -> None:
    """Global features alone (``local_pair=None``) or concatenated with a reduced local block."""
    from .fusion import fuse

    gs, gt, ys, yt = _global_pair(global_source, global_target)
    blocks = [(gs, gt)]
    if local_pair is not None:
        ls, lt, lys, lyt, _ = read_pair(local_pair)
        if not (np.array_equal(lys, ys) and np.array_equal(lyt, yt)):
            raise ValueError(f"{local_pair} rows do not match the global stores {global_source}")
        blocks.append((ls, lt))
    xs, xt = fuse(blocks, scaling)
    write_pair(out, xs, xt, ys, yt, {"scaling": scaling, "blocks": len(blocks)})


def fit_tca(fused, params: dict, out) -> None:
    """Fit TCA at the largest requested dimension (components are nested) and store the embedding."""
    from .tca import TCA

    xs, xt, ys, yt, _ = read_pair(fused)
    n = len(xs) + len(xt)
    k = min(int(params["n_components"]), n)
    tca = TCA(k, kernel=params["kernel"], gamma=params["gamma"], bandwidth_factor=params["bandwidth_factor"],
              mu=params["mu"], solver=params["solver"], n_landmarks=params["n_landmarks"],
              auto_threshold=params["auto_threshold"])
    z = tca.fit_transform(np.vstack([xs, xt]), np.r_[np.zeros(len(xs)), -np.ones(len(xt))])
    write_pair(out, z[:len(xs)], z[len(xs):], ys, yt,
               {"tca": json.dumps(params), "gamma_": tca.gamma_, "n_components_": k, "solver_": tca.solver_})


def score_cell(features, adapter: str, svm: dict, meta: dict, out) -> dict:
    """Score one grid cell: the first ``d`` TCA components (``tca-d``) or the raw features (``none``)."""
    from .evaluate import evaluate_svm
    from .report import write_score_row

    xs, xt, ys, yt, _ = read_pair(features)
    dims = None
    if adapter != "none":
        dims = int(adapter.split("-", 1)[1])
        if dims > xs.shape[1]:
            log.warning("%s: only %d components available for %s", features, xs.shape[1], adapter)
        xs, xt = xs[:, :dims], xt[:, :dims]
    metrics, _ = evaluate_svm(xs, ys, xt, yt, C=svm["C"], class_weight=svm["class_weight"],
                              max_iter=svm["max_iter"])
    layer, _, reducer = meta["featureset"].partition("-")
    row = {**meta, "layer": layer, "reducer": reducer or "", "adapter": adapter,
           "n_components": dims if dims is not None else "", **metrics}
    write_score_row(out, row)
    return row


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
    if s["skipped"]:
        lines += ["| domain | file | reason |", "|---|---|---|"]
        lines += [f"| {d} | `{f}` | {r} |" for d, f, r in s["skipped"][:max_listed]]
        if len(s["skipped"]) > max_listed:
            lines.append(f"| … | {len(s['skipped']) - max_listed} more | see the manifests |")
        lines.append("")
    return "\n".join(lines)


def summarize(score_csvs, out_csv, out_md, manifests: dict | None = None) -> str:
    from .report import aggregate_scores, paper_table, table_markdown

    df = aggregate_scores(score_csvs)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    parts = []
    for (exp, backbone), group in df.groupby(["experiment", "backbone"], sort=True):
        for metric in ("accuracy", "balanced_accuracy"):
            parts.append(table_markdown(paper_table(group, metric), f"{exp} / {backbone} / {metric} (%)"))
    if manifests:
        parts.append(data_section(manifests))
    text = "\n".join(parts)
    write_text_atomic(out_md, text)
    return text


def report_group(accuracy_csvs, params: dict, out_md, out_fusion_png, out_dims_png) -> str:
    """Tables (mean ± std over the group's experiments), the paper's numbers beside ours, two figures."""
    import pandas as pd

    from .report import (comparison_markdown, group_table, paper_comparison, plot_accuracy_vs_dims,
                         plot_fusion_vs_global, table_markdown)

    df = pd.concat([pd.read_csv(p) for p in accuracy_csvs], ignore_index=True)
    group, table_id = params["group"], params.get("paper_table")
    n = df["experiment"].nunique()
    parts = [f"# {group}", "", f"{n} experiment(s): {', '.join(sorted(df['experiment'].unique()))}.", ""]
    figures_done = False
    for backbone, bdf in df.groupby("backbone", sort=True):
        for metric in ("accuracy", "balanced_accuracy"):
            mean, std = group_table(bdf, metric)
            parts.append(table_markdown(mean, f"{backbone}: {metric} (%), mean over {n} run(s)"))
            if n > 1:
                parts.append(table_markdown(std, f"{backbone}: {metric} standard deviation (points)"))
            if metric == "accuracy" and table_id:
                comp = paper_comparison(mean, table_id, "finetuned" if backbone == "finetuned" else "imagenet")
                parts.append(comparison_markdown(comp, f"{backbone}: ours / paper Table {table_id} (difference)"))
            if metric == "accuracy" and not figures_done:
                title = f"{group} ({backbone})"
                with atomic_path(out_fusion_png) as tmp:
                    plot_fusion_vs_global(mean, tmp, title)
                with atomic_path(out_dims_png) as tmp:
                    plot_accuracy_vs_dims(mean, tmp, title)
                figures_done = True
    text = "\n".join(parts)
    write_text_atomic(out_md, text)
    return text


def dump_config(config: dict, out) -> None:
    """Write the effective (validated, defaults filled) configuration, for the report."""
    import yaml

    write_text_atomic(out, yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=True))


def finetune_backbone(images, base_pth, base_json, params: dict, outputs, threads: int = 1) -> list:
    """Fine-tune ``params['trainable']`` of the base backbone on the source images only."""
    import h5py
    import torch

    from .finetune import FinetuneConfig, finetune, write_history
    from .weights import sha256_file

    torch.set_num_threads(int(threads))
    model, spec, record = _recorded_backbone(base_pth, base_json)
    with h5py.File(images, "r") as f:
        x, y = f["images"][()], f["labels"][()]
    cfg = FinetuneConfig(**{k: v for k, v in params.items() if k != "base"})
    sd, history = finetune(model, x, y, spec, cfg)
    with atomic_path(outputs.pth) as tmp:
        torch.save(sd, tmp)
    out = {**{k: record[k] for k in ("architecture", "preprocessing", "maxpool_pad")},
           "weights": "finetune", "base_sha256": record["sha256"], "finetune": params,
           "sha256": sha256_file(outputs.pth), "final_loss": history[-1]["loss"],
           "final_source_accuracy": history[-1]["source_accuracy"], "layerfuse_version": __version__}
    write_text_atomic(outputs.record, json.dumps(out, indent=2) + "\n")
    write_history(history, outputs.curve, outputs.plot)
    log.info("fine-tuned %s: final loss %.4f, source accuracy %.3f", params["trainable"], history[-1]["loss"],
             history[-1]["source_accuracy"])
    return history
