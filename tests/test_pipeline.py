"""Issue 2: the CLI chain plan -> preprocess -> train -> predict -> ensemble -> evaluate, 2D and 3D."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.pipeline_fixtures import predict_args, run_cli, tiny_schedule, train_args
from umamba_seg.cli import main as cli


def _ds(workdir: Path) -> tuple[str, Path]:
    raw = next((workdir / "raw").iterdir())
    return raw.name[7:10], raw


def _model_dir(workdir: Path, name: str, config: str, arch: str = "cnn") -> Path:
    return workdir / "results" / name / f"umambaTrainer__umambaPlans_{arch}__{config}"


@pytest.mark.parametrize("fixture,config", [("trained_2d_workdir", "2d"), ("trained_3d_workdir", "3d_fullres")])
def test_chain_train_predict_ensemble_evaluate(request, tmp_path, fixture, config):
    workdir = request.getfixturevalue(fixture)
    ds_id, raw = _ds(workdir)
    pre = workdir / "preprocessed" / raw.name
    # plans and shared preprocessed data where the contract says
    plans = json.loads((pre / "umambaPlans_cnn.json").read_text())
    assert plans["configurations"][config]["data_identifier"] == f"umambaPlans_{config}"
    assert any((pre / f"umambaPlans_{config}").glob("*.pkl"))
    model = _model_dir(workdir, raw.name, config)
    for f in ("0", "1"):
        fold = model / f"fold_{f}"
        assert (fold / "checkpoint_final.pth").is_file() and (fold / "progress.png").is_file()
        assert any(fold.glob("training_log_*.txt"))
        assert any((fold / "validation").glob("*.npz")), "--npz must save validation probabilities"
        # our checkpoints load without unpickling code
        ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
        assert ckpt["current_epoch"] == 1 and ckpt["trainer_name"] == "umambaTrainer"

    outs = []
    for f in ("0", "1"):
        out = tmp_path / f"pred_f{f}"
        run_cli(
            *predict_args(workdir, raw / "imagesTs", out, ds_id, config, "-f", f, "--save-probabilities", "--no-tta")
        )
        outs.append(out)
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name for p in (raw / "labelsTs").iterdir() if p.name.endswith(ending))
    for out in outs:
        assert sorted(p.name for p in out.glob(f"*{ending}")) == cases
        assert not (out / ".partial").exists()
    ens = tmp_path / "ensemble"
    run_cli("ensemble", "-i", *outs, "-o", ens)
    assert sorted(p.name for p in ens.glob(f"*{ending}")) == cases
    # the ensemble is the argmax of the mean of the folds' probabilities
    case = cases[0][: -len(ending)]
    p0 = np.load(outs[0] / f"{case}.npz")["probabilities"]
    p1 = np.load(outs[1] / f"{case}.npz")["probabilities"]
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    rw = determine_reader_writer_from_dataset_json(
        json.loads((raw / "dataset.json").read_text()), str(ens / cases[0])
    )()
    seg, _ = rw.read_seg(str(ens / cases[0]))
    expected = np.argmax((p0 + p1) / 2, 0)
    assert np.mean(seg[0] == expected) > 0.99

    run_cli("evaluate", "-r", raw / "labelsTs", "-p", ens, "-d", ds_id, "--workdir", workdir)
    summary = json.loads((ens / "summary.json").read_text().replace("NaN", "null"))
    assert len(summary["metric_per_case"]) == len(cases)
    for per_case in summary["metric_per_case"]:
        for metrics in per_case["metrics"].values():
            assert "Dice" in metrics and "IoU" in metrics
    assert "Dice" in summary["foreground_mean"]


def test_continue_resumes_from_latest_checkpoint(trained_2d_workdir, tmp_path, capsys):
    src = trained_2d_workdir
    workdir = tmp_path / "wd"
    shutil.copytree(src, workdir)
    ds_id, raw = _ds(workdir)
    fold = _model_dir(workdir, raw.name, "2d") / "fold_0"
    # simulate a run of 2 epochs killed after the first: only checkpoint_latest exists
    os.replace(fold / "checkpoint_final.pth", fold / "checkpoint_latest.pth")
    before = torch.load(fold / "checkpoint_latest.pth", weights_only=True)
    assert before["current_epoch"] == 1
    capsys.readouterr()
    run_cli(*train_args(workdir, ds_id, "2d", "0", "--continue", *tiny_schedule(2)))
    assert "resuming from checkpoint_latest.pth at epoch 1" in capsys.readouterr().out
    after = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert after["current_epoch"] == 2
    # the logger kept epoch 1's values and appended epoch 2's
    assert len(after["logging"]["train_losses"]) == 2
    assert after["logging"]["train_losses"][0] == before["logging"]["train_losses"][0]
    # the resumed run timed only its own steps: epoch 2's two iterations
    steps = json.loads((fold / "train_step_times.json").read_text())
    assert steps["first_epoch"] == 1 and len(steps["seconds"]) == steps["iterations_per_epoch"] == 2


def test_env_var_locations_equal_workdir(trained_2d_workdir, tmp_path, monkeypatch):
    """nnUNet_* variables locate the same data as --workdir; no 'paths not set' warning."""
    ds_id, raw = _ds(trained_2d_workdir)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        monkeypatch.setenv(var, str(trained_2d_workdir / sub))
    out = tmp_path / "pred_env"
    run_cli(
        "predict", "-i", raw / "imagesTs", "-o", out, "-d", ds_id, "-c", "2d", "-f", "0", "--no-tta", "--device", "cpu"
    )
    assert len(list(out.glob("*.png"))) == len(list((raw / "imagesTs").glob("*_0000.png")))


def test_default_workdir_and_entry_point(tmp_path):
    """`python -m umamba_seg` works from a fresh folder with no nnU-Net variables and prints no warning."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    r = subprocess.run(
        [sys.executable, "-m", "umamba_seg", "plan-and-preprocess", "-d", "7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no dataset with id 7")
    assert str(tmp_path / "umamba_workdir" / "raw") in lines[0]
    assert "Traceback" not in r.stderr and "not defined" not in r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "umamba_seg", "train", "-d", "7"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and r.stderr.startswith("error: bad usage")


def test_unknown_arch_is_a_clear_error(capsys, tmp_path):
    assert cli(["train", "-d", "1", "-c", "2d", "-f", "0", "-a", "nope", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown architecture 'nope'") and "cnn" in err
