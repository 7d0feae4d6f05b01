"""Issue 24: bad input never crashes obscurely, is never read partially, and two runs never mix.

One table row per case: the command exits 2 with one line ``error: ...`` naming the file, no
traceback, and nothing is written (the folder it works in is unchanged). Then the cases that
are not plain refusals: locks (held, stale after kill -9), prediction provenance, training
that stops on a NaN loss, augmentation workers that die with a killed parent, file modes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.pipeline_fixtures import TINY_SCHEDULE, tiny_schedule, train_args
from umamba_seg.cli import main as cli
from umamba_seg.locking import exclusive_lock

MODEL = "umambaTrainer__umambaPlans_cnn__2d"
DS = "Dataset903_SynthEndoscopy"


# ---- helpers and shared material -----------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: what "nothing written" compares (an
    empty folder left behind holds nothing half-written)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _run_err(capsys, argv: list) -> tuple[int, str]:
    capsys.readouterr()
    code = cli([str(a) for a in argv])
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert names in lines[0], f"expected {names!r} in {lines[0]!r}"


def _nii(arr: np.ndarray, path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def _nii_case(folder: Path, case: str, shape=(64, 64), seed: int = 0) -> list[Path]:
    """Three 2D NIfTI channel files, the input of the NIfTI variant of the 2D model."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [_nii(rng.uniform(0, 255, shape).astype(np.float32), folder / f"{case}_{c:04d}.nii.gz") for c in range(3)]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _zero_spacing(path: Path) -> None:
    """Set pixdim[2] to 0 in a .nii.gz header (nibabel and SimpleITK would write 1.0)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.fixture(scope="module")
def model_2d(trained_2d_workdir) -> Path:
    return trained_2d_workdir / "results" / DS / MODEL


@pytest.fixture(scope="module")
def nifti_model(model_2d, tmp_path_factory) -> Path:
    """The trained 2D model reading NIfTI (SimpleITKIO, .nii.gz) instead of PNG: same network."""
    md = tmp_path_factory.mktemp("nifti_model") / MODEL
    (md / "fold_0").mkdir(parents=True)
    shutil.copy(model_2d / "fold_0" / "checkpoint_final.pth", md / "fold_0")
    plans = json.loads((model_2d / "plans.json").read_text())
    plans["image_reader_writer"] = "SimpleITKIO"
    (md / "plans.json").write_text(json.dumps(plans))
    ds = json.loads((model_2d / "dataset.json").read_text())
    ds["file_ending"] = ".nii.gz"
    (md / "dataset.json").write_text(json.dumps(ds))
    return md


@pytest.fixture
def emulate_non_root(monkeypatch):
    """Root may write into a read-only folder: make os.access answer from the mode bits as for
    an ordinary user, so the up-front writability checks see what a user would see."""
    if os.geteuid() != 0:
        return
    real = os.access

    def access(path, mode, *a, **k):
        if mode & os.W_OK and os.path.exists(path) and not os.stat(path).st_mode & 0o200:
            return False
        return real(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)


def _nifti_dataset(root: Path, n: int = 4) -> Path:
    """A tiny single-channel 2D NIfTI dataset (nnU-Net raw format) with labels {0, 1}."""
    ds = root / "raw" / "Dataset905_BadNii"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        lab = np.zeros((32, 32), np.uint8)
        lab[8:20, 8 + i : 20 + i] = 1
        _nii((lab * 100 + rng.normal(0, 5, lab.shape)).astype(np.float32), ds / "imagesTr" / f"c{i}_0000.nii.gz")
        _nii(lab, ds / "labelsTr" / f"c{i}.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "a": 1},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    (root / "preprocessed").mkdir()
    (root / "results").mkdir()
    return ds


# ---- the table: (argv, the text the error line must contain, the folder that must not change) ----

Case = Callable[..., tuple[list, str, Path]]


def _predict_nifti(tmp, nifti_model, tamper: Callable[[Path], Path]) -> tuple[list, str, Path]:
    inp = tmp / "in"
    _nii_case(inp, "a")
    bad = tamper(inp)
    return (
        ["predict", "-i", inp, "-o", tmp / "out", "-m", nifti_model, "-f", "0", "--no-tta", "--device", "cpu"],
        str(bad),
        tmp,
    )


def case_predict_truncated_nii(tmp, f):
    def tamper(inp):
        _nii_case(inp, "a", shape=(192, 192))
        _truncate(inp / "a_0001.nii.gz")
        return inp / "a_0001.nii.gz"

    return _predict_nifti(tmp, f["nifti_model"], tamper)


def case_predict_zero_byte(tmp, f):
    def tamper(inp):
        (inp / "a_0000.nii.gz").write_bytes(b"")
        return inp / "a_0000.nii.gz"

    return _predict_nifti(tmp, f["nifti_model"], tamper)


def case_predict_png_named_nii(tmp, f):
    def tamper(inp):
        png = next((f["raw"] / "imagesTs").glob("*.png"))
        shutil.copy(png, inp / "a_0002.nii.gz")
        return inp / "a_0002.nii.gz"

    return _predict_nifti(tmp, f["nifti_model"], tamper)


def case_predict_4d(tmp, f):
    def tamper(inp):
        nib.save(nib.Nifti1Image(np.zeros((64, 64, 2, 3), np.float32), np.eye(4)), str(inp / "a_0000.nii.gz"))
        return inp / "a_0000.nii.gz"

    return _predict_nifti(tmp, f["nifti_model"], tamper)


def case_predict_zero_spacing(tmp, f):
    def tamper(inp):
        _zero_spacing(inp / "a_0001.nii.gz")
        return inp / "a_0001.nii.gz"

    return _predict_nifti(tmp, f["nifti_model"], tamper)


def case_predict_truncated_png(tmp, f):
    inp = tmp / "in"
    inp.mkdir()
    png = next((f["raw"] / "imagesTs").glob("*.png"))
    shutil.copy(png, inp / "a_0000.png")
    _truncate(inp / "a_0000.png")
    return (
        ["predict", "-i", inp, "-o", tmp / "out", "-m", f["model_2d"], "-f", "0", "--no-tta", "--device", "cpu"],
        str(inp / "a_0000.png"),
        tmp,
    )


def case_predict_output_is_file(tmp, f):
    (tmp / "taken").write_text("not a folder")
    return (
        [
            "predict",
            "-i",
            f["raw"] / "imagesTs",
            "-o",
            tmp / "taken",
            "-m",
            f["model_2d"],
            "-f",
            "0",
            "--device",
            "cpu",
        ],
        str(tmp / "taken"),
        tmp,
    )


def case_predict_read_only_output(tmp, f):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)
    return (
        ["predict", "-i", f["raw"] / "imagesTs", "-o", tmp / "ro", "-m", f["model_2d"], "-f", "0", "--device", "cpu"],
        str(tmp / "ro"),
        tmp,
    )


def case_evaluate_read_only_output(tmp, f):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)
    ref = f["raw"] / "labelsTs"
    return (["evaluate", "-r", ref, "-p", ref, "-o", tmp / "ro"], str(tmp / "ro"), tmp)


def case_evaluate_truncated_prediction(tmp, f):
    ref, pred = tmp / "ref", tmp / "pred"
    ref.mkdir()
    pred.mkdir()
    lab = np.zeros((96, 96), np.uint8)
    lab[10:50, 20:60] = 1
    _nii(lab, ref / "a.nii.gz")
    _nii(lab, pred / "a.nii.gz")
    _truncate(pred / "a.nii.gz")
    return (["evaluate", "-r", ref, "-p", pred, "-o", tmp / "report", "-np", "1"], str(pred / "a.nii.gz"), tmp)


def case_ensemble_truncated_npz(tmp, f):
    folders = []
    for name in ("a", "b"):
        d = tmp / name
        shutil.copytree(f["model_2d"] / "fold_0" / "validation", d)
        for js in ("plans.json", "dataset.json"):
            shutil.copy(f["model_2d"] / js, d)
        folders.append(d)
    npz = sorted(folders[1].glob("*.npz"))[0]
    _truncate(npz)
    return (["ensemble", "-i", *folders, "-o", tmp / "ens", "-np", "1"], str(npz), tmp)


def case_postprocess_pkl(tmp, f):
    pkl = next((f["model_2d"] / "fold_0" / "validation").glob("*.pkl"))
    shutil.copy(pkl, tmp / "pp.pkl")
    return (
        ["postprocess", "-i", f["raw"] / "labelsTs", "-o", tmp / "pp", "--pp-file", tmp / "pp.pkl"],
        str(tmp / "pp.pkl"),
        tmp,
    )


def _train(f, fold: str, *extra) -> list:
    return train_args(f["workdir"], "903", "2d", fold, *TINY_SCHEDULE, *extra)


def case_train_epochs_0(tmp, f):
    return _train(f, "0", "--epochs", "0"), "--epochs", f["workdir"] / "results"


def case_train_iters_negative(tmp, f):
    return (
        _train(f, "0", "--iters-per-epoch", "-3"),
        "--iters-per-epoch",
        f["workdir"] / "results",
    )


def case_train_fold_minus_1(tmp, f):
    return _train(f, "-1"), "splits_final.json", f["workdir"] / "results"


def case_train_fold_7(tmp, f):
    return _train(f, "7"), "splits_final.json", f["workdir"] / "results"


def case_train_fold_x(tmp, f):
    return _train(f, "x"), "splits_final.json", f["workdir"] / "results"


def _fresh_workdir(tmp, f, planned: bool = False) -> tuple[Path, Path]:
    """A workdir with a copy of the raw 2D dataset; ``planned``: with the fixture's fingerprint and
    plans too (not its preprocessed data), so ``train`` goes straight to preprocessing."""
    w = tmp / "w"
    for sub in ("preprocessed", "results"):
        (w / sub).mkdir(parents=True)
    shutil.copytree(f["raw"], w / "raw" / DS)
    if planned:
        pre = w / "preprocessed" / DS
        pre.mkdir()
        for name in ("dataset_fingerprint.json", "umambaPlans_cnn.json", "dataset.json"):
            shutil.copy(f["workdir"] / "preprocessed" / DS / name, pre)
    return w, w / "raw" / DS


def case_train_zero_byte_image(tmp, f):
    w, raw = _fresh_workdir(tmp, f)
    bad = sorted((raw / "imagesTr").glob("*.png"))[0]
    bad.write_bytes(b"")
    return train_args(w, "903", "2d", "0", *TINY_SCHEDULE), str(bad), w / "results"


def case_train_undeclared_label(tmp, f):
    import skimage.io

    w, raw = _fresh_workdir(tmp, f, planned=True)
    bad = sorted((raw / "labelsTr").glob("*.png"))[0]
    lab = skimage.io.imread(bad)
    lab[lab > 0] = 7
    skimage.io.imsave(bad, lab, check_contrast=False)
    return train_args(w, "903", "2d", "0", *TINY_SCHEDULE), str(bad), w / "results"


def _verify_with(tmp, f, change: Callable[[dict], None]):
    w, raw = _fresh_workdir(tmp, f)
    ds = json.loads((raw / "dataset.json").read_text())
    change(ds)
    (raw / "dataset.json").write_text(json.dumps(ds))
    return (
        ["plan-and-preprocess", "-d", "903", "-a", "cnn", "--verify", "--no-preprocess", "--workdir", w],
        str(raw / "dataset.json"),
        w,
    )


def case_verify_labels_list(tmp, f):
    return _verify_with(tmp, f, lambda d: d.__setitem__("labels", ["background", "instrument"]))


def case_verify_file_ending_number(tmp, f):
    return _verify_with(tmp, f, lambda d: d.__setitem__("file_ending", 5))


def case_verify_num_training_string(tmp, f):
    return _verify_with(tmp, f, lambda d: d.__setitem__("numTraining", "8"))


def case_verify_channel_names_list(tmp, f):
    return _verify_with(tmp, f, lambda d: d.__setitem__("channel_names", ["R", "G", "B"]))


def case_verify_label_value_1_5(tmp, f):
    return _verify_with(tmp, f, lambda d: d["labels"].__setitem__("instrument", 1.5))


def _nifti_workdir_with(tmp, change: Callable[[Path], Path], verify: bool):
    raw = _nifti_dataset(tmp / "w")
    bad = change(raw)
    argv = ["plan-and-preprocess", "-d", "905", "-a", "cnn", "-c", "2d", "--workdir", tmp / "w"]
    return argv + (["--verify", "--no-preprocess"] if verify else []), str(bad), tmp / "w"


def _huge(raw: Path) -> Path:
    f = raw / "imagesTr" / "c1_0000.nii.gz"
    img = sitk.ReadImage(str(f))
    _nii(sitk.GetArrayFromImage(img) * np.float32(1e30), f)
    return f


def case_verify_intensity_1e30(tmp, f):
    return _nifti_workdir_with(tmp, _huge, verify=True)


def case_fingerprint_intensity_1e30(tmp, f):
    return _nifti_workdir_with(tmp, _huge, verify=False)


def case_verify_zero_spacing(tmp, f):
    def change(raw):
        _zero_spacing(raw / "imagesTr" / "c2_0000.nii.gz")
        return raw / "imagesTr" / "c2_0000.nii.gz"

    return _nifti_workdir_with(tmp, change, verify=True)


def case_verify_truncated_nii(tmp, f):
    def change(raw):
        _truncate(raw / "imagesTr" / "c3_0000.nii.gz")
        return raw / "imagesTr" / "c3_0000.nii.gz"

    return _nifti_workdir_with(tmp, change, verify=False)


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(
    name, trained_2d_workdir, model_2d, nifti_model, tmp_path, capsys, emulate_non_root
):
    f = {
        "workdir": trained_2d_workdir,
        "raw": trained_2d_workdir / "raw" / DS,
        "model_2d": model_2d,
        "nifti_model": nifti_model,
    }
    argv, names, watched = CASES[name](tmp_path, f)
    before = _snapshot(watched)
    code, err = _run_err(capsys, argv)
    _assert_one_line_error(code, err, names)
    assert _snapshot(watched) == before, "the failed command changed files"


# ---- writes that fail although the up-front checks passed --------------------------------


def test_prediction_write_failure_is_one_line(model_2d, trained_2d_workdir, tmp_path, capsys, monkeypatch):
    import umamba_seg.inference.predict as predict

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "dataset.json"))

    monkeypatch.setattr(predict, "write_json_atomic", refuse)
    code, err = _run_err(
        capsys,
        [
            "predict",
            "-i",
            trained_2d_workdir / "raw" / DS / "imagesTs",
            "-o",
            tmp_path / "out",
            "-m",
            model_2d,
            "-f",
            "0",
            "--device",
            "cpu",
        ],
    )
    _assert_one_line_error(code, err, str(tmp_path / "out"))
    assert not any(p.name.endswith(".png") for p in (tmp_path / "out").iterdir())


def test_evaluate_write_failure_is_one_line(trained_2d_workdir, tmp_path, capsys, monkeypatch):
    import umamba_seg.evaluation.evaluate as evaluate

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "r" / "summary.json"))

    monkeypatch.setattr(evaluate, "_write_summary_json", refuse)
    ref = trained_2d_workdir / "raw" / DS / "labelsTs"
    code, err = _run_err(capsys, ["evaluate", "-r", ref, "-p", ref, "-o", tmp_path / "r", "-np", "1"])
    _assert_one_line_error(code, err, "summary.json")


# ---- one writer per output ------------------------------------------------------------------


def _predict_argv(trained_2d_workdir, model_2d, out: Path, *extra) -> list:
    return [
        "predict",
        "-i",
        trained_2d_workdir / "raw" / DS / "imagesTs",
        "-o",
        out,
        "-m",
        model_2d,
        "--no-tta",
        "--device",
        "cpu",
        *extra,
    ]


def test_predict_lock_held_is_refused_and_stale_lock_taken_over(trained_2d_workdir, model_2d, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out, ".umamba_predict_part0.lock", "the output folder"):
        code, err = _run_err(capsys, _predict_argv(trained_2d_workdir, model_2d, out, "-f", "0"))
        _assert_one_line_error(code, err, str(out))
        assert f"pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == []
    # a lock file left by a run killed with -9: its pid is dead and the kernel dropped its flock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".umamba_predict_part0.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    code, err = _run_err(capsys, _predict_argv(trained_2d_workdir, model_2d, out, "-f", "0"))
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 2 and not (out / ".umamba_predict_part0.lock").exists()


def test_continue_with_another_model_is_refused(trained_2d_workdir, model_2d, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli([str(a) for a in _predict_argv(trained_2d_workdir, model_2d, out, "-f", "0")]) == 0
    seg = sorted(out.glob("*.png"))[0]
    seg.unlink()  # an unfinished case that --continue would redo
    before = _snapshot(out)
    code, err = _run_err(capsys, _predict_argv(trained_2d_workdir, model_2d, out, "-f", "1", "--continue"))
    _assert_one_line_error(code, err, str(out / "predict_args_part0.json"))
    assert "folds" in err
    assert _snapshot(out) == before
    # another part of the same folder with other folds would mix models too
    code, err = _run_err(
        capsys, _predict_argv(trained_2d_workdir, model_2d, out, "-f", "1", "--num-parts", "2", "--part-id", "1")
    )
    _assert_one_line_error(code, err, str(out / "predict_args_part0.json"))
    # instances filtered by another --min-size would mix two post-processings
    code, err = _run_err(
        capsys, _predict_argv(trained_2d_workdir, model_2d, out, "-f", "0", "--min-size", "3", "--continue")
    )
    _assert_one_line_error(code, err, str(out / "predict_args_part0.json"))
    assert "min_size" in err
    # the same model and folds continue
    assert cli([str(a) for a in _predict_argv(trained_2d_workdir, model_2d, out, "-f", "0", "--continue")]) == 0
    assert seg.is_file()


def test_train_lock_held_is_refused(trained_2d_workdir, tmp_path, capsys):
    fold = trained_2d_workdir / "results" / DS / MODEL / "fold_0"
    before = _snapshot(fold)
    with exclusive_lock(fold, ".umamba_train.lock", "the fold folder"):
        code, err = _run_err(capsys, train_args(trained_2d_workdir, "903", "2d", "0", *TINY_SCHEDULE))
    _assert_one_line_error(code, err, str(fold))
    assert f"pid {os.getpid()}" in err
    assert _snapshot(fold) == before


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    """kill -9 of a real holder: the kernel releases its flock and the next run takes the lock."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from umamba_seg.locking import exclusive_lock
        with exclusive_lock({str(tmp_path)!r}, "x.lock", "the folder"):
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        from umamba_seg.errors import UserInputError

        with pytest.raises(UserInputError, match=f"pid {holder.pid}"):
            with exclusive_lock(tmp_path, "x.lock", "the folder"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert (tmp_path / "x.lock").exists()  # left behind by the killed holder
        with exclusive_lock(tmp_path, "x.lock", "the folder"):
            assert json.loads((tmp_path / "x.lock").read_text())["pid"] == os.getpid()
        assert not (tmp_path / "x.lock").exists()
    finally:
        holder.kill()
        holder.wait()


# ---- training stops on a non-finite loss ------------------------------------------------------


def test_nan_loss_stops_training_without_final_checkpoint(trained_2d_workdir, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(trained_2d_workdir, work, ignore=shutil.ignore_patterns("validation"))
    fold = work / "results" / DS / MODEL / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    ckpt["network_weights"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ckpt["network_weights"].items()
    }
    torch.save(ckpt, fold / "checkpoint_latest.pth")
    (fold / "checkpoint_final.pth").unlink()
    code, err = _run_err(capsys, train_args(work, "903", "2d", "0", "--continue", *tiny_schedule(3)))
    _assert_one_line_error(code, err, str(fold))
    assert "nan" in err
    assert not (fold / "checkpoint_final.pth").exists()
    assert not (fold / ".umamba_train.lock").exists()


# ---- augmentation workers die with their parent ------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_augmentation_workers_die_with_killed_parent(tmp_path):
    """A parent running nnunetv2's augmenter (2 forked workers) is killed with -9: the workers follow."""
    script = textwrap.dedent("""
        import time
        import numpy as np
        from batchgenerators.dataloading.data_loader import DataLoader
        from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
        from umamba_seg.training.worker_lifetime import workers_die_with_parent

        class Loader(DataLoader):
            def generate_train_batch(self):
                return {"data": np.zeros((1, 4), np.float32)}

        with workers_die_with_parent():
            aug = NonDetMultiThreadedAugmenter(Loader(None, 1, infinite=True), None, 2)
            next(aug)
        print(" ".join(str(p.pid) for p in aug._processes), flush=True)
        time.sleep(60)
        """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers), "augmentation workers outlived their killed parent"
    finally:
        parent.kill()
        parent.wait()


def test_trainer_forks_its_loaders_under_the_guard(monkeypatch):
    """umambaTrainer.get_dataloaders runs nnunetv2's inside workers_die_with_parent."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from umamba_seg.training import worker_lifetime
    from umamba_seg.training.trainer import umambaTrainer

    seen = []
    monkeypatch.setattr(
        nnUNetTrainer,
        "get_dataloaders",
        lambda self: seen.append(getattr(worker_lifetime._state, "parent", None)) or (1, 2),
    )
    assert umambaTrainer.get_dataloaders(object.__new__(umambaTrainer)) == (1, 2)
    assert seen == [os.getpid()]


# ---- atomic writes follow the umask -----------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    from umamba_seg.atomic import write_json_atomic, write_text_atomic

    old = os.umask(umask)
    try:
        write_text_atomic("x", tmp_path / "a.txt")
        write_json_atomic({"a": 1}, tmp_path / "b.json")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == mode
