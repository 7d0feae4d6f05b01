"""``evaluate --instances``: instance F1, AP and matched IoU of a folder of instance label maps.

Pairs reference and prediction files by name and reads them with nnunetv2's reader-writers,
exactly as the semantic evaluation does (so every format nnU-Net reads works), then scores each
case with :func:`umamba_seg.evaluation.instance_metrics.instance_metrics`. A pair whose shape
or spacing differs is an error (exit 2), never a silently wrong score.

``summary.json`` holds ``metric_per_case`` (files and metrics per case), ``mean`` (the mean of
each per-case metric, NaNs left out: the challenge's per-image F1 averaged over images),
``pooled`` (TP/FP/FN summed over all cases and the precision/recall/F1 of those sums) and the
settings (``iou_threshold``, ``exclude_border``). ``summary.csv`` has one row per case, then the
``mean`` and ``pooled`` rows.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umamba_seg.atomic import atomic_path, write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.evaluation import case_pairs
from umamba_seg.evaluation.case_pairs import SUMMARY_CSV, SUMMARY_JSON
from umamba_seg.evaluation.instance_metrics import (
    CASE_KEYS,
    COUNT_KEYS,
    counts_to_scores,
    instance_metrics,
)
from umamba_seg.label_files import read_label_map, reader_writer_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job(case_pairs.CaseJob):
    iou_threshold: float
    exclude_border: bool


def _read(rw, file: str, role: str) -> tuple[np.ndarray, list[float]]:
    labels, props = read_label_map(rw, Path(file), f"{role} instance map")
    return labels, [float(s) for s in props["spacing"]]


def _evaluate_case(job: _Job) -> dict:
    try:
        ref, ref_spacing = _read(job.reader_writer, job.reference_file, "reference")
        pred, pred_spacing = _read(job.reader_writer, job.prediction_file, "prediction")
    except UserInputError as e:
        return {"error": (e.what, e.where, e.fix)}
    mismatch = case_pairs.geometry_error(job, ref, pred, ref_spacing, pred_spacing)
    if mismatch is not None:
        return mismatch
    metrics = instance_metrics(ref, pred, job.iou_threshold, job.exclude_border)
    return {"reference_file": job.reference_file, "prediction_file": job.prediction_file, "metrics": metrics}


def summarize_instances(cases: list[dict], iou_threshold: float, exclude_border: bool) -> dict:
    """Per-case metrics, their means (NaN left out) and the pooled counts with their scores."""
    mean = {}
    for k in CASE_KEYS:
        kept = [float(c["metrics"][k]) for c in cases if not math.isnan(float(c["metrics"][k]))]
        mean[k] = float(np.mean(kept)) if kept else float("nan")
    pooled = {k: int(sum(c["metrics"][k] for c in cases)) for k in COUNT_KEYS}
    pooled.update(counts_to_scores(pooled["TP"], pooled["FP"], pooled["FN"]))
    return {
        "iou_threshold": iou_threshold,
        "exclude_border": exclude_border,
        "metric_per_case": cases,
        "mean": mean,
        "pooled": pooled,
    }


def _fmt(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else (f"{v:.4f}" if isinstance(v, float) else str(v))


def write_instance_csv(summary: dict, path: Path, file_ending: str) -> None:
    """One row per case, then ``mean`` and ``pooled`` rows (``nan`` where undefined or not pooled)."""
    header = ["case", *CASE_KEYS, "reference_file", "prediction_file"]
    rows = []
    for c in summary["metric_per_case"]:
        name = Path(c["reference_file"]).name
        name = name[: -len(file_ending)] if name.endswith(file_ending) else name
        rows.append([name, *(_fmt(c["metrics"][k]) for k in CASE_KEYS), c["reference_file"], c["prediction_file"]])
    rows.append(["mean", *(_fmt(summary["mean"][k]) for k in CASE_KEYS), "", ""])
    rows.append(["pooled", *(_fmt(summary["pooled"].get(k, float("nan"))) for k in CASE_KEYS), "", ""])
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def format_instance_table(summary: dict) -> str:
    m, p = summary["mean"], summary["pooled"]
    t = summary["iou_threshold"]
    lines = [
        f"instances (IoU >= {t:g}{', border cells excluded' if summary['exclude_border'] else ''}), "
        f"{len(summary['metric_per_case'])} case(s)",
        f"  mean per case: F1 {_fmt(m['F1'])}  precision {_fmt(m['precision'])}  recall {_fmt(m['recall'])}  "
        f"matched IoU {_fmt(m['mean_matched_IoU'])}  AP(0.5:0.95) {_fmt(m['AP'])}",
        f"  pooled: TP {p['TP']}  FP {p['FP']}  FN {p['FN']}  F1 {_fmt(p['F1'])}",
    ]
    return "\n".join(lines)


def evaluate_instance_folders(
    ref_dir: Path,
    pred_dir: Path,
    out_dir: Path | None = None,
    iou_threshold: float = 0.5,
    exclude_border: bool = False,
    num_processes: int = 2,
    verbose: bool = True,
) -> dict:
    """Score every reference instance map against the same-named prediction; write the reports
    (``summary.json``, ``summary.csv``) to ``out_dir`` (default ``pred_dir``); return the summary."""
    if not (isinstance(iou_threshold, (int, float)) and 0 < iou_threshold <= 1):
        raise UserInputError(f"--iou {iou_threshold} is not in (0, 1]", "--iou", "use e.g. 0.5")
    ref_dir, pred_dir, out_dir = case_pairs.check_folders(ref_dir, pred_dir, out_dir)
    file_ending = case_pairs.infer_file_ending(ref_dir)
    pairs = case_pairs.pair_files(ref_dir, pred_dir, file_ending)
    rw = reader_writer_for(file_ending, pairs[0][0])
    jobs = [_Job(str(r), str(p), rw, float(iou_threshold), exclude_border) for r, p in pairs]
    cases = case_pairs.run_jobs(_evaluate_case, jobs, num_processes, verbose, "evaluate instances")
    summary = summarize_instances(cases, float(iou_threshold), exclude_border)
    with case_pairs.writing_reports(out_dir):
        write_json_atomic(summary, out_dir / SUMMARY_JSON)
        write_instance_csv(summary, out_dir / SUMMARY_CSV, file_ending)
    if verbose:
        print(format_instance_table(summary))  # the command's result, not a log line
        log.info("wrote %s and %s", out_dir / SUMMARY_JSON, SUMMARY_CSV)
    return summary
