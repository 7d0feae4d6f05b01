"""The benchmark's outputs: a Markdown table, a CSV, a JSON record and a Dice-vs-time plot.

One :class:`BenchmarkRow` per architecture. Its ratios to the CNN are the medians of the
per-round ratios (:func:`umamba_seg.benchmark.ratios.round_ratios`) with their spread; the
inference-time target and the warnings about rounds that disagree are derived here from the
rows, so every view shows the same numbers. Files
are written atomically; the plot uses matplotlib's Agg canvas directly (no pyplot, no display),
with marker area proportional to the parameter count, under matplotlib's default style (nnunetv2's
progress plot sets a seaborn font scale process-wide, and the benchmark trains in-process).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from umamba_seg.atomic import atomic_path, write_json_atomic, write_text_atomic
from umamba_seg.benchmark.ratios import INFERENCE_TARGET, SPREAD_LIMIT, RoundRatio, TargetCheck, check_inference_target
from umamba_seg.planning.naming import CNN_ARCH
from umamba_seg.plotting import default_style

TABLE_MD = "benchmark.md"
TABLE_CSV = "benchmark.csv"
RESULTS_JSON = "benchmark.json"
PLOT_PNG = "benchmark_dice_vs_time.png"


@dataclass
class BenchmarkRow:
    """Everything measured for one architecture at the CNN's plan."""

    arch: str
    has_ssm: bool
    configuration: str
    spacing: list[float]
    patch: list[int]
    batch: int
    params: int
    estimated_activation_gb: float  # memory model, this device's AMP policy, plan patch and batch
    measured_activation_gb: float  # bytes saved for backward in a real forward at the same setting
    train_s_per_iter: float  # median over the timing rounds of one training step
    train_ratios: list[float]  # per round: this step's seconds / the CNN's step of the same round
    infer_s_per_case: float  # median over the timing rounds of one case's sliding-window prediction
    infer_ratios: list[float]  # per round, as train_ratios
    dice_mean: float  # foreground mean over the evaluated cases (mean over folds)
    dice_per_class: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def memory_ratio(self) -> float:
        """Estimated / measured activation memory."""
        m = self.measured_activation_gb
        return self.estimated_activation_gb / m if m > 0 else math.nan

    @property
    def train_vs_cnn(self) -> RoundRatio:
        return RoundRatio(self.arch, tuple(self.train_ratios))

    @property
    def infer_vs_cnn(self) -> RoundRatio:
        return RoundRatio(self.arch, tuple(self.infer_ratios))

    @property
    def timing_rounds(self) -> int:
        return len(self.infer_ratios)


def target_checks(rows: Sequence[BenchmarkRow]) -> list[TargetCheck]:
    """The inference-time target (:data:`INFERENCE_TARGET` x the CNN) for every SSM row, on the
    rows' median per-round ratios."""
    return check_inference_target(
        {r.arch: r.infer_vs_cnn.median for r in rows}, patch_voxels={r.arch: math.prod(r.patch) for r in rows}
    )


def spread_warnings(rows: Sequence[BenchmarkRow]) -> list[str]:
    """A line for every timing whose per-round ratios to the CNN disagree by more than the limit
    (:attr:`RoundRatio.disagrees`)."""
    return [
        ratio.warning(what)
        for r in rows
        for what, ratio in (("training step", r.train_vs_cnn), ("sliding-window", r.infer_vs_cnn))
        if ratio.disagrees
    ]


def _fmt(x: float, digits: int = 3) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _patch(p: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in p)


def _spacing(s: Sequence[float]) -> str:
    return "x".join(f"{float(v):g}" for v in s)


def _dice_classes(row: BenchmarkRow) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in row.dice_per_class.items())


def _ratio(ratio: RoundRatio) -> str:
    """``1.23x (spread 8%)``: the median per-round ratio and, with more than one round, the
    rounds' spread, marked when it is over the limit."""
    if len(ratio.per_round) < 2:
        return _fmt(ratio.median, 2) + "x"
    spread = "nan" if not math.isfinite(ratio.spread) else f"{ratio.spread:.1%}"
    return f"{_fmt(ratio.median, 2)}x (spread {spread}{f' > {SPREAD_LIMIT:.0%}' if ratio.disagrees else ''})"


def markdown_table(rows: Sequence[BenchmarkRow], meta: dict) -> str:
    """The table, the target checks, the timing warnings and how it was measured, as Markdown."""
    checks = {c.arch: c for c in target_checks(rows)}
    head = [
        "arch",
        "SSM",
        "spacing",
        "patch",
        "batch",
        "params (M)",
        "act. GB est.",
        "act. GB meas.",
        "est./meas.",
        "train s/it",
        "train / CNN (spread)",
        "infer s/case",
        "infer / CNN (spread)",
        "Dice mean",
        "Dice per class",
        "note",
    ]
    lines = [
        f"# Benchmark: {meta.get('dataset', '')} {meta.get('configuration', '')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        flag = "" if r.arch not in checks or checks[r.arch].met else " (!)"
        cells = [
            r.arch,
            "yes" if r.has_ssm else "no",
            _spacing(r.spacing),
            _patch(r.patch),
            str(r.batch),
            _fmt(r.params / 1e6, 2),
            _fmt(r.estimated_activation_gb),
            _fmt(r.measured_activation_gb),
            _fmt(r.memory_ratio, 2),
            _fmt(r.train_s_per_iter),
            _ratio(r.train_vs_cnn),
            _fmt(r.infer_s_per_case),
            _ratio(r.infer_vs_cnn) + flag,
            _fmt(r.dice_mean),
            _dice_classes(r),
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            f"Inference target: every SSM network <= {INFERENCE_TARGET:g}x the CNN's sliding-window time "
            "at the same plan."
        ),
    ]
    lines += [f"- {c.line()}" for c in checks.values()] or ["- no SSM network in this run"]
    rounds = max((r.timing_rounds for r in rows), default=0)
    lines += [
        "",
        (
            f"Timing: {rounds} interleaved round(s), each timing every network once; a ratio is the median "
            "over the rounds of the network's time / the CNN's time in the same round, the spread is "
            "(max - min) / median of those ratios."
        ),
    ]
    lines += [f"- WARNING {w}" for w in spread_warnings(rows)] or [
        f"- every network's rounds agree within {SPREAD_LIMIT:.0%}"
    ]
    lines += [
        "",
        "Measured: " + ", ".join(f"{k} {v}" for k, v in meta.items() if k not in ("dataset", "configuration")),
        "",
    ]
    return "\n".join(lines)


