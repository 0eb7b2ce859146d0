"""No import cycles among the project's modules (``pipeline/``, ``stages/``).

A module's imports are read from its source (at module level and inside functions, so a cycle hidden
behind a lazy import counts too); a package's ``__init__`` is left out, as importing a submodule runs it
but it names no submodule back here. A cycle makes the import order matter and usually means one of the
modules holds something the other should own: move it to the lower one instead of importing lazily.
"""

from __future__ import annotations

from pathlib import Path

from tests.project_imports import PACKAGES, ROOT, imported_names, module_file


def import_graph(root: Path) -> dict[str, set[str]]:
    """module file (relative to ``root``) -> the project module files it imports."""
    graph = {}
    for path in sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")):
        found = {module_file(n, root) for n in imported_names(path)}
        graph[path.relative_to(root).as_posix()] = {
            f.relative_to(root).as_posix() for f in found if f is not None and f != path and f.name != "__init__.py"
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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


def test_the_project_has_no_import_cycles():
    graph = import_graph(ROOT)
    assert "pipeline/execute_ray.py" in graph["pipeline/execute.py"]  # the graph sees the project's imports
    assert not cycles(graph), f"import cycles (move the shared part to a lower module): {cycles(graph)}"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text('"""Package."""\n')
    (tmp_path / "pipeline" / "a.py").write_text("from pipeline.b import g\n")
    (tmp_path / "pipeline" / "b.py").write_text("def g():\n    from pipeline import c\n")
    (tmp_path / "pipeline" / "c.py").write_text("import pipeline.a\n")
    (tmp_path / "stages" / "s.py").write_text("from pipeline.a import x\n")
    assert cycles(import_graph(tmp_path)) == [["pipeline/a.py", "pipeline/b.py", "pipeline/c.py"]]
