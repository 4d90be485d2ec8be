"""docs/pairs.md: every real pair's numbers from finished runs of one commit, generated, never edited by hand.

    python benchmarks/pair_tables.py <clone>/results/demo <clone>/results/officeaw ... \\
        --command "make run" --command "..." --out docs/pairs.md

Each argument is ``results/<experiment>`` of a finished run inside a git clone whose tracked files are as
committed (the script refuses a clone with local changes, or runs of different commits).  Written: the commit,
the date of the runs and the machine; a headline table per experiment and backbone (the paper's best cell beside
ours on the same cells with the plain SVM, source only, the centred Global cell without an adapter (the floor),
the label-free default and the grid's best cell, accuracy / balanced accuracy, %); then per experiment the
``summary`` lines, the paper's table beside ours (``ours / paper (difference)``, plain SVM as in the paper) and
the run's own ``tables.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import preset_of, require_run, run_seconds  # noqa: E402

from layerfuse.__main__ import summary  # noqa: E402
from layerfuse.report import comparison_markdown, paper_backbone, paper_comparison, paper_table  # noqa: E402
from layerfuse.select import selection_headline  # noqa: E402


def run_commit(root: Path) -> str:
    """The commit of the clone holding ``root``; exits naming the clone where tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit, changed = git("rev-parse", "HEAD").strip(), git("status", "--porcelain", "--untracked-files=no")
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise SystemExit(f"{root}: not inside a git clone; run the workflow in a clone of the commit to document")
    if changed.strip():
        raise SystemExit(f"{root}: its clone has local changes ({changed.split()[-1]} …): commit them or use a clean "
                         "clone, so the numbers belong to one commit")
    return commit


def machine() -> str:
    model, flags = platform.processor() or "unknown CPU", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags"))
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        mem_gb = f", {int(mem.split()[1]) / 2**20:.0f} GB"
    except (OSError, StopIteration):
        mem_gb = ""
    extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
    return f"{model}, {os.cpu_count()} cores{mem_gb}" + (f" ({', '.join(extras)})" if extras else "")


def pct(value) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}"


def preset_entry(name: str) -> dict:
    """The experiment's entry in the preset that names it ({} for none, e.g. the demo)."""
    found = preset_of(name)
    return found[1] if found else {}


def finetuned_backbones(root: Path) -> tuple:
    """The backbones with a ``finetune:`` block in the config dump of the run that made ``results/<experiment>``
    (``results/report/runs/*/config.yaml`` whose experiments name it; the newest where several do)."""
    import yaml

    dumps = [(p.stat().st_mtime, yaml.safe_load(p.read_text()) or {})
             for p in (root.parent / "report" / "runs").glob("*/config.yaml")]
    mine = [config for _, config in sorted(dumps, key=lambda d: d[0]) if root.name in (config.get("experiments") or {})]
    if not mine:
        return ("finetuned",)
    return tuple(k for k, v in (mine[-1].get("backbones") or {}).items() if isinstance(v, dict) and "finetune" in v)


def paper_rows(root: Path) -> dict:
    """Per backbone: ``(table id, the paper's cells beside ours)``, ours with the plain SVM as in the paper."""
    cells = pd.read_csv(root / "accuracy.csv")
    table_id = preset_entry(root.name).get("paper_table")
    out, finetuned = {}, finetuned_backbones(root)
    for backbone, group in cells.groupby("backbone"):
        plain = paper_table(group[group["center"] == "none"])
        comp = paper_comparison(plain, table_id, paper_backbone(backbone, finetuned)) if table_id else None
        out[backbone] = (table_id, comp)
    return out


METRICS = ("source only", "floor", "default", "best")


def headline(root: Path, papers: dict) -> list[dict]:
    """Per backbone of one experiment: the paper's best cell and ours on its cells (``papers``: its
    :func:`paper_rows`), and accuracy / balanced accuracy (fractions) of source only, the floor, the default and
    the best cell."""
    rows = []
    for path in sorted((root / "selection").glob("*.csv")):
        table = pd.read_csv(path)
        head = selection_headline(table)
        kind = {k: table[table["kind"] == k] for k in ("oracle", "source_only", "baseline")}
        first = {k: (v.iloc[0] if len(v) else None) for k, v in kind.items()}
        table_id, comp = papers.get(path.stem, (None, None))
        paper = None
        if comp is not None and not comp.empty and comp["ours"].notna().any():
            paper = (table_id, comp["paper"].max(), comp["ours"].max())
        values = dict(zip(METRICS, (first["source_only"], first["baseline"], head["pick"],
                                    first["oracle"])))
        rows.append({"experiment": root.name, "backbone": path.stem, "group": preset_entry(root.name).get("group"),
                     "paper": paper,
                     **{m: None if r is None else (r["accuracy"], r["balanced_accuracy"]) for m, r in values.items()}})
    return rows


