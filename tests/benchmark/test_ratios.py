"""Ratios to the CNN taken within each timing round, their median, spread and warnings."""

from __future__ import annotations

import math

from umamba_seg.benchmark.ratios import SPREAD_LIMIT, RoundRatio, round_ratios
from umamba_seg.benchmark.report import BenchmarkRow, markdown_table, spread_warnings, target_checks


def test_ratio_is_taken_within_each_round_and_the_median_reported():
    # the machine gets busy in round 2 (everything 3x slower): per-round ratios do not notice
    rounds = [
        {"cnn": 1.0, "umamba_bot": 1.2, "umamba_bot_nossm": 1.0},
        {"cnn": 3.0, "umamba_bot": 3.6, "umamba_bot_nossm": 3.3},
        {"cnn": 1.1, "umamba_bot": 1.32, "umamba_bot_nossm": 1.21},
    ]
    ratios = round_ratios(rounds)
    assert list(ratios) == ["cnn", "umamba_bot", "umamba_bot_nossm"]
    assert ratios["cnn"].per_round == (1.0, 1.0, 1.0) and ratios["cnn"].spread == 0.0
    assert [round(r, 6) for r in ratios["umamba_bot"].per_round] == [1.2, 1.2, 1.2]
    assert math.isclose(ratios["umamba_bot"].median, 1.2) and math.isclose(
        ratios["umamba_bot"].spread, 0.0, abs_tol=1e-12
    )
    assert [round(r, 6) for r in ratios["umamba_bot_nossm"].per_round] == [1.0, 1.1, 1.1]
    assert math.isclose(ratios["umamba_bot_nossm"].median, 1.1)
    assert math.isclose(ratios["umamba_bot_nossm"].spread, 0.1 / 1.1)
    assert not any(r.disagrees for r in ratios.values())


def test_rounds_that_disagree_by_more_than_the_limit_are_flagged():
    # the reported case: a busy spell hit the network's turn but not the CNN's
    ratios = round_ratios(
        [{"cnn": 3.0, "umamba_bot": 0.44}, {"cnn": 1.0, "umamba_bot": 1.2}, {"cnn": 1.0, "umamba_bot": 1.1}]
    )
    bot = ratios["umamba_bot"]
    assert math.isclose(bot.median, 1.1)
    assert math.isclose(bot.spread, (1.2 - 0.44 / 3.0) / 1.1) and bot.spread > SPREAD_LIMIT and bot.disagrees
    line = bot.warning("sliding-window")
    assert line.startswith("umamba_bot: its sliding-window time relative to the CNN's varied by 95.8% over 3 rounds")
    assert "0.15x to 1.20x, median 1.10x" in line and "--rounds" in line
    # just under and just over the limit
    assert not RoundRatio("a", (1.0, 1.2, 1.1)).disagrees  # (1.2 - 1.0) / 1.1 = 18%
    assert RoundRatio("a", (1.0, 1.25, 1.1)).disagrees  # 23%
    assert not RoundRatio("a", (1.7,)).disagrees and RoundRatio("a", (1.7,)).spread == 0.0
    nan = RoundRatio("a", (math.nan, math.nan))
    assert math.isnan(nan.median) and math.isnan(nan.spread) and not nan.disagrees
    assert math.isnan(round_ratios([{"cnn": 0.0, "a": 1.0}])["a"].median)  # no usable CNN time


def _row(arch: str, has_ssm: bool, train: list[float], infer: list[float]) -> BenchmarkRow:
    return BenchmarkRow(
        arch=arch,
        has_ssm=has_ssm,
        configuration="2d",
        spacing=[1.0, 1.0],
        patch=[64, 64],
        batch=2,
        params=1_000_000,
        estimated_activation_gb=0.02,
        measured_activation_gb=0.02,
        train_s_per_iter=0.5,
        train_ratios=train,
        infer_s_per_case=0.2,
        infer_ratios=infer,
        dice_mean=0.5,
        dice_per_class={"instrument": 0.5},
    )


def test_report_warns_only_about_disagreeing_rounds():
    agreeing = [_row("cnn", False, [1.0] * 3, [1.0] * 3), _row("umamba_bot", True, [1.5, 1.6, 1.55], [1.2, 1.25, 1.2])]
    md = markdown_table(agreeing, {"dataset": "D", "configuration": "2d"})
    assert spread_warnings(agreeing) == [] and "WARNING" not in md
    assert "| 1.55x (spread 6.5%) |" in md and "| 1.20x (spread 4.2%) |" in md
    assert f"every network's rounds agree within {SPREAD_LIMIT:.0%}" in md
    assert [c.ratio for c in target_checks(agreeing)] == [1.2]  # the target check uses the median ratio

    busy = [agreeing[0], _row("umamba_bot", True, [1.5, 1.6, 1.55], [0.15, 1.2, 1.1])]
    warnings = spread_warnings(busy)
    assert len(warnings) == 1 and warnings[0].startswith("umamba_bot: its sliding-window time")
    md = markdown_table(busy, {"dataset": "D", "configuration": "2d"})
    assert f"- WARNING {warnings[0]}" in md.splitlines()
    assert "1.10x (spread 95.5% > 20%)" in md
