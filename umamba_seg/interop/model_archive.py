"""The shared model archive: what a ``MODEL.zip`` of ``export-model`` holds, and the limits
``install-model`` enforces on it.

Layout, relative to a results folder (as nnunetv2's own model zips)::

    umamba_model.json                                  the manifest (below)
    DatasetXXX_Name/<Trainer>__<Plans>__<config>/plans.json, dataset.json, dataset_fingerprint.json
        fold_<f>/checkpoint_final.pth | checkpoint_best.pth, fold_<f>/validation/summary.json
        crossval_results_folds_<...>/summary.json, postprocessing.json      (find-best, when present)

The manifest names the dataset, the model folder, the architecture, the trainer class, the
folds and checkpoints, the umamba-seg / nnunetv2 / torch versions that wrote it, and every
other file with its size and sha256. Only files of the names above can be listed: no pickle
(nnunetv2's ``postprocessing.pkl``, validation ``.pkl``) ever travels.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

from umamba_seg.errors import UserInputError

MANIFEST = "umamba_model.json"
FORMAT = "umamba-seg model"
FORMAT_VERSION = 1
#: ``install-model`` refuses an archive whose files add up to more than this (uncompressed).
MAX_UNPACKED_BYTES = 16 * 1024**3
#: ... or any member that inflates more than this many times its compressed size (a zip bomb);
#: float32 checkpoints compress about 1.1x, JSON about 10x.
MAX_COMPRESSION_RATIO = 200
#: the ratio check applies to members larger than this (small JSON files may compress well)
RATIO_CHECK_MIN_BYTES = 1024**2
MAX_MANIFEST_BYTES = 4 * 1024**2

CHECKPOINT_FILES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
DATASET_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.-]*$")
MODEL_FOLDER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*__[A-Za-z0-9_.-]+__[A-Za-z0-9_]+$")
# files of a model folder that may travel (relative to it)
_MODEL_FILES = re.compile(
    r"^(plans\.json|dataset\.json|dataset_fingerprint\.json"
    r"|fold_(\d+|all)/(checkpoint_final\.pth|checkpoint_best\.pth|validation/summary\.json)"
    r"|crossval_results_folds_[0-9_all]+/(summary\.json|postprocessing\.json))$"
)
_CHUNK = 1024 * 1024


def allowed_model_file(relative: str) -> bool:
    """Whether a path relative to the model folder is one of the files an archive may carry."""
    return bool(_MODEL_FILES.match(relative))


def sha256_of(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)


def check_member(info: zipfile.ZipInfo, archive: Path) -> None:
    """One zip entry: a plain relative path without ``..``, a regular file (no link, device, ...)."""
    name = info.filename
    parts = name.rstrip("/").split("/")
    fix = "install only archives written by `umamba-seg export-model`"
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UserInputError(f"archive entry {name!r} is an absolute path or leaves its folder", archive, fix)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise UserInputError(f"archive entry {name!r} is a symbolic link", archive, fix)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UserInputError(f"archive entry {name!r} is not a regular file", archive, fix)
    if info.flag_bits & 0x1:
        raise UserInputError(f"archive entry {name!r} is encrypted", archive, fix)
