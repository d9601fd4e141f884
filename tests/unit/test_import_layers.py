"""The import graph of tasks/, flows/ and cli/ (every import: module level, inside functions, under TYPE_CHECKING)
follows the layer order of the developers' guide and has no circle.

Layer order (lower may never import higher): tasks.support < tasks.edge < tasks.runtime < tasks.pipeline and
tasks.demo < tasks.operations < flows < cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("tasks", "flows", "cli")
LAYERS = {
    "tasks.support": 0,
    "tasks.edge": 1,
    "tasks.runtime": 2,
    "tasks.pipeline": 3,
    "tasks.demo": 3,
    "tasks.operations": 4,
    "flows": 5,
    "cli": 6,
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's code, by dotted name."""
    return {module_name(p, root): p for d in CODE_DIRS for p in sorted((root / d).rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body: `import a.b`, `from a import b` (b a module or a
    name in a), `from .x import y`. A package's own `__init__` counts only when nothing below it is named."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int | None:
    for prefix, rank in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if name == prefix or name.startswith(prefix + "."):
            return rank
    return None  # a package's own __init__ (tasks, tasks.edge, ...): no layer of its own


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(path, name, set(found)) for name, path in found.items()}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            a, b = layer(src), layer(dst)
            if a is not None and b is not None and b > a:
                bad.append(f"{src} -> {dst}")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_higher_layer() -> None:
    edges = graph()
    assert len(edges) > 50 and "tasks.edge.runners" in edges
    bad = upward_imports(edges)
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    found = circles(graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_check_sees_imports_inside_functions_and_circles(tmp_path: Path) -> None:
    """A check that cannot fail is no check: a function-level upward import and a two-module circle are found."""
    for d in CODE_DIRS:
        (tmp_path / d).mkdir()
    (tmp_path / "tasks" / "support").mkdir()
    (tmp_path / "tasks" / "pipeline").mkdir()
    (tmp_path / "tasks" / "support" / "low.py").write_text("def f():\n    from tasks.pipeline import high\n")
    (tmp_path / "tasks" / "pipeline" / "high.py").write_text("from tasks.support.low import f\n")
    (tmp_path / "tasks" / "pipeline" / "other.py").write_text("from . import high\n")
    edges = graph(tmp_path)
    assert edges["tasks.pipeline.other"] == {"tasks.pipeline.high"}
    assert upward_imports(edges) == ["tasks.support.low -> tasks.pipeline.high"]
    assert circles(edges) == [["tasks.pipeline.high", "tasks.support.low"]]
