"""Paths built from file contents stay inside their folder.

Case identifiers (``dataset`` entries of dataset.json, ``splits_final.json`` keys), file endings
and a plans' ``data_identifier`` become parts of file names that umamba-seg and nnunetv2
write; an identifier like ``../../x`` would write outside the workdir. Image and label paths
in dataset.json's ``dataset`` entries are resolved as nnunetv2 resolves them (environment
variables expanded, relative to the raw dataset folder) and, after normalisation, must lie
inside that folder. Symbolic links are not followed: a link the user placed inside the
folder is the user's choice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from umamba_seg.errors import UserInputError

_FILE_ENDING = re.compile(r"^\.[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")


def check_name(name: Any, what: str, where: str | os.PathLike, fix: str) -> str:
    """``name`` as one plain path component (no separator, not ``.``/``..``, no NUL), else exit 2."""
    ok = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )
    if not ok:
        raise UserInputError(
            f"{what} {name!r} is not a plain file name (it could point outside its folder)", where, fix
        )
    return name


def check_file_ending(ending: Any, where: str | os.PathLike) -> str:
    """A ``file_ending`` such as ``.nii.gz``: a dot, then letters/digits, nothing that names a folder."""
    if not isinstance(ending, str) or not _FILE_ENDING.match(ending):
        raise UserInputError(
            f"file_ending {ending!r} is not a file ending such as '.nii.gz'",
            where,
            'set file_ending to the images\' ending, e.g. ".nii.gz" or ".png"',
        )
    return ending


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` (absolute, or relative to ``folder``) lies in ``folder`` after normalisation."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, os.fspath(path)))
    return os.path.commonpath([base, target]) == base


def check_dataset_entries(dataset_json: dict, raw_dataset: str | os.PathLike, where: str | os.PathLike) -> None:
    """``file_ending`` and the optional ``dataset`` entries of a dataset.json: plain case
    identifiers, image and label paths inside ``raw_dataset``."""
    check_file_ending(dataset_json.get("file_ending"), where)
    entries = dataset_json.get("dataset")
    if entries is None:
        return
    fix_id = "use plain case identifiers (no '/', '..') as keys of 'dataset'"
    fix_path = "put the images and labels inside the raw dataset folder and give their paths relative to it"
    if not isinstance(entries, dict):
        raise UserInputError("'dataset' in dataset.json is not an object {case: {images, label}}", where, fix_id)
    for case, entry in entries.items():
        check_name(case, "case identifier", where, fix_id)
        if not isinstance(entry, dict) or not isinstance(entry.get("images"), list) or "label" not in entry:
            raise UserInputError(
                f"dataset entry '{case}' lacks 'images' (a list) or 'label'",
                where,
                'give each case {"images": [...], "label": ...}',
            )
        for p in [*entry["images"], entry["label"]]:
            if not isinstance(p, str) or not is_inside(os.path.expandvars(p), raw_dataset):
                raise UserInputError(
                    f"path {p!r} of case '{case}' lies outside the raw dataset folder {Path(raw_dataset)}",
                    where,
                    fix_path,
                )
