"""Converters from public datasets' download layouts to nnU-Net raw datasets (as nnunetv2 keeps
its own ``dataset_conversion``).

Each module has an importable ``convert(src, out_raw, dataset_id, ...) -> Path`` and a command
line, run as ``umamba-seg convert <name> SRC_DIR [--out RAW_DIR | --workdir W] [--id N]`` or
``python -m umamba_seg.convert.<name> ...``. ``datasets.md`` at the repository root says where
to obtain each dataset and how the reference papers trained on it. Shared pieces (raw layout,
atomic writes, the command line) are in :mod:`.common`.
"""

#: The converters ``umamba-seg convert NAME`` runs, one module of this package each.
CONVERTERS: tuple[str, ...] = ("brats2023", "dsb2018", "endovis2017", "isic2018", "neurips_cells")
