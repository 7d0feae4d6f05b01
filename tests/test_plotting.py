"""Report plots ignore process-wide matplotlib settings (nnunetv2's seaborn font scale) and restore them."""

from __future__ import annotations

import matplotlib

from umamba_seg.benchmark.report import plot_dice_vs_time
from umamba_seg.evaluation.report import plot_boxplots
from umamba_seg.plotting import default_style


def test_default_style_inside_and_settings_restored_after():
    seen = {}

    @default_style
    def draw(x):
        seen["font.size"] = matplotlib.rcParams["font.size"]
        return x * 2

    old = matplotlib.rcParams["font.size"]
    try:
        matplotlib.rcParams["font.size"] = 25.0  # what seaborn's font_scale=2.5 leaves behind
        assert draw(21) == 42
        assert seen["font.size"] == matplotlib.rcParamsDefault["font.size"]
        assert matplotlib.rcParams["font.size"] == 25.0
    finally:
        matplotlib.rcParams["font.size"] = old


def test_report_plots_use_it():
    for fn in (plot_boxplots, plot_dice_vs_time):
        assert getattr(fn, "__wrapped__", None) is not None, fn.__name__
