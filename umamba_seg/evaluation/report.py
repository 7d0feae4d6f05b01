"""Human-facing views of an evaluation summary: CSV, box plot and a printed table.

All three read the summary dict that :func:`umamba_seg.evaluation.evaluate.summarize`
builds (nnU-Net's in-memory form: class keys are ints or region tuples). Files are
written atomically. The plot uses matplotlib's Agg canvas directly, never pyplot, so it
works without a display and leaves the process's global backend alone.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from umamba_seg.atomic import atomic_path
from umamba_seg.evaluation.metrics import METRIC_NAMES, LabelOrRegion, is_nan
from umamba_seg.plotting import default_style

SURFACE_AND_OVERLAP: tuple[str, ...] = ("Dice", "IoU", "HD95", "NSD")
_UNITS = {"HD95": " (mm)"}


def _key(label_or_region: LabelOrRegion) -> str:
    return str(label_or_region)


def class_title(label_or_region: LabelOrRegion, names: Mapping[LabelOrRegion, str] | None = None) -> str:
    """``"1 liver"`` (or ``"1"`` without a name)."""
    name = (names or {}).get(label_or_region, "")
    return f"{_key(label_or_region)} {name}".strip()


def _case_name(reference_file: str, file_ending: str | None) -> str:
    name = Path(reference_file).name
    if file_ending and name.lower().endswith(file_ending.lower()):
        return name[: -len(file_ending)]
    return name


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value) if isinstance(value, float) else str(value)


def _values(summary: dict, label_or_region: LabelOrRegion, metric: str) -> list[float]:
    """Non-NaN per-case values of one metric of one class."""
    values = (c["metrics"][label_or_region][metric] for c in summary["metric_per_case"])
    return [float(v) for v in values if not is_nan(v)]


def write_summary_csv(
    summary: dict, path: Path, names: Mapping[LabelOrRegion, str] | None = None, file_ending: str | None = None
) -> None:
    """One row per case and class, then one ``mean`` row per class and a ``foreground_mean`` row.

    NaN is written as ``nan`` (pandas and spreadsheets read it as missing).
    """
    names = names or {}
    header = ["case", "class", "class_name", *METRIC_NAMES, "reference_file", "prediction_file"]
    rows: list[list[str]] = []
    for case in summary["metric_per_case"]:
        case_name = _case_name(case["reference_file"], file_ending)
        for k, metrics in case["metrics"].items():
            rows.append(
                [
                    case_name,
                    _key(k),
                    names.get(k, ""),
                    *(_fmt(metrics[m]) for m in METRIC_NAMES),
                    case["reference_file"],
                    case["prediction_file"],
                ]
            )
    for k, metrics in summary["mean"].items():
        rows.append(["mean", _key(k), names.get(k, ""), *(_fmt(metrics[m]) for m in METRIC_NAMES), "", ""])
    fg = summary["foreground_mean"]
    rows.append(["foreground_mean", "", "", *(_fmt(fg[m]) for m in METRIC_NAMES), "", ""])
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def _nsd_title(tolerances: Mapping[LabelOrRegion, float] | None) -> str:
    values = set((tolerances or {}).values())
    if len(values) == 1:
        return f"NSD at {values.pop():g} mm"
    return "NSD (per-class tolerance)" if values else "NSD"


@default_style
def plot_boxplots(
    summary: dict,
    path: Path,
    names: Mapping[LabelOrRegion, str] | None = None,
    tolerances: Mapping[LabelOrRegion, float] | None = None,
    metrics: Sequence[str] = SURFACE_AND_OVERLAP,
) -> None:
    """One panel per metric, one box per class over the cases (NaNs left out, n shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(summary["mean"].keys())
    labels = [class_title(k, names) for k in keys]
    ncols = 2 if len(metrics) > 1 and len(keys) <= 8 else 1
    nrows = math.ceil(len(metrics) / ncols)
    panel_width = max(3.5, 0.5 * len(keys) + 1.0)
    fig = Figure(figsize=(ncols * panel_width, nrows * 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    rotate = any(len(lab) > 8 for lab in labels)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        data = [_values(summary, k, metric) for k in keys]
        positions = list(range(1, len(keys) + 1))
        drawable = [(p, d) for p, d in zip(positions, data) if d]
        if drawable:
            ax.boxplot([d for _, d in drawable], positions=[p for p, _ in drawable], widths=0.6)
        ax.set_xticks(positions)
        ax.set_xticklabels(
            [f"{lab}\nn={len(d)}" for lab, d in zip(labels, data)],
            fontsize=8,
            rotation=45 if rotate else 0,
            ha="right" if rotate else "center",
        )
        ax.set_xlim(0.4, len(keys) + 0.6)
        ax.set_title(_nsd_title(tolerances) if metric == "NSD" else metric + _UNITS.get(metric, ""))
        if metric in ("Dice", "IoU", "NSD"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{len(summary['metric_per_case'])} cases (NaN cases left out)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "nan"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def format_table(
    summary: dict,
    names: Mapping[LabelOrRegion, str] | None = None,
    tolerances: Mapping[LabelOrRegion, float] | None = None,
) -> str:
    """Mean ± SD per class over non-NaN cases, NSD tolerance, and NaN case counts."""
    tolerances = tolerances or {}
    n_cases = len(summary["metric_per_case"])
    header = ["class", "Dice", "IoU", "HD95 (mm)", "NSD", "NSD tol", "NaN cases Dice/IoU/HD95/NSD"]
    rows = []
    for k in summary["mean"]:
        counts = summary["nan_counts"][_key(k)]
        tol = tolerances.get(k)
        rows.append(
            [
                class_title(k, names),
                _mean_sd(_values(summary, k, "Dice"), 3),
                _mean_sd(_values(summary, k, "IoU"), 3),
                _mean_sd(_values(summary, k, "HD95"), 2),
                _mean_sd(_values(summary, k, "NSD"), 3),
                "" if tol is None else f"{tol:g} mm",
                "/".join(str(counts[m]) for m in SURFACE_AND_OVERLAP),
            ]
        )
    fg = summary["foreground_mean"]
    rows.append(
        ["foreground mean", f"{fg['Dice']:.3f}", f"{fg['IoU']:.3f}", f"{fg['HD95']:.2f}", f"{fg['NSD']:.3f}", "", ""]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"Evaluation of {n_cases} case(s): mean ± SD over cases, NaN cases left out and counted"]
    for j, r in enumerate([header, *rows]):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
