"""Stages of rules/report.smk: tables, the group pages, the landing page, the config dump."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd
import yaml

from ..h5io import atomic_path, read_arrays, write_text_atomic
from ..images import read_manifest
from ..report import (gather_scores, group_markdown, group_picks, landing_panels, landing_rst, markdown_html,
                      plot_accuracy_vs_dims, plot_fusion_vs_global, plot_landing, plot_message, tables_markdown)



def aggregate_scores(score_csvs, out_csv, out_md, manifests: dict | None = None, center: str = "domain",
                     selections=(), global_layer: str = "global", pca_models=(), capped=()) -> str:
    """``accuracy.csv`` (every cell; ``selected_by`` names the criteria that picked it) and ``tables.md``
    (:func:`layerfuse.report.tables_markdown`; ``capped``: the defaults lowered to the data)."""
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
    text = tables_markdown(df, picks, center=center, global_layer=global_layer, pca_fits=pca_fits, manifests=manifests,
                           capped=capped)
    write_text_atomic(out_md, text)
    return text


# the line of report/workflow.rst the landing table replaces (a Jinja comment: nothing where it stays)
LANDING_MARK = "{# at a glance: rule report_landing puts each experiment's results here #}"


# Snakemake's landing view puts this text in a narrow column beside the rule graph: widen it and put the
# graph below, so the figure comes first (the report renders this reStructuredText's raw HTML as given)
LANDING_STYLE = """.. raw:: html

   <style>.prose.max-w-lg{max-width:none} .grow.flex:has(> #rulegraph){flex-direction:column}
   .grow.flex:has(> #rulegraph) > div:first-child{width:100%}</style>
"""


def report_landing(intro, selection_csvs, params: dict, out, prediction_csvs=(), target_manifests=()) -> None:
    """The Snakemake report's landing page: ``intro`` (``report/workflow.rst``) with, at its marked line, a figure
    of every experiment's pick beside its source-only classifier, best cell and the paper's number (or, for an
    unlabelled target, the images classified and skipped and the predicted class counts;
    :func:`layerfuse.report.landing_panels`), then the same as a table (:func:`layerfuse.report.landing_rst`).
    ``selection_csvs``/``prediction_csvs``: every ``results/<experiment>/{selection,predictions}/<backbone>.csv``;
    ``target_manifests``: every ``results/<experiment>/manifest/target.tsv``; ``params``: ``paper_tables``
    (``{experiment: table id or None}``) and ``finetuned`` (backbone keys)."""
    def key(path):
        return Path(path).parents[1].name, Path(path).stem

    selections = {key(path): pd.read_csv(path) for path in selection_csvs}
    predictions = {key(path): pd.read_csv(path) for path in prediction_csvs}
    skipped = {Path(path).parents[1].name: sum(r["status"] != "ok" for r in read_manifest(path))
               for path in target_manifests}
    finetuned = params.get("finetuned", ())
    panels = landing_panels(selections, params["paper_tables"], finetuned, predictions, skipped)
    buf = io.BytesIO()
    plot_landing(panels, buf)
    # the URI on short lines (docutils refuses lines over 10,000 characters and removes the URI's whitespace)
    data = base64.b64encode(buf.getvalue()).decode()
    figure = (".. image:: data:image/png;base64,\n" + "".join(f"   {data[i:i + 96]}\n" for i in range(0, len(data), 96))
              + "   :width: 100%\n   :alt: each experiment's pick beside source only, the best cell and the paper\n")
    glance = (LANDING_STYLE + "\nAt a glance: accuracy (%) on each target of the cell picked without its labels "
              "(orange), beside the classifier that never saw the target (no adapter, no centring), the best cell of "
              "the grid and the paper's number; for an unlabelled target, what was classified.\n\n" + figure + "\n"
              + landing_rst(selections, params["paper_tables"], finetuned))
    text = Path(intro).read_text()
    if LANDING_MARK not in text:
        raise ValueError(f"{intro}: no line {LANDING_MARK!r} to put the results at")
    write_text_atomic(out, text.replace(LANDING_MARK, glance.rstrip("\n")))


def report_group(accuracy_csvs, params: dict, out_md, out_fusion_png, out_dims_png, out_html=None) -> str:
    """Tables (mean ± std over the group's experiments), the paper's numbers beside ours, two figures
    (:func:`layerfuse.report.group_markdown`)."""
    group = params["group"]
    df = pd.concat([pd.read_csv(p) for p in accuracy_csvs], ignore_index=True)
    text, accuracy_tables = group_markdown(df, params)
    if accuracy_tables:
        with atomic_path(out_fusion_png) as tmp:
            plot_fusion_vs_global(accuracy_tables, tmp, group)
        with atomic_path(out_dims_png) as tmp:
            plot_accuracy_vs_dims(accuracy_tables, tmp, group, picks=group_picks(df, params))
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
