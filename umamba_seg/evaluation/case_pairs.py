"""Reference/prediction pairs: what the semantic and the instance evaluation share.

Both evaluations check their folders, pair reference and prediction files by name, pick one
of nnunetv2's reader-writers for them, score each pair in a job (in worker processes when
asked), reject a pair whose geometry differs and write their reports into one folder. A job
that fails comes back as an ``error`` entry ``(what, where, fix)`` and is raised here as a
:class:`~umamba_seg.errors.UserInputError`, so a worker never prints a traceback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import (
    LIST_OF_IO_CLASSES,
)
from tqdm import tqdm

from umamba_seg.errors import UserInputError
from umamba_seg.log import show_progress

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"


@dataclass(frozen=True)
class CaseJob:
    """One pair of files and the reader-writer for both (picklable; evaluations add their settings)."""

    reference_file: str
    prediction_file: str
    reader_writer: BaseReaderWriter


# ----------------------------------------------------------------------------- folders and files


def _supported_endings() -> list[str]:
    endings = {e.lower() for io_class in LIST_OF_IO_CLASSES for e in io_class.supported_file_endings}
    return sorted(endings, key=len, reverse=True)


def _ending_of(name: str, endings: Sequence[str]) -> str | None:
    lower = name.lower()
    return next((e for e in endings if lower.endswith(e)), None)


def _list_cases(folder: Path, file_ending: str) -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(file_ending.lower())
    )


def infer_file_ending(ref_dir: Path) -> str:
    """The one image ending nnU-Net can read among the reference files; error if mixed."""
    endings = _supported_endings()
    found: dict[str, str] = {}
    for p in sorted(ref_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            ending = _ending_of(p.name, endings)
            if ending is not None:
                found.setdefault(ending, p.name)
    if not found:
        raise UserInputError(
            "no segmentation files in the reference folder",
            ref_dir,
            f"put label files ending in one of {', '.join(sorted(endings))} there",
        )
    if len(found) > 1:
        examples = ", ".join(f"{name} ({ending})" for ending, name in sorted(found.items()))
        raise UserInputError(
            f"the reference folder mixes file endings: {examples}",
            ref_dir,
            "keep one file format per folder, or pass the dataset (-d) to fix the ending",
        )
    return next(iter(found))


def _check_folder(folder: Path, role: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"the {role} folder does not exist", folder, f"pass an existing {role} folder")
    return folder


def _check_writable(out_dir: Path) -> None:
    """The report folder (or the folder it will be created in) exists as a folder and is writable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError("the output path is a file, not a folder", out_dir, "pass a folder with -o")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError("the output folder is not writable", existing, "pass a folder you can write to with -o")


def check_folders(ref_dir: Path, pred_dir: Path, out_dir: Path | None) -> tuple[Path, Path, Path]:
    """``(ref_dir, pred_dir, out_dir)`` as Paths once both inputs exist and the report folder
    (default ``pred_dir``) can be written."""
    ref_dir, pred_dir = _check_folder(ref_dir, "reference"), _check_folder(pred_dir, "prediction")
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    _check_writable(out_dir)
    return ref_dir, pred_dir, out_dir


def pair_files(ref_dir: Path, pred_dir: Path, file_ending: str) -> list[tuple[Path, Path]]:
    """Every reference file ending in ``file_ending`` with its same-named prediction (error if one is missing)."""
    names = _list_cases(ref_dir, file_ending)
    if not names:
        raise UserInputError(
            f"no reference files ending in {file_ending}",
            ref_dir,
            "check the reference folder and the dataset's file_ending",
        )
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if len(missing) == len(names) and not _list_cases(pred_dir, file_ending):
        raise UserInputError(
            f"no predictions ending in {file_ending}",
            pred_dir,
            "predict the cases first, or point -p at the prediction folder",
        )
    if missing:
        raise UserInputError(
            f"prediction missing for reference case {missing[0]} ({len(missing)} of {len(names)} cases missing)",
            pred_dir / missing[0],
            "predict every reference case, or remove the extra references",
        )
    return [(ref_dir / n, pred_dir / n) for n in names]


# ----------------------------------------------------------------------------- scoring and reports


def geometry_error(
    job: CaseJob, ref: np.ndarray, pred: np.ndarray, ref_spacing: Sequence[float], pred_spacing: Sequence[float]
) -> dict | None:
    """An ``error`` entry when the prediction's size or spacing differs from the reference's, else None."""
    if ref.shape != pred.shape:
        return {
            "error": (
                f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}",
                job.prediction_file,
                "predict in the reference's geometry (same size)",
            )
        }
    if not np.allclose(ref_spacing, pred_spacing, rtol=1e-3, atol=1e-6):
        return {
            "error": (
                f"prediction spacing {tuple(pred_spacing)} differs from reference spacing {tuple(ref_spacing)}",
                job.prediction_file,
                "predict in the reference's geometry (same spacing)",
            )
        }
    return None


def run_jobs(
    evaluate_case: Callable[[CaseJob], dict],
    jobs: Sequence[CaseJob],
    num_processes: int,
    verbose: bool,
    desc: str,
    initializer: Callable[[], None] | None = None,
) -> list[dict]:
    """``evaluate_case`` (a module-level function) over ``jobs``, in ``num_processes`` spawned workers
    when more than one; the first ``error`` entry is raised as a UserInputError."""

    def checked(results: Iterable[dict]) -> list[dict]:
        out = []
        for r in tqdm(results, total=len(jobs), desc=desc, unit="case", disable=not verbose or not show_progress()):
            if "error" in r:
                raise UserInputError(*r["error"])
            out.append(r)
        return out

    if num_processes <= 1 or len(jobs) == 1:
        return checked(map(evaluate_case, jobs))
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=initializer) as pool:
        return checked(pool.imap(evaluate_case, jobs))


@contextlib.contextmanager
def writing_reports(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` for the reports written inside; a failed write is a UserInputError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as e:
        raise UserInputError(
            f"cannot write the reports ({e.strerror or e})",
            e.filename or out_dir,
            "pass an output folder you can write to with -o",
        ) from None
