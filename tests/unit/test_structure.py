"""The package's shape: no import cycles between layerfuse's modules, counting function-local imports too."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layerfuse"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, at module level and inside functions alike."""
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_sees_a_cycle():
    """The checker itself: a two-module cycle and a chain."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def local_imports(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """``(file, line, text)`` of every import inside a function or class of the package."""
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        found.append((path.name, sub.lineno, lines[sub.lineno - 1]))
    return sorted(set(found))


def test_function_local_imports_are_few_and_say_why():
    """Imports inside functions only for heavy dependencies (torch, skada, matplotlib, pandas for the CLI),
    each with its reason on its line; everything else at the top of its module."""
    found = local_imports()
    assert len(found) <= 20, "\n".join(f"{f}:{n}: {t.strip()}" for f, n, t in found)
    silent = [f"{f}:{n}: {t.strip()}" for f, n, t in found if "#" not in t]
    assert not silent, "local imports without a reason: " + "; ".join(silent)


def test_the_workflows_plan_imports_neither_torch_nor_scikit_learn():
    """Every Snakemake process parses the Snakefile (each job's on a cluster, each dry run): the modules
    ``rules/common.smk`` imports must not load torch (2 s) or scikit-learn (with scipy.stats, most of a second);
    only the stages that compute load them."""
    import re

    common = (PACKAGE.parent / "rules" / "common.smk").read_text()
    # ``from layerfuse import job_memory`` names a module; ``from layerfuse.config import x`` a module's name
    modules = sorted({f"{m}.{name}" if m == "layerfuse" else m
                      for m, name in re.findall(r"^\s*from (layerfuse[.\w]*) import \(?\s*(\w+)", common, flags=re.M)})
    assert "layerfuse.config" in modules and "layerfuse.job_memory" in modules
    assert _loaded_after("; ".join(f"import {m}" for m in modules), ("torch", "sklearn", "skada")) == [], modules


def test_a_scoring_job_loads_no_torch():
    """A job (``layerfuse._snakemake.run``) that scores the label-free criteria and fits skada's adapters imports
    skada, whose POT would load torch as a backend (2 s a job): the job leaves that backend out."""
    assert _loaded_after("from layerfuse._snakemake import run; from layerfuse import select; "
                         "from layerfuse.adapt import make_adapter; "
                         "run(lambda: (select._scorers(0), make_adapter({'method': 'linear_ot'})))",
                         ("skada", "torch")) == ["skada"]


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a new interpreter has loaded after running ``code``."""
    import subprocess
    import sys

    probe = code + f"; import sys; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()
