"""The package's layers: which top-level module may import which.

Imports point one way, from a higher layer to a lower one or within one layer, never up
(not even inside a function), and no two modules import each other, directly or around a
loop. A reader can then understand any module from the ones below it, and a low layer can
be tested without building what sits above it. ``tests/test_layering.py`` enforces this
table over every ``import`` in the package (:mod:`umamba_seg.import_graph` walks them);
``python -m umamba_seg.import_graph`` prints the layer-to-layer edge counts.

Lowest first:

=============  =========================================================================
layer          top-level modules and why they sit there
=============  =========================================================================
base           errors, atomic, locking, safe_paths, safe_pickle, devices, workspace:
               user errors, atomic writes, locks, path and pickle checks, device
               choice, the nnU-Net folder layout. image_files, case_files, label_files,
               instance_labels, plotting: checking image files and how a case's
               channels are named, reading label and instance files, one plot style.
               data: synthetic datasets (numpy, written through the readers above).
               convert: public datasets' downloads to the nnU-Net raw layout.
               layers, import_graph: this table and the walk that checks it. log: the
               package logger the CLI sets up (library code only gets loggers).
               json_files: reading JSON that others wrote, with one-line errors. The
               package root (``umamba_seg``, its version) counts as base too.
ops            ops: the selective scan, mLSTM and scan orders; kernels, PyTorch paths.
nn             nn: layers built on the ops (Mamba mixer, ViL block, cross scan, ...).
architectures  architectures: networks, their registry, presets, the plans allow-list.
planning       planning: plans, preprocessing, the memory model; verify (the dataset check
               planning runs first; it reads the plans allow-list of architectures).
training       training: the trainer, optimizer recipes, checkpoints, DDP.
inference      inference: prediction and the model loader.
evaluation     evaluation: metrics, ensembling, post-processing, find-best.
application    benchmark, demo, interop (import/export/install of models): workflows
               that run several of the layers below.
cli            the command line (``cli``, ``__main__``), the one entry point above all.
=============  =========================================================================
"""

from __future__ import annotations

PACKAGE = "umamba_seg"

# (layer name, top-level modules of the package in that layer), lowest layer first.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "",
            "errors",
            "atomic",
            "locking",
            "safe_paths",
            "safe_pickle",
            "devices",
            "workspace",
            "image_files",
            "case_files",
            "label_files",
            "instance_labels",
            "plotting",
            "data",
            "convert",
            "layers",
            "import_graph",
            "log",
            "json_files",
        ),
    ),
    ("ops", ("ops",)),
    ("nn", ("nn",)),
    ("architectures", ("architectures",)),
    ("planning", ("planning", "verify")),
    ("training", ("training",)),
    ("inference", ("inference",)),
    ("evaluation", ("evaluation",)),
    ("application", ("benchmark", "demo", "interop")),
    ("cli", ("cli", "__main__")),
)

LAYER_NAMES: tuple[str, ...] = tuple(name for name, _ in LAYERS)
_RANK: dict[str, int] = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}


def top_level(module: str) -> str:
    """``umamba_seg.ops.mlstm.reference`` -> ``ops``; the package root itself -> ``""``."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not a module of {PACKAGE}")
    return parts[1] if len(parts) > 1 else ""


def rank(module: str) -> int:
    """The layer index (0 = lowest) of a dotted module name of the package; KeyError if unplaced."""
    return _RANK[top_level(module)]


def layer_of(module: str) -> str:
    """The layer name of a dotted module name of the package; KeyError if unplaced."""
    return LAYER_NAMES[rank(module)]


def placed_top_levels() -> frozenset[str]:
    """Every top-level name the table places (``""`` is the package root)."""
    return frozenset(_RANK)
