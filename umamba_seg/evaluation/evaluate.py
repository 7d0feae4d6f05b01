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

import logging
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import (
    key_to_label_or_region,
    label_or_region_to_key,
    save_summary_json,
)
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError
from umamba_seg.evaluation import case_pairs
from umamba_seg.evaluation.case_pairs import SUMMARY_CSV, SUMMARY_JSON
from umamba_seg.evaluation.metrics import (
    METRIC_NAMES,
    LabelOrRegion,
    Tolerance,
    compute_case_metrics,
    empty_class_metrics,
    is_nan,
)
from umamba_seg.evaluation.report import format_table, plot_boxplots, write_summary_csv
from umamba_seg.image_files import check_image_file
from umamba_seg.json_files import read_json
from umamba_seg.label_files import reader_writer_for

BOXPLOT_PNG = "summary_boxplot.png"
NAN_COUNTED_METRICS: tuple[str, ...] = ("Dice", "IoU", "HD95", "NSD")
DEFAULT_TOLERANCE_KEY = "default"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _CaseJob(case_pairs.CaseJob):
    """A pair, the classes to measure and the NSD tolerance (picklable)."""

    labels_or_regions: tuple[LabelOrRegion, ...] | None  # None: discover from the case
    ignore_label: int | None
    nsd_tolerance: Tolerance


@dataclass(frozen=True)
class _Classes:
    """The classes to evaluate, their display names and the ignore label."""

    labels_or_regions: tuple[LabelOrRegion, ...] | None
    names: dict[LabelOrRegion, str]
    ignore_label: int | None


# ----------------------------------------------------------------------------- classes