def headline_markdown(rows: list[dict]) -> list[str]:
    """The headline table, with a mean row per group of several experiments (Corel-1000's splits)."""
    def cell(v):
        return "–" if v is None else f"{pct(v[0])} / {pct(v[1])}"

    def line(r, name):
        paper = "–" if r["paper"] is None else f"{r['paper'][1]:.1f} ({r['paper'][0]}) vs ours {r['paper'][2]:.1f}"
        return f"| {name} | {r['backbone']} | {paper} | " + " | ".join(cell(r[m]) for m in METRICS) + " |"

    out = [line(r, r["experiment"]) for r in rows]
    groups = {}
    for r in rows:
        if r["group"]:
            groups.setdefault((r["group"], r["backbone"]), []).append(r)
    for (group, backbone), members in groups.items():
        if len(members) < 2:
            continue
        mean = {"backbone": backbone, "paper": None}
        for m in METRICS:
            got = [r[m] for r in members if r[m] is not None]
            mean[m] = tuple(float(pd.Series(v).mean()) for v in zip(*got)) if got else None
        papers = [r["paper"] for r in members if r["paper"]]
        if papers:
            mean["paper"] = (papers[0][0], papers[0][1], float(pd.Series([p[2] for p in papers]).mean()))
        out.append(line(mean, f"**{group}** (mean of {len(members)})"))
    return out


def experiment_section(root: Path, papers: dict) -> list[str]:
    lines = [f"## {root.name}", "", f"Job time {run_seconds(root) / 60:.1f} min (the run's `benchmarks/` files).",
             "", "```", *summary(root), "```", ""]
    for backbone, (table_id, comp) in papers.items():
        if comp is not None and not comp.empty:
            lines += [comparison_markdown(comp, f"{root.name} / {backbone}: ours / paper's Table {table_id} "
                                                f"(difference), plain SVM (`svm.center: none`)"), ""]
    lines += (root / "tables.md").read_text().splitlines()
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results/<experiment> of finished runs in one clean clone")
    p.add_argument("--command", action="append", default=[], help="a command that made the runs (repeat; listed)")
    p.add_argument("--out", type=Path, help="the markdown file to write (default: print)")
    args = p.parse_args(argv)
    for root in args.results:
        require_run(root, "selection", "tables.md", "accuracy.csv")
    commits = {root: run_commit(root.resolve()) for root in args.results}
    if len(set(commits.values())) != 1:
        raise SystemExit("runs of different commits: " + ", ".join(f"{r} {c[:7]}" for r, c in commits.items()))
    commit = next(iter(commits.values()))
    newest = max((p.stat().st_mtime for root in args.results for p in (root / "selection").glob("*.csv")))
    date = datetime.fromtimestamp(newest, timezone.utc).strftime("%Y-%m-%d")
    lines = ["# Every pair at one commit", "",
             "<!-- generated by benchmarks/pair_tables.py: rerun it instead of editing -->", "",
             f"Runs of commit `{commit[:7]}` (a clone without local changes), finished {date}, on {machine()}; "
             f"generated by `python benchmarks/pair_tables.py {' '.join(f'results/{r.name}' for r in args.results)}`"
             " in that clone's folder.", ""]
    if args.command:
        lines += ["Commands:", "", "```bash", *args.command, "```", ""]
    lines += ["Accuracy / balanced accuracy, %. **paper**: the paper's best cell of its table for the pair and "
              "backbone, and ours on the same cells with the plain SVM (the paper's setting). **floor**: the Global "
              "feature set without an adapter at the run's centring. **default**: what a user gets without target "
              "labels (the label-free default; its predictions are `predictions/<backbone>.csv`). **best**: the "
              "grid's best cell by target labels (no label-free method can know it; a refined default can exceed it).",
              "",
              "| experiment | backbone | paper | source only | floor | default | best |",
              "|---|---|---|---|---|---|---|"]
    papers = {root: paper_rows(root) for root in args.results}
    lines += headline_markdown([row for root in args.results for row in headline(root, papers[root])])
    lines.append("")
    for root in args.results:
        lines += experiment_section(root, papers[root])
    text = "\n".join(lines).rstrip() + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
