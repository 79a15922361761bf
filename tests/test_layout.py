"""The tree shows the flow (README, Layout): no import cycle between the project's modules, with
function-level imports counted; no source module over 450 lines; every exit code named in one
module; the design card's top level in place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "predictions")
MAX_LINES = 450


def project_modules() -> dict[str, Path]:
    """Module name → file, for entrypoint.py and every module under the two packages."""
    modules = {"entrypoint": ROOT / "entrypoint.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (module level or inside a function)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_function_level_imports_counted():
    modules = project_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []
    # a package's own modules stay apart from the stages after it: the store never reads reports
    assert not any(m.startswith("predictions.report") for n, deps in graph.items()
                   if n.startswith("predictions.store") for m in deps)
    assert not any(m.startswith("trainer.pod") for n, deps in graph.items()
                   if n.startswith("trainer.config") for m in deps)


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_source_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in project_modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_exit_code_is_named_in_one_module():
    exits = ROOT / "trainer" / "config" / "exits.py"
    named = re.compile(r"^\s*EXIT_\w+\s*=\s*\d+", re.M)
    elsewhere = [str(p.relative_to(ROOT)) for p in project_modules().values()
                 if p != exits and named.search(p.read_text())]
    assert elsewhere == []
    # and no bare sysexits number returned where a name exists
    bare = re.compile(r"\breturn (6[4-9]|7[0-8])\b")
    assert [str(p.relative_to(ROOT)) for p in project_modules().values() if bare.search(p.read_text())] == []


def test_the_design_cards_top_level_is_in_place():
    for entry in ("Dockerfile", "entrypoint.py", "trainer", "predictions", "sql", "tests", "runpod.json"):
        assert (ROOT / entry).exists(), entry
