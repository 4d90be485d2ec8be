"""Gather score rows into ``accuracy.csv`` and lay them out as the paper's Tables I-IV."""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .adapt import is_nested, parse_cell
from .h5io import atomic_path
from .images import manifest_classes, manifest_summary, read_manifest
from .select import criterion_label, refine_of, selection_headline

__all__ = ["SCORE_COLUMNS", "write_score_rows", "gather_scores", "paper_table", "table_markdown", "table_metrics",
           "tables_markdown", "group_markdown", "data_section", "proportions_section"]

# n_components: the TCA dims asked for (the table row); n_components_used: those the embedding had;
# local_width: the local block's width after reduction (PCA may keep fewer components than asked);
# recall: each class's recall on the target (label order, ";"-separated); target_priors: the target's class
# proportions estimated without labels (prior centring); failed: why an adapter's cell has no scores;
# refine: the method that refined the cell's classifier (selection.refine; candidate cells only), and its scores;
# platt_a, platt_b: the candidate cell's margin -> probability map (layerfuse.calibration), fitted on the source.
SCORE_COLUMNS = ["experiment", "backbone", "featureset", "layer", "reducer", "adapter", "center", "n_components",
                 "n_components_used", "local_width", "accuracy", "balanced_accuracy", "macro_f1", "n_source",
                 "n_target", "recall", "target_priors", "failed", "refine", "refined_accuracy",
                 "refined_balanced_accuracy", "platt_a", "platt_b"]
REDUCER_TITLES = {"pca": "PCA", "flatten": "Flatten", "pool2d": "Pool2D"}


def write_score_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write grid cells (one feature set's) as CSV rows (atomically)."""
    with atomic_path(path) as tmp:
        criteria = sorted({k for r in rows for k in r if k.startswith("crit_")})
        pd.DataFrame(rows).reindex(columns=SCORE_COLUMNS + criteria).to_csv(tmp, index=False, float_format="%.6f")


def gather_scores(paths) -> pd.DataFrame:
    """Concatenate score rows, sorted so the file is identical however jobs were scheduled."""
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    return df.sort_values(["experiment", "backbone", "featureset", "n_components", "center"], kind="mergesort",
                          ignore_index=True)


def _column_label(featureset: str, global_layer: str = "global") -> str:
    if featureset == global_layer:
        return "Global"
    layer, reducer = featureset.split("-", 1)
    return f"{layer} {REDUCER_TITLES.get(reducer, reducer)}"


def paper_table(df: pd.DataFrame, metric: str = "accuracy", global_layer: str = "global") -> pd.DataFrame:
    """Rows: TCA dims (descending), ``Avg`` over them, ``no TCA``, then the configured adapters (by their
    ``adapters`` key); columns: Global (the feature set ``global_layer``), then fusions.

    Values are percentages; a cell that failed (``failed`` in ``accuracy.csv``) is NaN.
    """
    d = df.copy()
    tca = d["adapter"].map(is_nested).astype(bool)
    d["row"] = np.where(d["adapter"] == "none", "no TCA",
                        np.where(tca, d["n_components"].astype("Int64").astype(str), d["adapter"]))
    d["col"] = d["featureset"].map(lambda f: _column_label(f, global_layer))
    table = d.pivot_table(index="row", columns="col", values=metric, aggfunc="mean", dropna=False) * 100
    dims = sorted(set(d.loc[tca, "row"]), key=int, reverse=True)
    others = list(dict.fromkeys(d.loc[~tca & (d["adapter"] != "none"), "row"]))
    order = {title: i for i, title in enumerate(REDUCER_TITLES.values())}
    cols = ["Global"] + sorted((c for c in table.columns if c != "Global"),
                               key=lambda c: (c.split(" ")[0], order.get(c.split(" ", 1)[1], 99), c))
    table = table.reindex(index=dims, columns=[c for c in cols if c in table.columns])
    if dims:
        table.loc["Avg"] = table.loc[dims].mean()
    if (d["row"] == "no TCA").any():
        base = d[d["row"] == "no TCA"].pivot_table(index="row", columns="col", values=metric) * 100
        table.loc["no TCA"] = base.reindex(columns=table.columns).iloc[0]
    for name in others:
        table.loc[name] = (d[d["row"] == name].pivot_table(index="row", columns="col", values=metric, dropna=False)
                           * 100).reindex(index=[name], columns=table.columns).iloc[0]
    return table


def table_markdown(table: pd.DataFrame, title: str = "") -> str:
    """Markdown table; fusion cells that beat Global in the same row are **bold**."""
    lines = [f"### {title}", ""] if title else []
    first = "dims" if all(str(i).isdigit() or i in ("Avg", "no TCA") for i in table.index) else "dims / adapter"
    lines.append("| " + " | ".join([first] + list(table.columns)) + " |")
    lines.append("|" + "---|" * (len(table.columns) + 1))
    for idx, row in table.iterrows():
        cells = []
        for col, v in row.items():
            if pd.isna(v):
                cells.append("–")
                continue
            text = f"{v:.2f}"
            if col != "Global" and "Global" in row and not pd.isna(row["Global"]) and v > row["Global"] + 1e-9:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines) + "\n"


