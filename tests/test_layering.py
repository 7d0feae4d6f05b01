"""Imports point one way (umamba_seg.layers) and form no cycle; no file of the repository edits sys.path.

The walk (umamba_seg.import_graph) reads every import with ``ast``: module level and inside
functions, absolute and relative. The synthetic-package tests show that the checks can fail
and that a failure names the file, line, modules and layers of each offending edge.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from umamba_seg import import_graph, layers

REPO = Path(__file__).resolve().parents[1]


def _failure(title: str, edges: list[import_graph.Edge]) -> str:
    return title + ":\n" + "\n".join("  " + e.describe() for e in edges)


@pytest.fixture(scope="module")
def edges() -> list[import_graph.Edge]:
    return import_graph.package_edges()


def test_every_module_has_a_layer_and_every_entry_a_module():
    modules = import_graph.module_files()
    unplaced = import_graph.unplaced_modules(modules)
    assert not unplaced, f"add these modules to a layer in umamba_seg/layers.py: {unplaced}"
    present = {layers.top_level(m) for m in modules}
    stale = sorted(layers.placed_top_levels() - present)
    assert not stale, f"umamba_seg/layers.py places modules that do not exist: {stale}"


def test_no_upward_import(edges):
    up = import_graph.upward_edges(edges)
    assert not up, _failure("imports from a lower layer to a higher one (see umamba_seg/layers.py)", up)


def test_no_import_cycle(edges):
    groups = import_graph.cycles(edges)
    lines = [f"{' <-> '.join(g)}\n" + _failure("  edges", import_graph.cycle_edges(edges, g)) for g in groups]
    assert not groups, "modules that import each other:\n" + "\n".join(lines)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "umamba_seg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "umamba_seg"


def test_synthetic_upward_edges_and_cycle_are_reported_with_file_and_line(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": """\
            import os


            def late():
                from umamba_seg.cli import main  # upward, inside a function
                return main
            """,
            "cli.py": "from umamba_seg.errors import late\n",
            "ops/__init__.py": "",
            "ops/a.py": "from . import b\n",  # relative: ops.a -> ops.b
            "ops/b.py": "from .a import thing\n",  # relative: ops.b -> ops.a, a cycle
            "nn/__init__.py": "",
            "nn/layer.py": """\
            import typing

            if typing.TYPE_CHECKING:
                import umamba_seg.training.loop  # upward even when only for type hints
            """,
            "training/__init__.py": "",
            "training/loop.py": "from ..nn import layer\n",  # two dots: umamba_seg.nn.layer (downward)
        },
    )
    edges = import_graph.package_edges(pkg)
    assert {(e.source, e.target) for e in edges} == {
        ("umamba_seg.errors", "umamba_seg.cli"),
        ("umamba_seg.cli", "umamba_seg.errors"),
        ("umamba_seg.ops.a", "umamba_seg.ops.b"),
        ("umamba_seg.ops.b", "umamba_seg.ops.a"),
        ("umamba_seg.nn.layer", "umamba_seg.training.loop"),
        ("umamba_seg.training.loop", "umamba_seg.nn.layer"),
    }
    up = import_graph.upward_edges(edges)
    assert [e.describe() for e in up] == [
        "umamba_seg/errors.py:5: umamba_seg.errors -> umamba_seg.cli (base -> cli)",
        "umamba_seg/nn/layer.py:4: umamba_seg.nn.layer -> umamba_seg.training.loop (nn -> training)",
    ]
    assert import_graph.cycles(edges) == [
        ["umamba_seg.cli", "umamba_seg.errors"],
        ["umamba_seg.nn.layer", "umamba_seg.training.loop"],
        ["umamba_seg.ops.a", "umamba_seg.ops.b"],
    ]
    around = import_graph.cycle_edges(edges, ["umamba_seg.ops.a", "umamba_seg.ops.b"])
    assert sorted(e.describe() for e in around) == [
        "umamba_seg/ops/a.py:1: umamba_seg.ops.a -> umamba_seg.ops.b (ops -> ops)",
        "umamba_seg/ops/b.py:1: umamba_seg.ops.b -> umamba_seg.ops.a (ops -> ops)",
    ]
    report = "\n".join(import_graph.report(pkg))
    assert "upward edges: 2" in report and "cycles: 3" in report
    assert "umamba_seg/errors.py:5: umamba_seg.errors -> umamba_seg.cli (base -> cli)" in report
    assert "1^" in report  # the matrix marks the upward cells


def test_a_module_outside_the_table_is_reported(tmp_path):
    pkg = _write(tmp_path, {"__init__.py": "", "errors.py": "", "gadgets/__init__.py": "", "gadgets/x.py": ""})
    assert import_graph.unplaced_modules(import_graph.module_files(pkg)) == [
        "umamba_seg.gadgets",
        "umamba_seg.gadgets.x",
    ]
    assert "modules without a layer" in "\n".join(import_graph.report(pkg))


def test_a_longer_cycle_in_one_layer_is_found(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "planning/__init__.py": "",
            "planning/p.py": "import umamba_seg.planning.q\n",
            "planning/q.py": "from umamba_seg.planning import r\n",
            "planning/r.py": "def f():\n    from umamba_seg.planning.p import g\n",
            "planning/s.py": "from umamba_seg.planning import p\n",  # points into the loop, is not part of it
        },
    )
    edges = import_graph.package_edges(pkg)
    assert import_graph.upward_edges(edges) == []
    assert import_graph.cycles(edges) == [["umamba_seg.planning.p", "umamba_seg.planning.q", "umamba_seg.planning.r"]]


def test_layer_edge_counts_mark_upward_pairs():
    e = import_graph.Edge
    edges = [
        e("umamba_seg.nn.x", "umamba_seg.ops.y", "f", 1),
        e("umamba_seg.nn.x", "umamba_seg.ops.y", "f", 9),
        e("umamba_seg.nn.x", "umamba_seg.ops.z", "f", 2),
        e("umamba_seg.ops.y", "umamba_seg.cli", "g", 3),
    ]
    counts = import_graph.layer_edge_counts(edges)
    assert counts == {("nn", "ops"): 2, ("ops", "cli"): 1}  # distinct module pairs
    header, *rows = import_graph.format_matrix(counts)
    assert header.split() == ["from/to", *(n[:5] for n in layers.LAYER_NAMES)]
    by_layer = {row.split()[0]: row.split()[1:] for row in rows}
    assert by_layer["ops"] == [".", ".", ".", ".", ".", ".", ".", ".", ".", "1^"]
    assert by_layer["nn"] == [".", "2", ".", ".", ".", ".", ".", ".", ".", "."]
    assert all(set(cells) == {"."} for name, cells in by_layer.items() if name not in ("ops", "nn"))


def _python_files() -> list[Path]:
    """The repository's own Python files (not a virtual environment or cache inside the checkout)."""
    roots = [REPO / "umamba_seg", REPO / "scripts", REPO / "tests", REPO / ".ci"]
    files = [p for root in roots if root.is_dir() for p in root.rglob("*.py")] + sorted(REPO.glob("*.py"))
    return [
        p
        for p in files
        if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(REPO).parts[1:-1])
    ]


