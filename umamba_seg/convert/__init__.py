"""Converters from public datasets' download layouts to nnU-Net raw datasets (as nnunetv2 keeps
its own ``dataset_conversion``).

Each module has an importable ``convert(src, out_raw, dataset_id, ...) -> Path`` and a command
line, run as ``umamba-seg convert <name> SRC_DIR [--out RAW_DIR | --workdir W] [--id N]`` or
``python -m umamba_seg.convert.<name> ...``. ``datasets.md`` at the repository root says where
to obtain each dataset and how the reference papers trained on it. Shared pieces are in
:mod:`.common`: the raw layout, atomic writes, reading a download (``Source``), the case loop
that skips finished cases (``convert_cases``), ``dataset.json`` (``finish_dataset``) and the
command line (``build_parser``, ``run_cli``); a converter adds only its layout and its per-case
conversion.
"""

#: The converters ``umamba-seg convert NAME`` runs, one module of this package each.
CONVERTERS: tuple[str, ...] = ("brats2023", "dsb2018", "endovis2017", "isic2018", "neurips_cells")
