"""Gather score rows into ``accuracy.csv`` and lay them out as the paper's Tables I-IV."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SCORE_COLUMNS", "write_score_row", "aggregate_scores", "paper_table", "table_markdown"]

SCORE_COLUMNS = ["experiment", "backbone", "featureset", "layer", "reducer", "adapter", "n_components",
                 "accuracy", "balanced_accuracy", "macro_f1", "n_source", "n_target"]
REDUCER_TITLES = {"pca": "PCA", "flatten": "Flatten", "pool2d": "Pool2D"}


def write_score_row(path: str | os.PathLike, row: dict) -> None:
    """Write one grid cell as a one-row CSV (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    pd.DataFrame([row]).reindex(columns=SCORE_COLUMNS).to_csv(tmp, index=False, float_format="%.6f")
    os.replace(tmp, path)


def aggregate_scores(paths) -> pd.DataFrame:
    """Concatenate score rows, sorted so the file is identical however jobs were scheduled."""
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    return df.sort_values(["experiment", "backbone", "featureset", "n_components"], kind="mergesort",
                          ignore_index=True)


def _column_label(featureset: str) -> str:
    if featureset == "global":
        return "Global"
    layer, reducer = featureset.split("-", 1)
    return f"{layer} {REDUCER_TITLES.get(reducer, reducer)}"


def paper_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Rows: TCA dims (descending), ``Avg`` over them, and ``no TCA``; columns: Global, then fusions.

    Values are percentages.
    """
    d = df.copy()
    d["row"] = np.where(d["adapter"] == "none", "no TCA", d["n_components"].astype("Int64").astype(str))
    d["col"] = d["featureset"].map(_column_label)
    table = d.pivot_table(index="row", columns="col", values=metric, aggfunc="mean") * 100
    dims = sorted((r for r in table.index if r != "no TCA"), key=int, reverse=True)
    cols = ["Global"] + sorted(c for c in table.columns if c != "Global")
    table = table.reindex(index=dims, columns=[c for c in cols if c in table.columns])
    if dims:
        table.loc["Avg"] = table.loc[dims].mean()
    if (d["row"] == "no TCA").any():
        base = d[d["row"] == "no TCA"].pivot_table(index="row", columns="col", values=metric) * 100
        table.loc["no TCA"] = base.reindex(columns=table.columns).iloc[0]
    return table


def table_markdown(table: pd.DataFrame, title: str = "") -> str:
    """Markdown table; fusion cells that beat Global in the same row are **bold**."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(["dims"] + list(table.columns)) + " |")
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
