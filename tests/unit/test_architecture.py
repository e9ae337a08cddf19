"""The layout's rules that import-linter cannot state: no import cycle among the package's modules (every
import counts, also those inside functions), cli.py uses only the public API and the report, and the
size limits (files ~400 lines, functions ~60) outside the emitted program's template."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

from conftest import ROOT

PACKAGE = ROOT / "planner"
TEMPLATES = PACKAGE / "program" / "templates"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The planner modules `path` imports, anywhere in the file (relative imports resolved)."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m in modules}


def _graph() -> nx.DiGraph:
    files = [p for p in PACKAGE.rglob("*.py") if TEMPLATES not in p.parents]
    modules = {_module(p) for p in files}
    g = nx.DiGraph()
    for p in files:
        g.add_node(_module(p))
        for m in _imports(p, modules):
            if m != _module(p):
                g.add_edge(_module(p), m)
    return g


def test_no_import_cycles():
    g = _graph()
    # a package's __init__ re-exporting its own modules is not a cycle unless a module imports it back
    for pkg in [n for n in g if (PACKAGE / Path(*n.split(".")[1:]) / "__init__.py").is_file()]:
        g.remove_edges_from([(pkg, m) for m in list(g.successors(pkg)) if m.startswith(pkg + ".")])
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles
    assert g.number_of_edges() > 80  # the graph really was read


def test_the_graph_reads_relative_and_lazy_imports():
    """The checker itself: the runtime's relative imports and a function-level import are edges."""
    g = _graph()
    assert g.has_edge("planner.program.runtime.data_parallel", "planner.program.runtime.policy")
    assert g.has_edge("planner.api", "planner.search.planning")


def test_cli_uses_only_the_public_api_and_the_report():
    allowed = {"planner", "planner.api", "planner.report", "planner.errors"}
    tree = ast.parse((ROOT / "cli.py").read_text())
    used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in used if m.split(".")[0] == "planner"} <= allowed


def test_sizes():
    """No file over ~400 lines and no function over ~60 outside the emitted program's template."""
    long_files, long_functions = [], []
    for p in [*PACKAGE.rglob("*.py"), ROOT / "cli.py"]:
        if TEMPLATES in p.parents:
            continue
        text = p.read_text()
        if text.count("\n") > 420:
            long_files.append((str(p), text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 65:
                long_functions.append((f"{p}:{node.lineno}", node.name, node.end_lineno - node.lineno + 1))
    assert not long_files and not long_functions, (long_files, long_functions)
