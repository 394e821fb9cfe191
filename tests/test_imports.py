"""No import cycles in `src/mpa`: the import graph, read from the source with `ast`, has no cycle.

Every import counts, including those inside functions: a cycle "held apart" by a function-level import still
means two modules that each need the other, and it breaks as soon as someone moves that import to the top.
Only imports under `if TYPE_CHECKING:` are left out (they never run). grimp / import-linter are not installed,
so the graph is built here (grimp's conventions: `from pkg import name` is an edge to `pkg.name` when that is a
module, else to `pkg`; a package's `__init__` importing its own submodule is an edge like any other).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files() -> dict[str, Path]:
    """Every module under src/mpa by dotted name (a package by its own name, for its `__init__.py`)."""
    out = {}
    for path in sorted((SRC / "mpa").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """All nodes below `node`, skipping the bodies of `if TYPE_CHECKING:` (but not their `else:`)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that module `name` (at `path`) imports anywhere outside `if TYPE_CHECKING:`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `.` is this module's package, `..` its parent
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import mpa.x.y` of a name inside mpa.x: the module mpa.x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import chain from `start` back to itself (breadth first), or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module]):
            if target == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return chain[::-1]
            if target not in came_from:
                came_from[target] = module
                queue.append(target)
    return None


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through each module on one, each listed once as `a -> b -> a` (from its first name)."""
    cycles = set()
    for start in graph:
        chain = shortest_cycle(graph, start)
        if chain:
            i = chain.index(min(chain))
            chain = chain[i:] + chain[:i]
            cycles.add(" -> ".join([*chain, chain[0]]))
    return sorted(cycles)


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports(name, path, set(modules)) for name, path in modules.items()}


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/mpa (break each so the dependency goes one way):\n" + "\n".join(cycles)


def test_graph_sees_function_level_relative_and_submodule_imports(tmp_path: Path) -> None:
    """The graph builder itself: what counts as an edge (and `if TYPE_CHECKING:` does not)."""
    source = """
from typing import TYPE_CHECKING
from . import b
from .. import c
if TYPE_CHECKING:
    import pkg.d
else:
    import pkg.e.thing
def f():
    from pkg.sub.b import name
"""
    (tmp_path / "a.py").write_text(source)
    modules = {"pkg", "pkg.c", "pkg.d", "pkg.e", "pkg.sub", "pkg.sub.a", "pkg.sub.b"}
    assert imports("pkg.sub.a", tmp_path / "a.py", modules) == {"pkg.sub.b", "pkg.c", "pkg.e"}
    assert find_cycles({"x": {"y"}, "y": {"z", "x"}, "z": {"x"}, "w": {"x"}}) == ["x -> y -> x", "x -> y -> z -> x"]
