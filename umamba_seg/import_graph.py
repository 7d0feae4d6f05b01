"""The package's import graph, read from the source with :mod:`ast`, checked against its layers.

Every ``import x``, ``from x import y`` and relative ``from .x import y`` of the package's own
modules counts, at module level and inside functions, classes or ``if`` blocks alike (a
function-level import is a dependency all the same). An edge goes to the deepest module the
statement names (``from umamba_seg.architectures import registry`` -> ``...registry``).
Imports by string (``importlib.import_module``, plans' ``pydoc.locate`` paths) are data, not
code structure, and are not edges.

:func:`upward_edges` lists imports from a lower layer of :mod:`umamba_seg.layers` to a higher
one, :func:`cycles` every group of modules that import each other around a loop, and
:func:`layer_edge_counts` the edges between layers (:func:`format_matrix` draws them). ``python -m umamba_seg.import_graph``
prints all three.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from umamba_seg import layers

PACKAGE_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    """One import statement: ``source`` imports ``target`` at ``file:line``."""

    source: str
    target: str
    file: str
    line: int

    def describe(self) -> str:
        """``file:line: source -> target (layer -> layer)``."""
        return (
            f"{self.file}:{self.line}: {self.source} -> {self.target} "
            f"({_layer_or_unplaced(self.source)} -> {_layer_or_unplaced(self.target)})"
        )


def _layer_or_unplaced(module: str) -> str:
    try:
        return layers.layer_of(module)
    except KeyError:
        return "unplaced"


def module_files(root: Path = PACKAGE_ROOT, package: str = layers.PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``root`` (a package ``__init__`` is the package)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: Iterable[str]) -> str:
    """The deepest known module that ``name`` (a dotted module or module.attribute) lies in."""
    known = set(modules)
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) if parts else name


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import node brings in (``from a import b`` gives ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if prefix == "__future__":
        return []
    return [f"{prefix}.{alias.name}" if alias.name != "*" else prefix for alias in node.names] or [prefix]


def edges_of_source(
    source: str, module: str, file: str, modules: Iterable[str], is_package: bool = False, package: str = layers.PACKAGE
) -> list[Edge]:
    """Edges from the Python ``source`` of ``module`` to other modules of ``package``."""
    known = set(modules) | {module}
    out: list[Edge] = []
    for node in ast.walk(ast.parse(source, filename=file)):
        for name in _imported_names(node, module, is_package):
            if name != package and not name.startswith(package + "."):
                continue
            target = _resolve(name, known)
            if target != module:
                out.append(Edge(module, target, file, node.lineno))
    return sorted(set(out), key=lambda e: (e.file, e.line, e.target))


def package_edges(root: Path = PACKAGE_ROOT, package: str = layers.PACKAGE) -> list[Edge]:
    """Every import edge between the package's own modules, files relative to ``root``'s parent."""
    files = module_files(root, package)
    out: list[Edge] = []
    for module, path in files.items():
        rel = path.relative_to(root.parent).as_posix()
        out += edges_of_source(
            path.read_text(encoding="utf-8"), module, rel, files, is_package=path.name == "__init__.py", package=package
        )
    return out


def unplaced_modules(modules: Iterable[str]) -> list[str]:
    """Modules whose top-level name the layer table does not place."""
    return sorted(m for m in modules if layers.top_level(m) not in layers.placed_top_levels())


def upward_edges(edges: Iterable[Edge]) -> list[Edge]:
    """Edges from a lower layer to a higher one."""
    return [e for e in edges if layers.rank(e.source) < layers.rank(e.target)]


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Groups of modules (sorted, each of two or more) that reach each other through imports."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):  # Tarjan's strongly connected components, iteratively
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def cycle_edges(edges: Iterable[Edge], group: Iterable[str]) -> list[Edge]:
    """The edges that stay inside one cycle group (what to cut to break it)."""
    members = set(group)
    return [e for e in edges if e.source in members and e.target in members]


def layer_edge_counts(edges: Iterable[Edge]) -> Counter:
    """``{(from layer, to layer): number of distinct module pairs}``."""
    pairs = {(e.source, e.target) for e in edges}
    return Counter((layers.layer_of(s), layers.layer_of(t)) for s, t in pairs)


def format_matrix(counts: Mapping[tuple[str, str], int]) -> list[str]:
    """The counts as a table, one row per importing layer (names cut to 5 letters); ``^`` marks upward cells."""
    names = layers.LAYER_NAMES
    lines = [f"{'from/to':>7} " + " ".join(f"{n[:5]:>5}" for n in names)]
    for i, src in enumerate(names):
        cells = []
        for j, dst in enumerate(names):
            n = counts.get((src, dst), 0)
            cells.append(f"{(str(n) + ('^' if j > i else '')) if n else '.':>5}")
        lines.append(f"{src[:5]:>7} " + " ".join(cells))
    return lines


def report(root: Path = PACKAGE_ROOT) -> list[str]:
    """The lines ``python -m umamba_seg.import_graph`` prints."""
    edges = package_edges(root)
    lines = []
    unplaced = unplaced_modules(module_files(root))
    if unplaced:
        lines += ["modules without a layer (add them to umamba_seg/layers.py):", *unplaced, ""]
        return lines
    pairs = {(e.source, e.target) for e in edges}
    lines.append(f"{len(module_files(root))} modules, {len(pairs)} module-to-module edges")
    lines += [
        "",
        "layer-to-layer edges (distinct module pairs; ^ points up):",
        *format_matrix(layer_edge_counts(edges)),
    ]
    up = upward_edges(edges)
    lines += ["", f"upward edges: {len(up)}", *(e.describe() for e in up)]
    groups = cycles(edges)
    lines += ["", f"cycles: {len(groups)}"]
    for group in groups:
        lines.append("  " + " <-> ".join(group))
        lines += ["    " + e.describe() for e in cycle_edges(edges, group)]
    return lines


def main() -> int:
    """Print the report; exit status 1 when an edge points up or modules form a cycle."""
    edges = package_edges()
    print("\n".join(report()))  # a developer's command: its report is its output
    bad = unplaced_modules(module_files(PACKAGE_ROOT)) or upward_edges(edges) or cycles(edges)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