def test_no_file_touches_sys_path():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, "sys.path used (make the code importable from the package instead): " + ", ".join(offenders)


def test_scripts_import_no_other_script():
    scripts = {p.stem for p in (REPO / "scripts").glob("*.py")}
    offenders = []
    for path in (REPO / "scripts").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if isinstance(node, ast.ImportFrom) and node.level:
                names = ["."]
            for name in names:
                if name == "." or name.split(".")[0] in scripts | {"scripts"}:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not offenders, "scripts are thin entry points; shared code lives in the package: " + ", ".join(offenders)


def test_the_table_in_the_docstring_names_every_module_in_its_layer():
    rows: dict[str, str] = {}
    lines = layers.__doc__.splitlines()
    borders = [i for i, line in enumerate(lines) if line.startswith("=" * 13)]
    assert len(borders) == 3, "umamba_seg/layers.py's docstring holds one table (three border lines)"
    name = None
    for line in lines[borders[1] + 1 : borders[2]]:
        if line[:1].strip():
            name, text = line.split(None, 1)
            rows[name] = text
        elif name is not None:
            rows[name] += " " + line.strip()
    assert list(rows) == list(layers.LAYER_NAMES)
    for layer, tops in layers.LAYERS:
        missing = [t for t in tops if t and t not in rows[layer]]
        assert not missing, f"the docstring's row '{layer}' of umamba_seg/layers.py does not name {missing}"
