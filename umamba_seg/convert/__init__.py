"""Converters from public datasets' download layouts to nnU-Net raw datasets.

Each module is a CLI script (``python scripts/convert/<name>.py SRC_DIR --out RAW_DIR [--id N]``)
and has an importable ``convert(src, out_raw, dataset_id) -> Path``. ``datasets.md`` at the
repository root says where to obtain each dataset and how the reference papers trained on it.
"""