def write_csv(rows: Sequence[BenchmarkRow], path: Path) -> None:
    """One line per architecture; one ``dice_<class>`` column per class."""
    classes = list(dict.fromkeys(k for r in rows for k in r.dice_per_class))
    head = [
        "arch",
        "has_ssm",
        "configuration",
        "spacing",
        "patch",
        "batch",
        "params",
        "estimated_activation_gb",
        "measured_activation_gb",
        "estimated_over_measured",
        "train_s_per_iter",
        "train_vs_cnn",
        "train_spread",
        "infer_s_per_case",
        "infer_vs_cnn",
        "infer_spread",
        "timing_rounds",
        "dice_mean",
        *[f"dice_{c}" for c in classes],
        "note",
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in rows:
            w.writerow(
                [
                    r.arch,
                    int(r.has_ssm),
                    r.configuration,
                    _spacing(r.spacing),
                    _patch(r.patch),
                    r.batch,
                    r.params,
                    r.estimated_activation_gb,
                    r.measured_activation_gb,
                    r.memory_ratio,
                    r.train_s_per_iter,
                    r.train_vs_cnn.median,
                    r.train_vs_cnn.spread,
                    r.infer_s_per_case,
                    r.infer_vs_cnn.median,
                    r.infer_vs_cnn.spread,
                    r.timing_rounds,
                    r.dice_mean,
                    *[r.dice_per_class.get(c, math.nan) for c in classes],
                    r.note,
                ]
            )


@default_style
def plot_dice_vs_time(rows: Sequence[BenchmarkRow], path: Path, title: str = "") -> None:
    """Dice against sliding-window seconds per case; marker area ~ parameters; the target line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    biggest = max((r.params for r in rows), default=1) or 1
    colours = {"cnn": "tab:gray", "ssm": "tab:blue", "nossm": "tab:orange"}
    for r in rows:
        kind = "cnn" if r.arch == CNN_ARCH else ("ssm" if r.has_ssm else "nossm")
        ax.scatter(
            [r.infer_s_per_case],
            [r.dice_mean],
            s=40 + 900 * r.params / biggest,
            alpha=0.6,
            color=colours[kind],
            edgecolors="black",
            linewidths=0.5,
        )
        ax.annotate(
            f"{r.arch}\n{r.params / 1e6:.1f}M",
            (r.infer_s_per_case, r.dice_mean),
            fontsize=7,
            xytext=(6, 4),
            textcoords="offset points",
        )
    cnn = next((r for r in rows if r.arch == CNN_ARCH), None)
    if cnn is not None and math.isfinite(cnn.infer_s_per_case):
        ax.axvline(INFERENCE_TARGET * cnn.infer_s_per_case, linestyle="--", color="tab:red", linewidth=1)
        ax.text(
            INFERENCE_TARGET * cnn.infer_s_per_case,
            0.02,
            f" {INFERENCE_TARGET:g}x CNN",
            color="tab:red",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
        )
    ax.set_xlabel("sliding-window inference, s per case (median)")
    ax.set_ylabel("Dice (foreground mean)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Dice vs inference time (marker area ~ parameters)", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_reports(rows: Sequence[BenchmarkRow], meta: dict, out_dir: Path) -> dict[str, Path]:
    """Write the table, CSV, JSON and plot into ``out_dir``; returns their paths by kind."""
    out_dir = Path(out_dir)
    paths = {
        "markdown": out_dir / TABLE_MD,
        "csv": out_dir / TABLE_CSV,
        "json": out_dir / RESULTS_JSON,
        "plot": out_dir / PLOT_PNG,
    }
    write_text_atomic(markdown_table(rows, meta), paths["markdown"])
    write_csv(rows, paths["csv"])
    record = {
        "meta": meta,
        "rows": [
            {
                **asdict(r),
                "memory_ratio": r.memory_ratio,
                "timing_rounds": r.timing_rounds,
                "train_vs_cnn": r.train_vs_cnn.median,
                "train_spread": r.train_vs_cnn.spread,
                "infer_vs_cnn": r.infer_vs_cnn.median,
                "infer_spread": r.infer_vs_cnn.spread,
            }
            for r in rows
        ],
        "timing_warnings": spread_warnings(rows),
        "inference_target": {
            "ratio": INFERENCE_TARGET,
            "checks": [
                {"arch": c.arch, "ratio": c.ratio, "met": c.met, "reason": c.reason} for c in target_checks(rows)
            ],
        },
    }
    write_json_atomic(record, paths["json"])
    plot_dice_vs_time(
        rows,
        paths["plot"],
        f"{meta.get('dataset', '')} {meta.get('configuration', '')}: Dice vs inference time (marker area ~ parameters)",
    )
    return paths
