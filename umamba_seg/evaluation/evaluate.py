"""Evaluate a folder of predicted segmentations against a folder of references.

``evaluate_folders`` pairs files by name, reads them with nnunetv2's reader-writer
classes (so every format nnU-Net reads works here), computes per-case, per-class
metrics (:mod:`umamba_seg.evaluation.metrics`) in worker processes, and writes
``summary.json`` in nnU-Net's schema (``metric_per_case``, ``mean``,
``foreground_mean``; nnunetv2's ``load_summary_json`` reads it), ``summary.csv``, a box
plot and a printed table (:mod:`umamba_seg.evaluation.report`).

Classes come from ``dataset.json`` through nnunetv2's ``LabelManager`` (labels, regions,
ignore label) or, without it, are the non-zero values found in the references.
Without ``dataset.json`` the labels are found while the cases are evaluated, so each
file is read once: every non-zero value of a case's reference or prediction is
measured there, and classes found in no reference are dropped at the end.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region, label_or_region_to_key, \
    save_summary_json
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES, \
    determine_reader_writer_from_dataset_json, determine_reader_writer_from_file_ending
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from tqdm import tqdm

from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError
from umamba_seg.evaluation.metrics import METRIC_NAMES, LabelOrRegion, Tolerance, compute_case_metrics, \
    empty_class_metrics, is_nan
from umamba_seg.evaluation.report import format_table, plot_boxplots, write_summary_csv
from umamba_seg.image_files import check_image_file
from umamba_seg.log import show_progress

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
BOXPLOT_PNG = "summary_boxplot.png"
NAN_COUNTED_METRICS: tuple[str, ...] = ("Dice", "IoU", "HD95", "NSD")
DEFAULT_TOLERANCE_KEY = "default"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _CaseJob:
    """Everything a worker needs to evaluate one case (picklable)."""

    reference_file: str
    prediction_file: str
    reader_writer: BaseReaderWriter
    labels_or_regions: tuple[LabelOrRegion, ...] | None  # None: discover from the case
    ignore_label: int | None
    nsd_tolerance: Tolerance


@dataclass(frozen=True)
class _Classes:
    """The classes to evaluate, their display names and the ignore label."""

    labels_or_regions: tuple[LabelOrRegion, ...] | None
    names: dict[LabelOrRegion, str]
    ignore_label: int | None


# ----------------------------------------------------------------------------- files

def _supported_endings() -> list[str]:
    endings = {e.lower() for io_class in LIST_OF_IO_CLASSES for e in io_class.supported_file_endings}
    return sorted(endings, key=len, reverse=True)


def _ending_of(name: str, endings: Sequence[str]) -> str | None:
    lower = name.lower()
    return next((e for e in endings if lower.endswith(e)), None)


def _list_cases(folder: Path, file_ending: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(file_ending.lower()))


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
        raise UserInputError("no segmentation files in the reference folder", ref_dir,
                             f"put label files ending in one of {', '.join(sorted(endings))} there")
    if len(found) > 1:
        examples = ", ".join(f"{name} ({ending})" for ending, name in sorted(found.items()))
        raise UserInputError(f"the reference folder mixes file endings: {examples}", ref_dir,
                             "keep one file format per folder, or pass the dataset (-d) to fix the ending")
    return next(iter(found))


def _check_folder(folder: Path, role: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"the {role} folder does not exist", folder, f"pass an existing {role} folder")
    return folder


def _pair_files(ref_dir: Path, pred_dir: Path, file_ending: str) -> list[tuple[Path, Path]]:
    names = _list_cases(ref_dir, file_ending)
    if not names:
        raise UserInputError(f"no reference files ending in {file_ending}", ref_dir,
                             "check the reference folder and the dataset's file_ending")
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if len(missing) == len(names) and not _list_cases(pred_dir, file_ending):
        raise UserInputError(f"no predictions ending in {file_ending}", pred_dir,
                             "predict the cases first, or point -p at the prediction folder")
    if missing:
        raise UserInputError(f"prediction missing for reference case {missing[0]} "
                             f"({len(missing)} of {len(names)} cases missing)", pred_dir / missing[0],
                             "predict every reference case, or remove the extra references")
    return [(ref_dir / n, pred_dir / n) for n in names]


def _reader_writer(file_ending: str, example: Path, dataset: dict | None) -> BaseReaderWriter:
    try:
        if dataset is not None:
            io_class = determine_reader_writer_from_dataset_json(dataset, str(example), verbose=False)
        else:
            io_class = determine_reader_writer_from_file_ending(file_ending, str(example),
                                                                allow_nonmatching_filename=True, verbose=False)
    except RuntimeError:
        raise UserInputError(f"no nnU-Net reader can open {file_ending} files", example,
                             "convert the segmentations to .nii.gz, .nrrd, .mha, .png or .tif") from None
    return io_class()


# ----------------------------------------------------------------------------- classes

def _load_dataset_json(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    try:
        with open(path) as f:
            dataset = json.load(f)
    except FileNotFoundError:
        raise UserInputError("dataset.json not found", path, "pass the dataset's dataset.json") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"dataset.json is not valid JSON ({e.msg}, line {e.lineno})", path,
                             "fix the file") from None
    for key in ("labels", "file_ending"):
        if key not in dataset:
            raise UserInputError(f"dataset.json has no '{key}' entry", path, "add it as nnU-Net v2 expects")
    return dataset


def _classes_from_dataset(dataset: dict, path: Path) -> _Classes:
    try:
        lm = LabelManager(dataset["labels"], dataset.get("regions_class_order"))
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        raise UserInputError(f"invalid labels in dataset.json ({e})", path,
                             "fix 'labels' (and 'regions_class_order' for regions)") from None
    keys = tuple(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
    keys = tuple(tuple(int(i) for i in k) if isinstance(k, (tuple, list)) else int(k) for k in keys)
    names: dict[LabelOrRegion, str] = {}
    for name, value in dataset["labels"].items():
        key = tuple(int(i) for i in value) if isinstance(value, (tuple, list)) else int(value)
        if isinstance(key, tuple) and len(key) == 1 and not lm.has_regions:
            key = key[0]
        if key in keys:
            names[key] = name
    return _Classes(keys, names, lm.ignore_label)


def _parse_tolerance_key(key: str, names: Mapping[LabelOrRegion, str], source: Path) -> LabelOrRegion:
    by_name = {v: k for k, v in names.items()}
    if key in by_name:
        return by_name[key]
    try:
        return key_to_label_or_region(key)
    except ValueError:
        raise UserInputError(f"NSD tolerance key '{key}' is neither a label, a region nor a class name", source,
                             "use keys such as \"1\", \"(1, 2)\", a class name from dataset.json, or \"default\"") \
            from None


def _check_tolerance_value(value: Any, what: str, source: Path | None) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise UserInputError(f"NSD tolerance {what} must be a finite number >= 0 (mm), got {value!r}",
                             source, "fix the tolerance")
    return float(value)


def resolve_nsd_tolerance(nsd_tolerance: float | Mapping | str | os.PathLike,
                          names: Mapping[LabelOrRegion, str] | None = None) -> Tolerance:
    """A tolerance in mm, or ``{label_or_region: mm}`` (may hold ``"default"``).

    A path is read as JSON: ``{"1": 2.0, "(1, 2)": 1.5, "liver": 3.0, "default": 1.0}``;
    keys are labels, region keys as in summary.json, or class names from dataset.json.
    A string that reads as a number (a CLI argument such as ``"2"``) is that number.
    """
    names = names or {}
    if isinstance(nsd_tolerance, str):
        try:
            nsd_tolerance = float(nsd_tolerance)
        except ValueError:
            pass
    if isinstance(nsd_tolerance, (str, os.PathLike)):
        source = Path(nsd_tolerance)
        try:
            raw = json.loads(source.read_text())
        except FileNotFoundError:
            raise UserInputError("NSD tolerance file not found", source, "pass an existing JSON file") from None
        except json.JSONDecodeError as e:
            raise UserInputError(f"NSD tolerance file is not valid JSON ({e.msg}, line {e.lineno})", source,
                                 "fix the file") from None
        if not isinstance(raw, dict) or not raw:
            raise UserInputError("NSD tolerance file must hold a non-empty JSON object", source,
                                 "write {\"<label>\": <mm>, ...}")
        return {(k if k == DEFAULT_TOLERANCE_KEY else _parse_tolerance_key(k, names, source)):
                _check_tolerance_value(v, f"for '{k}'", source) for k, v in raw.items()}
    if isinstance(nsd_tolerance, Mapping):
        return {(k if k == DEFAULT_TOLERANCE_KEY else
                 _parse_tolerance_key(k, names, Path("nsd_tolerance")) if isinstance(k, str) else k):
                _check_tolerance_value(v, f"for {k!r}", None) for k, v in nsd_tolerance.items()}
    return _check_tolerance_value(nsd_tolerance, "", None)


class _WithDefault(dict):
    """Per-class tolerances that fall back to the "default" entry."""

    def __missing__(self, key: Any) -> float:
        if DEFAULT_TOLERANCE_KEY in self:
            return self[DEFAULT_TOLERANCE_KEY]
        raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, key) or dict.__contains__(self, DEFAULT_TOLERANCE_KEY)


# ----------------------------------------------------------------------------- per case

def _as_label_map(seg: np.ndarray) -> np.ndarray | None:
    """nnunetv2's readers return float32; give back the smallest integer type, or None
    if the values are not whole numbers (not a label map)."""
    if seg.dtype.kind in "ui":
        return seg
    if not np.array_equal(seg, np.floor(seg)) or not np.isfinite(seg).all():
        return None
    lo, hi = float(seg.min()), float(seg.max())
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return seg.astype(dtype)
    return seg.astype(np.int64)


def _labels_present(seg: np.ndarray) -> list[int]:
    """The non-zero values of an integer label map (bincount when small and non-negative)."""
    if seg.size and seg.dtype.kind in "ui" and seg.min() >= 0 and seg.max() < 1 << 16:
        return [int(v) for v in np.flatnonzero(np.bincount(seg.ravel())) if v != 0]
    return [int(v) for v in np.unique(seg) if v != 0]


def _evaluate_case(job: _CaseJob) -> dict:
    """Read one pair and compute its metrics; failures come back as an ``error`` entry."""
    rw = job.reader_writer
    segs = []
    for role, file in (("reference", job.reference_file), ("prediction", job.prediction_file)):
        try:
            check_image_file(file)  # whole and what its name says (SimpleITK zero-fills truncated NIfTI)
        except UserInputError as e:
            return {"error": (f"the {role} segmentation: {e.what}", file, e.fix)}
        try:
            seg, props = rw.read_seg(file)
        except Exception as e:  # noqa: BLE001 - any reader failure is the file's fault
            return {"error": (f"cannot read the {role} segmentation ({type(e).__name__}: {e})", file,
                              "check that the file is a valid label image")}
        labels = _as_label_map(seg[0])
        if labels is None:
            return {"error": (f"the {role} holds values that are not whole numbers (not a label map)", file,
                              "pass segmentations, not images or probabilities")}
        segs.append((labels, [float(s) for s in props["spacing"]]))
    (ref, ref_spacing), (pred, pred_spacing) = segs
    if ref.shape != pred.shape:
        return {"error": (f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}",
                          job.prediction_file, "predict in the reference's geometry (same size)")}
    if not np.allclose(ref_spacing, pred_spacing, rtol=1e-3, atol=1e-6):
        return {"error": (f"prediction spacing {tuple(pred_spacing)} differs from reference spacing "
                          f"{tuple(ref_spacing)}", job.prediction_file,
                          "predict in the reference's geometry (same spacing)")}
    labels_in_reference = _labels_present(ref)
    if job.labels_or_regions is None:
        labels_or_regions = tuple(sorted(set(labels_in_reference) | set(_labels_present(pred))))
    else:
        labels_or_regions = job.labels_or_regions
    try:
        metrics = compute_case_metrics(ref, pred, ref_spacing, labels_or_regions, job.nsd_tolerance,
                                       job.ignore_label)
    except KeyError as e:
        return {"error": (f"no NSD tolerance for class {e.args[0]}", job.reference_file,
                          "add it (or a \"default\") to the tolerance file")}
    return {"reference_file": job.reference_file, "prediction_file": job.prediction_file,
            "metrics": metrics, "labels_in_reference": labels_in_reference,
            "num_voxels": int(ref.size)}


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def _run_jobs(jobs: list[_CaseJob], num_processes: int, verbose: bool) -> list[dict]:
    def checked(results: Iterable[dict]) -> list[dict]:
        out = []
        for r in tqdm(results, total=len(jobs), desc="evaluate", unit="case",
                      disable=not verbose or not show_progress()):
            if "error" in r:
                raise UserInputError(*r["error"])
            out.append(r)
        return out

    if num_processes <= 1 or len(jobs) == 1:
        return checked(map(_evaluate_case, jobs))
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs)), initializer=_init_worker) as pool:
        return checked(pool.imap(_evaluate_case, jobs))


# ----------------------------------------------------------------------------- summary

def _nanmean(values: Iterable[float]) -> float:
    kept = [float(v) for v in values if not is_nan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarize(cases: list[dict], labels_or_regions: Sequence[LabelOrRegion]) -> dict:
    """nnU-Net's summary dict (``metric_per_case``, ``mean``, ``foreground_mean``) plus
    ``nan_counts`` (``{key: {metric: cases}}``, string keys); NaNs are left out of means."""
    means = {k: {m: _nanmean(c["metrics"][k][m] for c in cases) for m in METRIC_NAMES}
             for k in labels_or_regions}
    foreground = [k for k in labels_or_regions if k != 0]
    foreground_mean = {m: _nanmean(means[k][m] for k in foreground) for m in METRIC_NAMES}
    nan_counts = {label_or_region_to_key(k): {m: sum(is_nan(c["metrics"][k][m]) for c in cases)
                                              for m in NAN_COUNTED_METRICS}
                  for k in labels_or_regions}
    return {"metric_per_case": cases, "mean": means, "foreground_mean": foreground_mean,
            "nan_counts": nan_counts}


def _finalize_cases(raw: list[dict], classes: tuple[LabelOrRegion, ...] | None) -> tuple[list[dict], tuple]:
    """Fix the class list (discovered if needed) and give every case every class."""
    if classes is None:
        classes = tuple(sorted({v for r in raw for v in r["labels_in_reference"]}))
    cases = []
    for r in raw:
        metrics = {k: r["metrics"].get(k) or empty_class_metrics(r["num_voxels"]) for k in classes}
        cases.append({"reference_file": r["reference_file"], "prediction_file": r["prediction_file"],
                      "metrics": metrics})
    return cases, classes


def _check_writable(out_dir: Path) -> None:
    """The report folder (or the folder it will be created in) exists as a folder and is writable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError("the output path is a file, not a folder", out_dir, "pass a folder with -o")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError("the output folder is not writable", existing, "pass a folder you can write to with -o")


