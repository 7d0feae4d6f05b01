"""Issue 13 (and 5): prediction keeps geometry, resumes after SIGKILL, shards, averages folds, refuses bad input."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from tests.pipeline_fixtures import predict_args, run_cli
from umamba_seg.cli import main as cli
from umamba_seg.inference.predict import shard


def _raw(workdir: Path) -> Path:
    return next((workdir / "raw").iterdir())


def _oblique_direction() -> tuple[float, ...]:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx @ np.diag([-1, 1, 1])).ravel())  # rotated and flipped


def test_geometry_round_trip_nifti_and_mha(trained_3d_workdir, tmp_path):
    raw = _raw(trained_3d_workdir)
    src = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0]
    img = sitk.ReadImage(str(src))
    inp = tmp_path / "in"
    inp.mkdir()
    variants = {
        "oblique_0000.nii.gz": dict(
            spacing=(0.7, 0.9, 3.3), origin=(12.5, -40.0, 7.25), direction=_oblique_direction()
        ),
        "flipped_0000.mha": dict(
            spacing=(0.8, 0.8, 3.0), origin=(-3.0, 2.0, 100.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)
        ),
        "aniso_0000.nii.gz": dict(
            spacing=(0.5, 1.5, 5.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)
        ),
    }
    for name, geo in variants.items():
        v = sitk.Image(img)
        v.SetSpacing(geo["spacing"])
        v.SetOrigin(geo["origin"])
        v.SetDirection(geo["direction"])
        sitk.WriteImage(v, str(inp / name))
    out = tmp_path / "out"
    run_cli(*predict_args(trained_3d_workdir, inp, out, raw.name, "3d_fullres", "-f", "0", "--no-tta"))
    for name in variants:
        ending = ".mha" if name.endswith(".mha") else ".nii.gz"
        pred = out / name.replace("_0000", "")
        assert pred.is_file(), f"missing {pred}"
        a, b = sitk.ReadImage(str(inp / name)), sitk.ReadImage(str(pred))
        assert a.GetSize() == b.GetSize()
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
        if ending == ".nii.gz":
            np.testing.assert_allclose(nib.load(str(inp / name)).affine, nib.load(str(pred)).affine, atol=1e-4)
            assert nib.load(str(pred)).shape == nib.load(str(inp / name)).shape


def test_sharding_covers_every_case_once():
    cases = [f"c{i}" for i in range(11)]
    parts = [shard(cases, 3, k) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(cases)
    assert sum(len(p) for p in parts) == len(cases)


def test_sharded_cli_runs_cover_the_folder(trained_2d_workdir, tmp_path):
    raw = _raw(trained_2d_workdir)
    out = tmp_path / "out"
    for k in ("0", "1"):
        opts = ("-f", "0", "--no-tta", "--num-parts", "2", "--part-id", k)
        run_cli(*predict_args(trained_2d_workdir, raw / "imagesTs", out, raw.name, "2d", *opts))
    expected = sorted(p.name.replace("_0000", "") for p in (raw / "imagesTs").glob("*_0000.png"))
    assert sorted(p.name for p in out.glob("*.png")) == expected


def test_fold_average_is_mean_of_fold_probabilities(trained_2d_workdir, tmp_path):
    raw = _raw(trained_2d_workdir)
    for name, folds in (("f0", ["0"]), ("f1", ["1"]), ("f01", ["0", "1"])):
        opts = ("-f", *folds, "--no-tta", "--save-probabilities")
        run_cli(*predict_args(trained_2d_workdir, raw / "imagesTs", tmp_path / name, raw.name, "2d", *opts))
    for npz in (tmp_path / "f01").glob("*.npz"):
        both = np.load(npz)["probabilities"]
        p0 = np.load(tmp_path / "f0" / npz.name)["probabilities"]
        p1 = np.load(tmp_path / "f1" / npz.name)["probabilities"]
        np.testing.assert_allclose(both, (p0 + p1) / 2, atol=2e-3)


def _read(path: Path) -> tuple[np.ndarray, tuple]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), (img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def test_continue_after_sigkill_matches_uninterrupted_run(trained_3d_workdir, tmp_path):
    raw = _raw(trained_3d_workdir)
    inp = tmp_path / "in"
    inp.mkdir()
    src = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))
    for i in range(6):  # enough cases that the kill lands mid-run
        shutil.copy(src[i % len(src)], inp / f"case{i:02d}_0000.nii.gz")

    def command(out: Path) -> list[str]:
        opts = ("-f", "0", "--save-probabilities")
        argv = predict_args(trained_3d_workdir, inp, out, raw.name, "3d_fullres", *opts)
        return [sys.executable, "-m", "umamba_seg", *map(str, argv)]

    ref = tmp_path / "ref"
    subprocess.run(command(ref), check=True, capture_output=True, timeout=600)
    out = tmp_path / "out"
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("case*.nii.gz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("case*.nii.gz"))
    assert 0 < len(finished) < 6 or proc.returncode != -signal.SIGKILL
    for f in finished:  # whatever is there under a final name is complete
        _read(f)
    subprocess.run([*command(out), "--continue"], check=True, capture_output=True, timeout=600)
    assert not (out / ".partial").exists()
    for f in sorted(ref.glob("case*")):
        if f.suffix == ".pkl":
            continue
        g = out / f.name
        if f.name.endswith(".npz"):
            np.testing.assert_array_equal(np.load(f)["probabilities"], np.load(g)["probabilities"])
        else:
            a, ga = _read(f)
            b, gb = _read(g)
            np.testing.assert_array_equal(a, b)
            assert ga == gb


# ---- bad input to predict (issue 5) ----------------------------------------------------


def _predict_err(capsys, *argv) -> str:
    """Run a ``predict`` command that must fail; its ``error:`` line (exit 2, no traceback)."""
    capsys.readouterr()
    assert cli([*map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")][0]


def test_input_folder_without_matching_files(trained_2d_workdir, tmp_path, capsys):
    raw = _raw(trained_2d_workdir)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "notes.txt").write_text("x")
    err = _predict_err(capsys, *predict_args(trained_2d_workdir, inp, tmp_path / "o", raw.name, "2d"))
    assert "no image files to predict" in err and str(inp) in err


def test_wrong_channel_count(trained_3d_workdir, tmp_path, capsys):
    raw = _raw(trained_3d_workdir)
    inp = tmp_path / "in"
    inp.mkdir()
    src = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0]
    shutil.copy(src, inp / "x_0000.nii.gz")
    shutil.copy(src, inp / "x_0001.nii.gz")
    err = _predict_err(capsys, *predict_args(trained_3d_workdir, inp, tmp_path / "o", raw.name, "3d_fullres"))
    assert "extra channel(s) 0001" in err and "x_0001.nii.gz" in err


def test_missing_model_and_missing_checkpoints(trained_2d_workdir, tmp_path, capsys):
    raw = _raw(trained_2d_workdir)
    argv = predict_args(trained_2d_workdir, raw / "imagesTs", tmp_path / "o", raw.name, "2d", "-a", "umamba_bot")
    err = _predict_err(capsys, *argv)
    assert "no trained model" in err and "umambaPlans_umamba_bot__2d" in err
    model = tmp_path / "model"
    src = trained_2d_workdir / "results" / raw.name / "umambaTrainer__umambaPlans_cnn__2d"
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("*.pth"))
    err = _predict_err(capsys, "predict", "-i", raw / "imagesTs", "-o", tmp_path / "o", "-m", model)
    assert "no checkpoint_final.pth in any fold_*" in err and str(model) in err


def test_checkpoint_from_another_dataset(trained_2d_workdir, tmp_path, capsys):
    raw = _raw(trained_2d_workdir)
    model = tmp_path / "model"
    shutil.copytree(trained_2d_workdir / "results" / raw.name / "umambaTrainer__umambaPlans_cnn__2d", model)
    ckpt_file = model / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_file, weights_only=True)
    ckpt["dataset_name"] = "Dataset123_Other"
    torch.save(ckpt, ckpt_file)
    err = _predict_err(capsys, "predict", "-i", raw / "imagesTs", "-o", tmp_path / "o", "-m", model, "-f", "0")
    assert "checkpoint belongs to Dataset123_Other" in err and str(ckpt_file) in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_malicious_pickle_checkpoint_is_refused(trained_2d_workdir, tmp_path, capsys, monkeypatch):
    raw = _raw(trained_2d_workdir)
    model = tmp_path / "model"
    shutil.copytree(trained_2d_workdir / "results" / raw.name / "umambaTrainer__umambaPlans_cnn__2d", model)
    ckpt_file = model / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_file, weights_only=True)
    ckpt["payload"] = _Evil()
    with open(ckpt_file, "wb") as f:
        torch.save(ckpt, f, pickle_module=pickle)
    monkeypatch.chdir(tmp_path)
    err = _predict_err(capsys, "predict", "-i", raw / "imagesTs", "-o", tmp_path / "o", "-m", model, "-f", "0")
    assert "weights_only" in err and "--trust-checkpoint" in err and str(ckpt_file) in err
    assert not (tmp_path / "EVIL_RAN").exists()
