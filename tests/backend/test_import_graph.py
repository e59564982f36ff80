"""The project's import graph: no cycle among its own modules, and nothing below the engine imports it.

Every import statement counts, wherever it sits: module level, inside a function (a lazy import), under
`if TYPE_CHECKING:`. A lazy import hides a cycle from the interpreter but not from a reader, so it counts.
Modules are files; `from a.b import c` is an edge to the module a.b.c when that file exists, else to a.b.
Importing a package runs its __init__, so an edge to a package's module is an edge to its __init__.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backend", "addon")
# The layers below the engine: they are driven by it and must not reach back up into it.
BELOW_ENGINE = ("backend.core", "backend.priors", "backend.methods", "backend.representations",
                "backend.renderers", "backend.io")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The deepest project module that `name` (a module or a name inside one) belongs to."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (every import statement, lazy and type-only included)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{node.module}" if node.module else anchor
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    hit = _resolve(".".join(parts[:i]), mods)
                    if hit and hit != mod and not mod.startswith(hit + "."):
                        edges[mod].add(hit)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def test_the_graph_sees_lazy_and_type_only_imports():
    # The counting rules themselves: a known lazy import and a known package edge are in the graph.
    edges = import_graph()
    assert "backend.config" in edges["backend.presets.common"]
    assert "backend.priors.reference.cache" in edges["backend.presets.common"]  # imported inside a function
    assert "backend.presets" in edges["backend.cli"]  # `from backend import presets`, lazily
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_backend_or_addon():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_below_the_engine_imports_it():
    upward = sorted(f"{mod} -> {dep}" for mod, deps in import_graph().items()
                    if mod.startswith(BELOW_ENGINE) for dep in deps if dep.startswith("backend.engine"))
    assert not upward, "imports from below the engine into it: " + ", ".join(upward)


def test_core_and_io_are_the_bottom_layers():
    # core/ needs nothing of the project; io/ (file formats) needs only core/ and itself.
    graph = import_graph()
    wrong = sorted(f"{mod} -> {dep}" for mod, deps in graph.items() for dep in deps if dep != "backend" and (
        (mod.startswith("backend.core") and not dep.startswith("backend.core"))
        or (mod.startswith("backend.io") and not dep.startswith(("backend.core", "backend.io")))))
    assert not wrong, "imports out of the bottom layers: " + ", ".join(wrong)