def _write_summary_json(summary: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_summary_json(summary, str(tmp))


def evaluate_folders(ref_dir: Path, pred_dir: Path, out_dir: Path | None = None, dataset_json: Path | None = None,
                     nsd_tolerance: float | dict[int, float] | Path = 1.0, num_processes: int = 2,
                     verbose: bool = True) -> dict:
    """Evaluate every reference case against the same-named prediction; write the reports.

    Writes ``summary.json``, ``summary.csv`` and ``summary_boxplot.png`` to ``out_dir``
    (default ``pred_dir``) and, if ``verbose``, shows progress and prints the table.
    ``dataset_json`` is a dataset.json file or the folder holding it. Returns the summary
    dict as nnunetv2 holds it in memory (class keys are ints or region tuples, as
    ``load_summary_json`` returns them), plus ``nan_counts`` and ``nsd_tolerance_mm``
    (both keyed by the class key strings of summary.json).
    """
    ref_dir, pred_dir = _check_folder(ref_dir, "reference"), _check_folder(pred_dir, "prediction")
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    _check_writable(out_dir)
    dataset = None
    if dataset_json is not None:
        dataset_path = Path(dataset_json)
        dataset = _load_dataset_json(dataset_path)
        classes = _classes_from_dataset(dataset, dataset_path)
        file_ending = dataset["file_ending"]
    else:
        classes = _Classes(None, {}, None)
        file_ending = infer_file_ending(ref_dir)
    pairs = _pair_files(ref_dir, pred_dir, file_ending)
    tolerance = resolve_nsd_tolerance(nsd_tolerance, classes.names)
    if isinstance(tolerance, dict):
        tolerance = _WithDefault(tolerance)
        if classes.labels_or_regions is not None:
            lacking = [k for k in classes.labels_or_regions if k not in tolerance]
            if lacking:
                raise UserInputError(f"no NSD tolerance for class(es) {', '.join(map(str, lacking))}",
                                     nsd_tolerance if isinstance(nsd_tolerance, (str, os.PathLike)) else None,
                                     "give every class a tolerance, or a \"default\"")
    rw = _reader_writer(file_ending, pairs[0][0], dataset)
    jobs = [_CaseJob(str(r), str(p), rw, classes.labels_or_regions, classes.ignore_label, tolerance)
            for r, p in pairs]
    raw = _run_jobs(jobs, num_processes, verbose)
    cases, keys = _finalize_cases(raw, classes.labels_or_regions)
    if not keys:
        raise UserInputError("the references contain no foreground label", ref_dir,
                             "check the reference folder, or pass the dataset (-d) to name the labels")
    summary = summarize(cases, keys)
    names = {k: classes.names.get(k, "") for k in keys}
    tolerances = {k: (tolerance[k] if isinstance(tolerance, dict) else tolerance) for k in keys
                  if not isinstance(tolerance, dict) or k in tolerance}
    summary["nsd_tolerance_mm"] = {label_or_region_to_key(k): v for k, v in tolerances.items()}

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_summary_json(summary, out_dir / SUMMARY_JSON)
        write_summary_csv(summary, out_dir / SUMMARY_CSV, names, file_ending)
        plot_boxplots(summary, out_dir / BOXPLOT_PNG, names, tolerances)
    except OSError as e:
        raise UserInputError(f"cannot write the reports ({e.strerror or e})", e.filename or out_dir,
                             "pass an output folder you can write to with -o") from None
    if verbose:
        print(format_table(summary, names, tolerances))  # the command's result, not a log line
        log.info("wrote %s, %s and %s", out_dir / SUMMARY_JSON, SUMMARY_CSV, BOXPLOT_PNG)
    return summary