PAPER_TABLES = Path(__file__).with_name("data") / "paper_tables.csv"


def load_paper_tables(path: str | os.PathLike = PAPER_TABLES) -> pd.DataFrame:
    """The paper's Tables I-IV, one row per (table, backbone, row, featureset)."""
    return pd.read_csv(path, comment="#")


def group_table(df: pd.DataFrame, metric: str = "accuracy",
                global_layer: str = "global") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paper-layout table averaged over the experiments (seeds) in ``df``; returns (mean, std)."""
    tables = [paper_table(g, metric, global_layer) for _, g in df.groupby("experiment", sort=True)]
    stacked = pd.concat(tables, keys=range(len(tables)))
    mean = stacked.groupby(level=1, sort=False).mean().reindex(tables[0].index)
    std = stacked.groupby(level=1, sort=False).std(ddof=0).reindex(tables[0].index)
    return mean, std


def paper_backbone(backbone: str, finetuned=()) -> str:
    """The paper's backbone a backbone key is compared with: ``finetuned`` for any key with a ``finetune:``
    block (``finetuned``: those keys), else ``imagenet``."""
    return "finetuned" if backbone in finetuned else "imagenet"


def paper_comparison(ours: pd.DataFrame, table_id: str, backbone: str) -> pd.DataFrame:
    """Long table: ours, the paper's and the difference for every cell the paper reports."""
    paper = load_paper_tables()
    paper = paper[(paper["table"] == table_id) & (paper["backbone"] == backbone)]
    rows = []
    for _, p in paper.iterrows():
        col = _column_label(p["featureset"])            # the paper's own names
        row = str(p["row"])
        value = ours.loc[row, col] if row in ours.index and col in ours.columns else np.nan
        rows.append({"row": row, "column": col, "ours": value, "paper": p["accuracy"],
                     "difference": value - p["accuracy"]})
    return pd.DataFrame(rows)


