"""Tests of ``umamba-seg demo`` (umamba_seg.demo): the real end-to-end run and its pass/fail logic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from umamba_seg import demo
from umamba_seg.errors import UserInputError


def _fake_cli(dice_by_dataset: dict[str, float], calls: list[list[str]]):
    """A stand-in for ``umamba_seg.cli.main`` that records commands and writes summaries."""

    def fake(argv):
        calls.append(list(argv))
        if argv[0] == "evaluate":
            pred = Path(argv[argv.index("-p") + 1])
            pred.mkdir(parents=True, exist_ok=True)
            dice = next(v for k, v in dice_by_dataset.items() if k in str(pred))
            summary = {"foreground_mean": {"Dice": dice}, "mean": {"1": {"Dice": dice}}, "metric_per_case": []}
            (pred / "summary.json").write_text(json.dumps(summary))
        return 0

    return fake


def test_demo_runs_the_cli_contract_and_reports(tmp_path, monkeypatch, capsys):
    calls: list[list[str]] = []
    monkeypatch.setattr("umamba_seg.cli.main", _fake_cli({"Endoscopy": 0.91, "AbdomenCT": 0.66}, calls))
    out = demo.run_demo(tmp_path, archs=["cnn"], fast=True)
    commands = [c[0] for c in calls]
    assert commands == ["make-dataset", "plan-and-preprocess", "train", "predict", "evaluate"] * 2
    for argv in calls:  # every step is a command a user could type, in the same workdir
        assert argv[-2:] == ["--workdir", str(tmp_path.resolve())]
    train = calls[2]
    for flag in ("-d", "-c", "-f", "-a", "--epochs", "--iters-per-epoch", "--val-iters", "--device"):
        assert flag in train
    assert train[train.index("--device") + 1] == "cpu"
    assert [r["dice"]["mean"] for r in out["results"]] == [0.91, 0.66]
    assert set(out["timings"]) >= {"2D train cnn", "3D predict cnn", "3D evaluate cnn"}
    printed = capsys.readouterr().out
    assert "$ umamba-seg train -d 903 -c 2d" in printed and "$ umamba-seg train -d 901 -c 3d_fullres" in printed
    assert "0.910" in printed and "total" in printed and "Demo passed" in printed


def test_demo_fails_when_the_cnn_misses_its_target(tmp_path, monkeypatch):
    monkeypatch.setattr("umamba_seg.cli.main", _fake_cli({"Endoscopy": 0.95, "AbdomenCT": 0.42}, []))
    with pytest.raises(RuntimeError, match=r"3D abdominal CT .*CNN Dice 0\.420 < 0\.5"):
        demo.run_demo(tmp_path, archs=["cnn"], fast=True)


def test_demo_rejects_unknown_arch_before_any_work(tmp_path):
    with pytest.raises(UserInputError, match="unknown architecture 'nope'"):
        demo.run_demo(tmp_path / "wd", archs=["nope"])
    assert not (tmp_path / "wd").exists()


def test_demo_budgets_and_targets():
    for fast in (False, True):
        tasks = demo.demo_tasks(fast)
        assert [t.configuration for t in tasks] == ["2d", "3d_fullres"]
        assert [t.dice_target for t in tasks] == [0.7, 0.5]
        assert all(t.num_train >= 5 and t.num_test >= 1 for t in tasks)  # fold 0 of a 5-fold split
