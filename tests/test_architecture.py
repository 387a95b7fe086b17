"""The package's shape: no import cycles, no file over 400 lines, no function over 60 lines.

Read from the source with :mod:`ast`, nothing is imported. Run it alone to list what breaks
a rule (``python tests/test_architecture.py``), or as a test (``scripts/test
tests/test_architecture.py``).

An import cycle here is one among the imports a module runs when it is imported: those at
module level (inside ``try`` and ``if`` too, but not under ``if TYPE_CHECKING:``). Importing
``a.b.c`` runs the packages ``a`` and ``a.b`` first, so a module depends on the packages
above what it imports as well. Imports inside functions run later: they are how a module
keeps a heavy import until it is needed. They must not close a cycle either (a layer that
reaches back up at run time is a cycle by another name): :func:`import_graph` with
``deferred`` counts them too, module to module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeagent"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
EXEMPT_DIRS = ("bench",)
"""Benches are long scripts of measurements: the function limit does not apply to them."""



def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _all_import_nodes(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, in functions too, but none under ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _all_import_nodes(node.orelse)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _all_import_nodes([n for n in block if isinstance(n, ast.stmt | ast.excepthandler)])


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module with this body is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_nodes(block)


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its import runs (with the packages above them); with
    ``deferred``, module -> every package module it imports anywhere (in functions too)."""
    mods = modules()

    def owner(name: str) -> str | None:  # the module that defines ``name``
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node in (_all_import_nodes if deferred else _import_time_nodes)(body):
            if isinstance(node, ast.Import):
                targets.update(owner(a.name) for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:  # ``from pkg import mod`` imports the module mod
                full = f"{base}.{alias.name}"
                targets.add(full if full in mods else owner(base))
        deps: set[str] = set()
        for target in targets:
            if target is None:
                continue
            parts = target.split(".")
            for i in range(len(parts) if deferred else 1, len(parts) + 1):
                above = ".".join(parts[:i])
                if above in mods and not (name == above or name.startswith(above + ".")):
                    deps.add(above)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def long_files() -> list[tuple[str, int]]:
    """(file, lines) over :data:`MAX_FILE_LINES`."""
    out = []
    for path in modules().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            out.append((rel(path), n))
    return out


def long_functions() -> list[tuple[str, int, str, int]]:
    """(file, line, function, lines) over :data:`MAX_FUNCTION_LINES` (decorators not counted;
    the docstring is), outside the benches."""
    out = []
    for path in modules().values():
        where = rel(path)
        if any(d in path.relative_to(PACKAGE).parts[:-1] for d in EXEMPT_DIRS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append((where, node.lineno, node.name, n))
    return out


def test_no_import_cycles_inside_the_package() -> None:
    assert import_cycles(import_graph()) == []


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    assert import_cycles(import_graph(deferred=True)) == []


def test_the_import_graph_sees_imports() -> None:
    """The checker itself: it finds module-level imports and leaves TYPE_CHECKING ones out."""
    graph = import_graph()
    assert "edgeagent.local_job" in graph["edgeagent.runner"]
    assert "edgeagent.audio" in graph["edgeagent.local_job"]  # the package above audio.local_devices
    assert "edgeagent.voice.stages" not in graph["edgeagent.runner"]  # imported inside a function
    assert "edgeagent.device.lifecycle" not in graph["edgeagent.local_job"]  # under TYPE_CHECKING
    assert "edgeagent.voice.stages" in import_graph(deferred=True)["edgeagent.runner"]
    assert "edgeagent.device.lifecycle" not in import_graph(deferred=True)["edgeagent.local_job"]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_file_over_400_lines() -> None:
    assert long_files() == []


def test_no_function_over_60_lines_outside_the_benches() -> None:
    assert long_functions() == []


if __name__ == "__main__":
    problems = [f"import cycle: {' -> '.join(c)}" for c in import_cycles(import_graph())]
    problems += [f"import cycle (inside functions too): {' -> '.join(c)}"
                 for c in import_cycles(import_graph(deferred=True))]
    problems += [f"{f}: {n} lines (> {MAX_FILE_LINES})" for f, n in long_files()]
    problems += [f"{f}:{line}: {name} is {n} lines (> {MAX_FUNCTION_LINES})" for f, line, name, n in long_functions()]
    print("\n".join(problems)
          or "no import cycles (not even inside functions), no file over 400 lines, no function over 60 lines")
    sys.exit(1 if problems else 0)