def comparison_markdown(comp: pd.DataFrame, title: str) -> str:
    """Side-by-side table: each cell ``ours / paper (±diff)``."""
    if comp.empty:
        return ""
    cols = list(dict.fromkeys(comp["column"]))
    rows = list(dict.fromkeys(comp["row"]))
    lines = [f"### {title}", "", "| dims | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = []
        for c in cols:
            hit = comp[(comp["row"] == r) & (comp["column"] == c)]
            if hit.empty or pd.isna(hit["ours"].iloc[0]):
                cells.append("–")
            else:
                h = hit.iloc[0]
                cells.append(f"{h['ours']:.1f} / {h['paper']:.1f} ({h['difference']:+.1f})")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib.pyplot as plt  # heavy (half a second): imported by the stages that draw

    plt.switch_backend("Agg")
    return plt


def _panels(tables: dict, height: float):
    """A figure with one panel per backbone (``tables``: {backbone: table}), side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables) + 1.6, height), squeeze=False)
    return plt, fig, axes[0]


def plot_fusion_vs_global(tables: dict, path, title: str = "") -> None:
    """Fig. 8/9 of the paper: mean accuracy over TCA dims of each fusion minus Global, per block; one
    panel per backbone (``tables``: {backbone: accuracy table})."""
    plt, fig, axes = _panels(tables, 3.6)
    for ax, (backbone, table) in zip(axes, tables.items()):
        avg = table.loc["Avg"] if "Avg" in table.index else table.mean()
        fusions = [c for c in table.columns if c != "Global"]
        blocks = sorted({c.split(" ")[0] for c in fusions})
        reducers = sorted({c.split(" ", 1)[1] for c in fusions})
        width = 0.8 / max(len(reducers), 1)
        for i, red in enumerate(reducers):
            vals = [avg.get(f"{b} {red}", np.nan) - avg["Global"] for b in blocks]
            ax.bar(np.arange(len(blocks)) + i * width, vals, width, label=red, color=f"C{i}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(blocks)) + width * (len(reducers) - 1) / 2, blocks)
        ax.set_title(f"{title} — {backbone}" if title else backbone, fontsize=9)
    axes[0].set_ylabel("fusion − global (points, mean over TCA dims)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_accuracy_vs_dims(tables: dict, path, title: str = "", picks: dict | None = None) -> None:
    """Accuracy against TCA dimensions: a row of panels per backbone (``tables``: {backbone: accuracy table}), a
    panel per reducer with its blocks' fusions and Global (black) as lines and their no-TCA levels dotted, one
    y-range for all; a star marks each cell the default criterion picked (``picks``: {backbone: [(column, row)]},
    :func:`group_picks`)."""
    plt = pyplot()
    reducers = sorted({c.split(" ", 1)[1] for t in tables.values() for c in t.columns if c != "Global"}) or [None]
    fig, axes = plt.subplots(len(tables), len(reducers), figsize=(3.6 * len(reducers) + 1.8, 2.9 * len(tables)),
                             squeeze=False, sharey=True)
    for ax_row, (backbone, table) in zip(axes, tables.items()):
        dims = [r for r in table.index if r.isdigit()]
        marked = set((picks or {}).get(backbone, ()))
        for ax, reducer in zip(ax_row, reducers):
            columns = ["Global"] + sorted(c for c in table.columns if c != "Global" and c.split(" ", 1)[1] == reducer)
            for i, col in enumerate(c for c in columns if c in table.columns):
                color = "black" if col == "Global" else f"C{i - 1}"
                ax.plot([int(d) for d in dims], table.loc[dims, col], marker="o", markersize=3, color=color,
                        linewidth=2.0 if col == "Global" else 1.2, label=col.split(" ", 1)[0])
                if "no TCA" in table.index and not pd.isna(table.loc["no TCA", col]):
                    ax.axhline(table.loc["no TCA", col], color=color, linestyle=":", linewidth=1.0)
                for column, row in marked:
                    if column == col and row in table.index and (row.isdigit() or row == "no TCA"):
                        x = int(row) if row.isdigit() else (max(map(int, dims)) if dims else 0)
                        ax.plot([x], [table.loc[row, col]], marker="*", markersize=13, color="C3", zorder=5,
                                linestyle="none", label="picked" if row.isdigit() else "picked (no TCA)")
            ax.set_title(f"{backbone}: {reducer or 'Global'}", fontsize=9)
            ax.set_xlabel("TCA components", fontsize=8)
            ax.legend(fontsize=7, loc="best")
            ax.grid(alpha=0.3)
        ax_row[0].set_ylabel("target accuracy (%)\n(dotted: no TCA)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def group_picks(df: pd.DataFrame, params: dict) -> dict:
    """``{backbone: [(table column, table row)]}``: the cells of a group's ``accuracy.csv`` rows ``df`` that the
    default criterion (``params["default"]``) picked at the tables' centring, as :func:`paper_table` labels them."""
    default = params.get("default")
    if not default or "selected_by" not in df:
        return {}
    rows = df[(df["center"] == params["center"])
              & df["selected_by"].fillna("").astype(str).str.split(";").apply(lambda v: default in v)]
    picks = {}
    for r in rows.itertuples():
        row = "no TCA" if r.adapter == "none" else str(parse_cell(r.adapter)[1]) if is_nested(r.adapter) else r.adapter
        picks.setdefault(r.backbone, []).append((_column_label(r.featureset, params["global_layer"]), row))
    return picks


def selection_markdown(picks: pd.DataFrame) -> str:
    """The label-free selection per experiment and backbone: each criterion's pick, the oracle, the baseline."""
    lines = ["### Label-free selection", "",
             "Each criterion picks one cell (feature set / adapter / centring) without target labels; the "
             "default criterion's pick gives `predictions/`. Oracle: the best cell by target accuracy. "
             "Regret: oracle accuracy minus the pick's (points).", "",
             "| experiment | backbone | criterion | cell | accuracy | balanced | regret |", "|---|---|---|---|---|---|---|"]
    for r in picks.itertuples():
        name = f"**{criterion_label(r)}** (default)" if r.default else criterion_label(r)
        pct = lambda v: "–" if pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
        lines.append(f"| {r.experiment} | {r.backbone} | {name} | {r.featureset} / {r.adapter} / {r.center} | "
                     f"{pct(r.accuracy)} | {pct(r.balanced_accuracy)} | {pct(r.regret)} |")
    return "\n".join(lines) + "\n"


def landing_rst(selections: dict, paper_tables: dict, finetuned=()) -> str:
    """The report's landing summary, reStructuredText: a row per experiment and backbone with the cell the
    default criterion picked and its accuracy (balanced), the source-only classifier's (no adapter, no
    centring), the best cell's, and the paper's Global average with TCA where the experiment reproduces one of
    its tables.  ``selections``: ``{(experiment, backbone): selection table}`` (:func:`layerfuse.select.
    selection_table`'s rows); ``paper_tables``: ``{experiment: table id or None}``."""
    paper = load_paper_tables()
    pct = lambda v: "–" if pd.isna(v) else f"{100 * v:.1f}"  # noqa: E731
    rows = [["experiment", "backbone", "picked without target labels", "accuracy (balanced)", "source only",
             "best cell", "paper, Global with TCA (Avg)"]]
    for (experiment, backbone), t in sorted(selections.items()):
        head = selection_headline(t)
        pick = head["pick"]
        table_id = paper_tables.get(experiment)
        ref = paper.loc[(paper["table"] == table_id) & (paper["backbone"] == paper_backbone(backbone, finetuned))
                        & (paper["row"] == "Avg") & (paper["featureset"] == "global"), "accuracy"]
        accuracy = pct(pick["accuracy"])
        if not pd.isna(pick["accuracy"]):
            accuracy += f" ({pct(pick['balanced_accuracy'])})"
        else:
            accuracy = "unlabelled target (see the figure)"
        rows.append([experiment, backbone, f"{head['cell']} ({criterion_label(pick)})", accuracy,
                     pct(head["source_only"]), pct(head["best"]),
                     f"{ref.iloc[0]:.1f} (Table {table_id})" if len(ref) else "–"])
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def landing_panels(selections: dict, paper_tables: dict, finetuned=(), predictions: dict | None = None,
                   skipped: dict | None = None) -> list[dict]:
    """What the landing figure draws, a panel per experiment and backbone (sorted): ``title``; where the target is
    labelled, ``bars`` ``[(label, accuracy %, is the pick)]`` (source only, the criterion's cell, the refined
    pick, the best cell, the paper's Global average with TCA); where it is not, ``counts`` (predicted images per
    class, from ``predictions``: ``{(experiment, backbone): predictions table}``), ``skipped`` (``{experiment:
    target images skipped}``) and ``agreement`` (how many criteria picked the default's cell)."""
    paper = load_paper_tables()
    panels = []
    for (experiment, backbone), t in sorted(selections.items()):
        head = selection_headline(t)
        pick = head["pick"]
        criteria = t[t["kind"] == "criterion"]
        criterion = criteria[criteria["criterion"] == pick["criterion"]]
        # the default criterion's own cell: what the refined pick refits and the vote starts from
        chosen = criterion.iloc[0] if len(criterion) else pick
        cell = f"{chosen['featureset']} / {chosen['adapter']} / {chosen['center']}"
        same = ((criteria["featureset"] == chosen["featureset"]) & (criteria["adapter"] == chosen["adapter"])
                & (criteria["center"] == chosen["center"]))
        panel = {"title": f"{experiment} / {backbone}",
                 "agreement": f"{int(same.sum())} of {len(criteria)} criteria pick {cell}"}
        if pd.isna(pick["accuracy"]):
            table = (predictions or {}).get((experiment, backbone))
            panel["counts"] = (table["predicted"].value_counts() if table is not None else pd.Series(dtype=int))
            panel["skipped"] = int((skipped or {}).get(experiment, 0))
        else:
            bars = [("source only (no adapter, no centring)", head["source_only"], False)]
            if head["refine"] and len(criterion):
                bars.append((f"{cell} ({pick['criterion']})", criterion["accuracy"].iloc[0], False))
            bars.append((f"{head['cell']} ({criterion_label(pick)}): the pick", pick["accuracy"], True))
            bars.append(("best cell (picked with the labels)", head["best"], False))
            table_id = paper_tables.get(experiment)
            ref = paper.loc[(paper["table"] == table_id) & (paper["row"] == "Avg") & (paper["featureset"] == "global")
                            & (paper["backbone"] == paper_backbone(backbone, finetuned)), "accuracy"]
            if len(ref):
                bars.append((f"paper, Global with TCA (Table {table_id})", float(ref.iloc[0]) / 100, False))
            panel["bars"] = [(label, 100 * float(v), is_pick) for label, v, is_pick in bars if not pd.isna(v)]
        panels.append(panel)
    return panels


def plot_landing(panels: list[dict], path, max_panels: int = 12, max_classes: int = 15) -> None:
    """The landing page's figure: a row per :func:`landing_panels` panel (the first ``max_panels``), full width:
    accuracy bars with the pick highlighted, or, for an unlabelled target, predicted images per class."""
    plt = pyplot()
    shown = panels[:max_panels]
    heights = [max(len(p.get("bars", ())), min(len(p.get("counts", ())), max_classes), 2) * 0.32 + 1.1 for p in shown]
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, sum(heights) + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, panel in zip(axes[:, 0], shown):
        if "bars" in panel:
            labels, values, picks = zip(*panel["bars"]) if panel["bars"] else ((), (), ())
            y = np.arange(len(labels))[::-1]
            ax.barh(y, values, color=["C1" if p else "0.7" for p in picks], height=0.7)
            for yi, v, p in zip(y, values, picks):
                ax.text(v + 0.5, yi, f"{v:.1f}", va="center", fontsize=8, fontweight="bold" if p else "normal")
            ax.set_yticks(y, labels, fontsize=8)
            ax.set_xlim(0, 105)
            ax.set_title(f"{panel['title']}: target accuracy (%)\n{panel['agreement']}", fontsize=9, loc="left")
        else:
            counts = panel["counts"].head(max_classes)
            y = np.arange(len(counts))[::-1]
            ax.barh(y, counts.to_numpy(), color="C0", height=0.7)
            for yi, v in zip(y, counts.to_numpy()):
                ax.text(v, yi, f" {v}", va="center", fontsize=8)
            ax.set_yticks(y, [str(c) for c in counts.index], fontsize=8)
            more = f" (first {max_classes} classes)" if len(panel["counts"]) > max_classes else ""
            ax.set_title(f"{panel['title']}: unlabelled target, {int(panel['counts'].sum())} images classified, "
                         f"{panel['skipped']} skipped; {panel['agreement']}\npredicted images per class{more}",
                         fontsize=9, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
    if len(panels) > max_panels:
        fig.text(0.01, 0.002, f"{len(panels) - max_panels} more experiment/backbone pairs: see the table below",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def plot_confusion(confusion: pd.DataFrame, path, title: str = "") -> None:
    """Counts of true (rows) by predicted (columns) classes, annotated."""
    plt = pyplot()
    values = confusion.to_numpy()
    size = max(3.0, 0.45 * values.shape[1] + 2)
    fig, ax = plt.subplots(figsize=(size, max(2.0, 0.45 * values.shape[0] + 1.6)))
    top = values.max() if values.size else 0
    # from 0, so equal counts are not all drawn at the darkest shade (nor text picked white on white)
    ax.imshow(values, cmap="Blues", aspect="auto", vmin=0, vmax=max(top, 1))
    ax.set_xticks(range(values.shape[1]), [str(c) for c in confusion.columns], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(values.shape[0]), [str(c) for c in confusion.index], fontsize=7)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_message(path, text: str) -> None:
    """A small figure holding only ``text`` (a figure the workflow promises but has nothing to draw in)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def predictions_html(title: str, picks: pd.DataFrame, predictions: pd.DataFrame, thumbnails: dict,
                     confusion_png=None, per_class: int = 6) -> str:
    """The report's Predictions page for one experiment and backbone: the selected cell and every
    criterion's vote; predicted class counts; the confusion matrix (labelled targets); and up to
    ``per_class`` thumbnails per predicted class, most confident first (``thumbnails``: image -> uint8 RGB).
    """
    def png(data: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(data).decode()

    def pct(v):
        return "–" if pd.isna(v) else f"{100 * v:.1f}"

    esc = html.escape
    chosen = picks[picks["default"].astype(bool)]
    cell = predictions["cell"].iloc[0] if len(predictions) else "–"
    refined = len(predictions) and bool(refine_of(predictions.iloc[0]))
    name = esc(chosen["criterion"].iloc[0]) if len(chosen) else "–"
    criterion = f"<b>{name}</b> criterion (<code>selection.default</code>)"
    vote = len(chosen) and chosen["kind"].iloc[0] == "ensemble"
    if vote:
        source = (f"come from the vote of {len(json.loads(chosen['members'].iloc[0]))} candidate cells "
                  f"(<b>{esc(cell)}</b>, <code>selection.combine</code>), weighted without target labels by the "
                  f"{criterion}")
    else:
        source = f"come from the cell <b>{esc(cell)}</b>, picked without target labels by the {criterion}"
    if refined:
        source += (f", {'each' if vote else 'its'} SVM refitted on the source and the target's confident "
                   "pseudo-labels (<code>selection.refine</code>)")
    parts = [f"<h2>{esc(title)}</h2>",
             f"<p>Predictions for {len(predictions)} target image(s) {source}. <code>probability</code> in the CSV: "
             "the chance each prediction is right, calibrated on the source (Platt scaling of the SVM margin; "
             "optimistic under a domain shift).</p>",
             "<h3>Each criterion's vote</h3>", "<table border=1 cellpadding=3 style='border-collapse:collapse'>"]
    # an unlabelled target has no accuracy: its columns would be all "–"
    labelled = bool(picks["accuracy"].notna().any())
    parts.append("<tr><th>criterion</th><th>cell</th><th>score</th>"
                 + ("<th>accuracy %</th><th>balanced %</th><th>regret (points)</th>" if labelled else "") + "</tr>")
    for r in picks.itertuples():
        name = esc(criterion_label(r)) + (" (default)" if r.default else "")
        score = "" if pd.isna(r.score) else f"{r.score:.4g}"
        parts.append(f"<tr><td>{name}</td><td>{esc(f'{r.featureset} / {r.adapter} / {r.center}')}</td><td>{score}</td>"
                     + (f"<td>{pct(r.accuracy)}</td><td>{pct(r.balanced_accuracy)}</td><td>{pct(r.regret)}</td>"
                        if labelled else "") + "</tr>")
    parts.append("</table>")
    counts = predictions["predicted"].value_counts()
    parts += ["<h3>Predicted classes</h3>", "<table border=1 cellpadding=3 style='border-collapse:collapse'>",
              "<tr><th>class</th><th>images</th></tr>"]
    parts += [f"<tr><td>{esc(str(c))}</td><td>{n}</td></tr>" for c, n in counts.items()]
    parts.append("</table>")
    if confusion_png is not None:
        parts += ["<h3>Confusion matrix</h3>", f"<img src='{png(Path(confusion_png).read_bytes())}'>"]
    if thumbnails:
        parts.append(f"<h3>Examples per predicted class (up to {per_class}, most confident first)</h3>")
        for cls in counts.index:
            rows = predictions[predictions["predicted"] == cls].sort_values("margin", ascending=False)
            imgs = []
            for r in rows.head(per_class).itertuples():
                if r.image not in thumbnails:
                    continue
                buf = io.BytesIO()
                Image.fromarray(thumbnails[r.image]).resize((96, 96)).save(buf, format="PNG")
                caption = esc(r.image) + ("" if "true" not in predictions or pd.isna(getattr(r, "true", None))
                                          else f" (true: {esc(str(r.true))})")
                imgs.append(f"<figure style='display:inline-block;margin:4px'><img src='{png(buf.getvalue())}' "
                            f"title='{caption}'><figcaption style='font-size:9px;max-width:96px;overflow:hidden'>"
                            f"{caption}</figcaption></figure>")
            parts.append(f"<h4>{esc(str(cls))}</h4><div>{''.join(imgs)}</div>")
    body = "\n".join(parts)
    return f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title></head>" \
           f"<body style='font-family:sans-serif'>\n{body}\n</body></html>\n"


def markdown_html(text: str, title: str = "") -> str:
    """The tables' Markdown (headings, paragraphs, pipe tables, ``**bold**``, ``code``) as a standalone
    HTML page, so the Snakemake report shows the tables instead of offering a download."""
    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", s)

    out, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[\s:|-]*", r)]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            out.append("<table border=1 cellpadding=3 style='border-collapse:collapse;font-size:12px'>")
            out.append("<tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        heading = re.match(r"(#+)\s+(.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 1, 6)
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif'>\n" + "\n".join(out) + "\n</body></html>\n")


def table_metrics(cells) -> tuple[str, ...]:
    """The metrics worth a table: balanced accuracy only where it differs from accuracy somewhere (with
    every target class the same size they are equal, and a second table would repeat the first)."""
    same = np.allclose(cells["accuracy"], cells["balanced_accuracy"], atol=5e-7, equal_nan=True)
    return ("accuracy",) if same else ("accuracy", "balanced_accuracy")


def data_section(manifests: dict, max_listed: int = 50) -> str:
    """Markdown: images kept per domain, skipped files with reasons, source/target duplicates."""
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


def tables_markdown(df: pd.DataFrame, picks: pd.DataFrame | None, *, center: str = "domain",
                    global_layer: str = "global", pca_fits: dict | None = None, manifests: dict | None = None,
                    capped=()) -> str:
    """``tables.md``: the paper's layout of every cell (``df``, ``accuracy.csv``) at the tables' centring
    ``center``, the label-free selection (``picks``: the selection tables), PCA's fitting sample
    (``pca_fits``: ``{PCA model path: its attributes}`` where maps are not stored), the defaults lowered to the
    data (``capped``: :func:`layerfuse.config.cap_to_data`'s lines), the class proportions and the Data section
    (``manifests``: ``source``/``target`` manifest paths)."""
    parts = []
    tables = df[df["center"] == center]
    for (exp, backbone), group in tables.groupby(["experiment", "backbone"], sort=True):
        if group["accuracy"].isna().all():
            parts.append(f"### {exp} / {backbone}\n\nThe target is unlabelled: no accuracy; see the selection "
                         "and `predictions/`.\n")
            continue
        for metric in table_metrics(group):
            parts.append(table_markdown(paper_table(group, metric, global_layer), f"{exp} / {backbone} / {metric} (%)"))
    parts.append(f"Tables: SVM centring `{center}` (`svm.center`); every cell is also scored with the other "
                 "centring in `accuracy.csv` (column `center`). **Bold**: a fusion above Global in the same row. "
                 "Balanced accuracy gets its own table where it differs from accuracy (an unbalanced target).\n")
    if picks is not None:
        parts.append(selection_markdown(picks))
    if capped:
        parts.append("**Defaults capped to the data** (a value you write is used as written, or refused): "
                     + "; ".join(capped) + ".\n")
    capped = df[df["n_components_used"].notna() & (df["n_components_used"] < df["n_components"])]
    if len(capped):
        parts.append("**TCA dims capped** (fewer usable images than components): "
                     + ", ".join(sorted({f"{r.backbone} {r.featureset} {r.adapter} used {int(r.n_components_used)}"
                                         for r in capped.itertuples()})) + ".\n")
    if pca_fits:
        fits = {}
        for path, attrs in pca_fits.items():
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
    return "\n".join(parts)


def group_markdown(df: pd.DataFrame, params: dict) -> tuple[str, dict]:
    """A group's page (``results/report/<group>.md``) from its experiments' ``accuracy.csv`` rows ``df``:
    tables at ``params["center"]``, mean ± std over the experiments, the paper's Table ``paper_table``
    beside ours; returns the Markdown and the accuracy tables by backbone (for the figures)."""
    df = df[df["center"] == params["center"]]
    group, table_id = params["group"], params.get("paper_table")
    n = df["experiment"].nunique()
    parts = [f"# {group}", "", f"{n} experiment(s): {', '.join(sorted(df['experiment'].unique()))}.", ""]
    accuracy_tables = {}
    for backbone, bdf in df.groupby("backbone", sort=True):
        if bdf["accuracy"].isna().all():
            parts.append(f"{backbone}: the target is unlabelled, no accuracy (predictions in "
                         "`results/<experiment>/predictions/`).\n")
            continue
        for metric in table_metrics(bdf):
            mean, std = group_table(bdf, metric, params["global_layer"])
            parts.append(table_markdown(mean, f"{backbone}: {metric} (%), mean over {n} run(s)"))
            if n > 1:
                parts.append(table_markdown(std, f"{backbone}: {metric} standard deviation (points)"))
            if metric == "accuracy" and table_id:
                comp = paper_comparison(mean, table_id, paper_backbone(backbone, params.get("finetuned", ())))
                parts.append(comparison_markdown(comp, f"{backbone}: ours / paper Table {table_id} (difference)"))
            if metric == "accuracy":
                accuracy_tables[backbone] = mean
    return "\n".join(parts), accuracy_tables
