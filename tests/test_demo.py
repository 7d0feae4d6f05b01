"""Tests of ``umamba-seg demo`` (umamba_seg.demo): the real end-to-end run and its pass/fail logic."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from umamba_seg import demo
from umamba_seg.errors import UserInputError


def _fake_cli(dice_by_dataset: dict[str, float], calls: list[list[str]]):
    """A stand-in for ``umamba_seg.cli.main`` (what the CLI hands the demo): records commands, writes summaries."""

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


def test_demo_runs_the_cli_contract_and_reports(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="umamba_seg")
    calls: list[list[str]] = []
    fake = _fake_cli({"Endoscopy": 0.91, "AbdomenCT": 0.66}, calls)
    out = demo.run_demo(tmp_path, fake, archs=["cnn"], fast=True)
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
    printed, logged = capsys.readouterr().out, caplog.text  # the report is printed, the steps are logged
    assert "$ umamba-seg train -d 903 -c 2d" in logged and "$ umamba-seg train -d 901 -c 3d_fullres" in logged
    assert "0.910" in printed and "total" in printed and "Demo passed" in printed


def test_demo_fails_when_the_cnn_misses_its_target(tmp_path):
    fake = _fake_cli({"Endoscopy": 0.95, "AbdomenCT": 0.42}, [])
    with pytest.raises(RuntimeError, match=r"3D abdominal CT .*CNN Dice 0\.420 < 0\.5"):
        demo.run_demo(tmp_path, fake, archs=["cnn"], fast=True)


def test_demo_rejects_unknown_arch_before_any_work(tmp_path):
    with pytest.raises(UserInputError, match="unknown architecture 'nope'"):
        demo.run_demo(tmp_path / "wd", _fake_cli({}, []), archs=["nope"])
    assert not (tmp_path / "wd").exists()


def test_cli_hands_the_demo_its_own_main(tmp_path, monkeypatch):
    """The demo runs real command lines through the CLI without importing it (imports point down)."""
    from umamba_seg import cli

    seen = {}
    monkeypatch.setattr(
        demo, "run_demo", lambda workdir, run_command, **kw: seen.update(workdir=workdir, run_command=run_command, **kw)
    )
    assert cli.main(["demo", "--fast", "--workdir", str(tmp_path)]) == 0
    assert seen["run_command"] is cli.main and seen["workdir"] == tmp_path and seen["fast"] is True


def test_demo_budgets_and_targets():
    for fast in (False, True):
        tasks = demo.demo_tasks(fast)
        assert [t.configuration for t in tasks] == ["2d", "3d_fullres"]
        assert [t.dice_target for t in tasks] == [0.7, 0.5]
        assert all(t.num_train >= 5 and t.num_test >= 1 for t in tasks)  # fold 0 of a 5-fold split
    two_d, three_d = demo.demo_tasks()
    assert demo.default_archs(two_d) == ["cnn", "umamba_bot"]  # an SSM network next to the CNN, same budget
    assert demo.default_archs(three_d) == ["cnn"]  # keeps the default demo within its 5 minutes


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The real demo, as a user runs it: a fresh process, exit 0, Dice targets met."""
    env = dict(os.environ)
    env.pop("nnUNet_n_proc_DA", None)
    env.pop("nnUNet_def_n_proc", None)
    workdir = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "umamba_seg", "demo", "--workdir", str(workdir), "--fast"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Demo passed" in r.stdout and "Time per step" in r.stdout
    for ds, target in (("Dataset903_SynthEndoscopy", 0.7), ("Dataset901_SynthAbdomenCT", 0.5)):
        pred = workdir / "demo_predictions" / ds / "cnn"
        summary = json.loads((pred / "summary.json").read_text())
        assert summary["foreground_mean"]["Dice"] >= target
        n_test = len(list((workdir / "raw" / ds / "labelsTs").iterdir()))
        assert len(summary["metric_per_case"]) == n_test
        assert (workdir / "results" / ds).is_dir()