def _load_dataset_json(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    dataset = read_json(path, "fix the file", missing=("dataset.json not found", "pass the dataset's dataset.json"))
    for key in ("labels", "file_ending"):
        if key not in dataset:
            raise UserInputError(f"dataset.json has no '{key}' entry", path, "add it as nnU-Net v2 expects")
    return dataset


def _classes_from_dataset(dataset: dict, path: Path) -> _Classes:
    try:
        lm = LabelManager(dataset["labels"], dataset.get("regions_class_order"))
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        raise UserInputError(
            f"invalid labels in dataset.json ({e})", path, "fix 'labels' (and 'regions_class_order' for regions)"
        ) from None
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
        raise UserInputError(
            f"NSD tolerance key '{key}' is neither a label, a region nor a class name",
            source,
            'use keys such as "1", "(1, 2)", a class name from dataset.json, or "default"',
        ) from None


def _check_tolerance_value(value: Any, what: str, source: Path | None) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise UserInputError(
            f"NSD tolerance {what} must be a finite number >= 0 (mm), got {value!r}", source, "fix the tolerance"
        )
    return float(value)


def resolve_nsd_tolerance(
    nsd_tolerance: float | Mapping | str | os.PathLike, names: Mapping[LabelOrRegion, str] | None = None
) -> Tolerance:
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
        raw = read_json(source, "fix the file", missing=("NSD tolerance file not found", "pass an existing JSON file"))
        if not isinstance(raw, dict) or not raw:
            raise UserInputError(
                "NSD tolerance file must hold a non-empty JSON object", source, 'write {"<label>": <mm>, ...}'
            )
        return {
            (k if k == DEFAULT_TOLERANCE_KEY else _parse_tolerance_key(k, names, source)): _check_tolerance_value(
                v, f"for '{k}'", source
            )
            for k, v in raw.items()
        }
    if isinstance(nsd_tolerance, Mapping):
        return {
            (
                k
                if k == DEFAULT_TOLERANCE_KEY
                else _parse_tolerance_key(k, names, Path("nsd_tolerance"))
                if isinstance(k, str)
                else k
            ): _check_tolerance_value(v, f"for {k!r}", None)
            for k, v in nsd_tolerance.items()
        }
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
            return {
                "error": (
                    f"cannot read the {role} segmentation ({type(e).__name__}: {e})",
                    file,
                    "check that the file is a valid label image",
                )
            }
        labels = _as_label_map(seg[0])
        if labels is None:
            return {
                "error": (
                    f"the {role} holds values that are not whole numbers (not a label map)",
                    file,
                    "pass segmentations, not images or probabilities",
                )
            }
        segs.append((labels, [float(s) for s in props["spacing"]]))
    (ref, ref_spacing), (pred, pred_spacing) = segs
    mismatch = case_pairs.geometry_error(job, ref, pred, ref_spacing, pred_spacing)
    if mismatch is not None:
        return mismatch
    labels_in_reference = _labels_present(ref)
    if job.labels_or_regions is None:
        labels_or_regions = tuple(sorted(set(labels_in_reference) | set(_labels_present(pred))))
    else:
        labels_or_regions = job.labels_or_regions
    try:
        metrics = compute_case_metrics(ref, pred, ref_spacing, labels_or_regions, job.nsd_tolerance, job.ignore_label)
    except KeyError as e:
        return {
            "error": (
                f"no NSD tolerance for class {e.args[0]}",
                job.reference_file,
                'add it (or a "default") to the tolerance file',
            )
        }
    return {
        "reference_file": job.reference_file,
        "prediction_file": job.prediction_file,
        "metrics": metrics,
        "labels_in_reference": labels_in_reference,
        "num_voxels": int(ref.size),
    }


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- summary


def _nanmean(values: Iterable[float]) -> float:
    kept = [float(v) for v in values if not is_nan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarize(cases: list[dict], labels_or_regions: Sequence[LabelOrRegion]) -> dict:
    """nnU-Net's summary dict (``metric_per_case``, ``mean``, ``foreground_mean``) plus
    ``nan_counts`` (``{key: {metric: cases}}``, string keys); NaNs are left out of means."""
    means = {k: {m: _nanmean(c["metrics"][k][m] for c in cases) for m in METRIC_NAMES} for k in labels_or_regions}
    foreground = [k for k in labels_or_regions if k != 0]
    foreground_mean = {m: _nanmean(means[k][m] for k in foreground) for m in METRIC_NAMES}
    nan_counts = {
        label_or_region_to_key(k): {m: sum(is_nan(c["metrics"][k][m]) for c in cases) for m in NAN_COUNTED_METRICS}
        for k in labels_or_regions
    }
    return {"metric_per_case": cases, "mean": means, "foreground_mean": foreground_mean, "nan_counts": nan_counts}


def _finalize_cases(raw: list[dict], classes: tuple[LabelOrRegion, ...] | None) -> tuple[list[dict], tuple]:
    """Fix the class list (discovered if needed) and give every case every class."""
    if classes is None:
        classes = tuple(sorted({v for r in raw for v in r["labels_in_reference"]}))
    cases = []
    for r in raw:
        metrics = {k: r["metrics"].get(k) or empty_class_metrics(r["num_voxels"]) for k in classes}
        cases.append(
            {"reference_file": r["reference_file"], "prediction_file": r["prediction_file"], "metrics": metrics}
        )
    return cases, classes


def _write_summary_json(summary: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_summary_json(summary, str(tmp))


def evaluate_folders(
    ref_dir: Path,
    pred_dir: Path,
    out_dir: Path | None = None,
    dataset_json: Path | None = None,
    nsd_tolerance: float | dict[int, float] | Path = 1.0,
    num_processes: int = 2,
    verbose: bool = True,
) -> dict:
    """Evaluate every reference case against the same-named prediction; write the reports.

    Writes ``summary.json``, ``summary.csv`` and ``summary_boxplot.png`` to ``out_dir``
    (default ``pred_dir``) and, if ``verbose``, shows progress and prints the table.
    ``dataset_json`` is a dataset.json file or the folder holding it. Returns the summary
    dict as nnunetv2 holds it in memory (class keys are ints or region tuples, as
    ``load_summary_json`` returns them), plus ``nan_counts`` and ``nsd_tolerance_mm``
    (both keyed by the class key strings of summary.json).
    """
    ref_dir, pred_dir, out_dir = case_pairs.check_folders(ref_dir, pred_dir, out_dir)
    dataset = None
    if dataset_json is not None:
        dataset_path = Path(dataset_json)
        dataset = _load_dataset_json(dataset_path)
        classes = _classes_from_dataset(dataset, dataset_path)
        file_ending = dataset["file_ending"]
    else:
        classes = _Classes(None, {}, None)
        file_ending = case_pairs.infer_file_ending(ref_dir)
    pairs = case_pairs.pair_files(ref_dir, pred_dir, file_ending)
    tolerance = resolve_nsd_tolerance(nsd_tolerance, classes.names)
    if isinstance(tolerance, dict):
        tolerance = _WithDefault(tolerance)
        if classes.labels_or_regions is not None:
            lacking = [k for k in classes.labels_or_regions if k not in tolerance]
            if lacking:
                raise UserInputError(
                    f"no NSD tolerance for class(es) {', '.join(map(str, lacking))}",
                    nsd_tolerance if isinstance(nsd_tolerance, (str, os.PathLike)) else None,
                    'give every class a tolerance, or a "default"',
                )
    rw = reader_writer_for(file_ending, pairs[0][0], dataset)
    jobs = [_CaseJob(str(r), str(p), rw, classes.labels_or_regions, classes.ignore_label, tolerance) for r, p in pairs]
    raw = case_pairs.run_jobs(_evaluate_case, jobs, num_processes, verbose, "evaluate", initializer=_init_worker)
    cases, keys = _finalize_cases(raw, classes.labels_or_regions)
    if not keys:
        raise UserInputError(
            "the references contain no foreground label",
            ref_dir,
            "check the reference folder, or pass the dataset (-d) to name the labels",
        )
    summary = summarize(cases, keys)
    names = {k: classes.names.get(k, "") for k in keys}
    tolerances = {
        k: (tolerance[k] if isinstance(tolerance, dict) else tolerance)
        for k in keys
        if not isinstance(tolerance, dict) or k in tolerance
    }
    summary["nsd_tolerance_mm"] = {label_or_region_to_key(k): v for k, v in tolerances.items()}

    with case_pairs.writing_reports(out_dir):
        _write_summary_json(summary, out_dir / SUMMARY_JSON)
        write_summary_csv(summary, out_dir / SUMMARY_CSV, names, file_ending)
        plot_boxplots(summary, out_dir / BOXPLOT_PNG, names, tolerances)
    if verbose:
        print(format_table(summary, names, tolerances))  # the command's result, not a log line
        log.info("wrote %s, %s and %s", out_dir / SUMMARY_JSON, SUMMARY_CSV, BOXPLOT_PNG)
    return summary
