"""Issue 5: every kind of bad raw dataset gets one clear line naming the file (exit 2, no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from umamba_seg.cli import main as cli

NAME = "Dataset321_Verify"
SHAPE = (8, 16, 16)  # every case's voxels
VERIFY = ["plan-and-preprocess", "-d", "321", "-a", "cnn", "--verify"]  # the command line under test


def _write(arr: np.ndarray, path: Path, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def _labels(dtype=np.uint8, classes: tuple[float, ...] = (1, 2)) -> np.ndarray:
    """A label map of the good dataset's kind: ``classes[0]`` and ``classes[1]`` (where given) in two blocks."""
    lab = np.zeros(SHAPE, dtype)
    for value, block in zip(classes, (np.s_[2:6, 4:10, 4:10], np.s_[2:6, 10:14, 10:14])):
        lab[block] = value
    return lab


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory) -> Path:
    """3 cases, 2 channels, labels {0, 1, 2}, 8 x 16 x 16 voxels."""
    root = tmp_path_factory.mktemp("verify") / "raw" / NAME
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = _labels()
        for c in range(2):
            _write(
                (lab * 50 + rng.normal(0, 5, lab.shape)).astype(np.float32), root / "imagesTr" / f"c{i}_{c:04d}.nii.gz"
            )
        _write(lab, root / "labelsTr" / f"c{i}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1", "1": "T2"},
                "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 3,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


@pytest.fixture
def dataset(good_dataset, tmp_path) -> Path:
    dst = tmp_path / "raw" / NAME
    shutil.copytree(good_dataset, dst)
    return dst


def _verify(ds: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli([*VERIFY, "--no-preprocess", "--workdir", str(ds.parent.parent)])
    return code, capsys.readouterr().err


def _assert_error(ds: Path, capsys, what: str, file: Path) -> None:
    code, err = _verify(ds, capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines, err
    hit = [line for line in lines if what in line]
    assert hit, f"expected '{what}' in:\n{err}"
    assert str(file) in hit[0], f"expected the file {file} in: {hit[0]}"
    assert "Traceback" not in err


def test_good_dataset_passes(dataset, capsys):
    code, err = _verify(dataset, capsys)
    assert code == 0, err


def test_missing_channel(dataset, capsys):
    f = dataset / "imagesTr" / "c1_0001.nii.gz"
    f.unlink()
    _assert_error(dataset, capsys, "channel 0001 of case 'c1' is missing", f)


def test_extra_channel(dataset, capsys):
    f = dataset / "imagesTr" / "c1_0002.nii.gz"
    shutil.copy(dataset / "imagesTr" / "c1_0000.nii.gz", f)
    _assert_error(dataset, capsys, "extra channel 0002", f)


def test_shape_mismatch(dataset, capsys):
    f = dataset / "imagesTr" / "c0_0000.nii.gz"
    _write(np.zeros((8, 16, 15), np.float32), f)
    _assert_error(dataset, capsys, "image shape", f)


@pytest.mark.parametrize(
    "what,kwargs", [("spacing", {"spacing": (1.0, 1.0, 3.0)}), ("origin", {"origin": (5.0, 0.0, 0.0)})]
)
def test_geometry_mismatch(dataset, capsys, what, kwargs):
    f = dataset / "imagesTr" / "c2_0001.nii.gz"
    _write(np.zeros(SHAPE, np.float32), f, **kwargs)
    _assert_error(dataset, capsys, f"image {what}", f)


def test_direction_mismatch(dataset, capsys):
    f = dataset / "imagesTr" / "c2_0000.nii.gz"
    img = sitk.ReadImage(str(f))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(f))
    _assert_error(dataset, capsys, "image direction", f)


def _stray_label() -> np.ndarray:
    lab = _labels()
    lab[0, 0, 0] = 7
    return lab


def _nan_image() -> np.ndarray:
    arr = np.zeros(SHAPE, np.float32)
    arr[3, 3, 3] = np.nan
    arr[4, 4, 4] = np.inf
    return arr


@pytest.mark.parametrize(
    "file,values,what",
    [
        ("labelsTr/c0.nii.gz", _stray_label, "label value(s) [7] not in dataset.json"),
        ("labelsTr/c1.nii.gz", lambda: _labels(np.float32, (0.5,)), "non-integer label values"),
        ("imagesTr/c2_0001.nii.gz", _nan_image, "NaN/Inf voxel(s)"),
    ],
    ids=["label_value_not_in_dataset_json", "non_integer_labels", "nan_voxels"],
)
def test_bad_voxel_values(dataset, capsys, file, values, what):
    f = dataset / file
    _write(values(), f)
    _assert_error(dataset, capsys, what, f)


def test_4d_image(dataset, capsys):
    f = dataset / "imagesTr" / "c0_0000.nii.gz"
    img = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros(SHAPE, np.float32))] * 2)
    sitk.WriteImage(img, str(f))
    _assert_error(dataset, capsys, "image is 4D", f)


def test_class_empty_in_every_case(dataset, capsys):
    for i in range(3):
        _write(_labels(classes=(1,)), dataset / "labelsTr" / f"c{i}.nii.gz")
    _assert_error(dataset, capsys, "label 'b' ([2]) is empty in every training case", dataset / "labelsTr")


def test_truncated_file(dataset, capsys):
    f = dataset / "imagesTr" / "c1_0000.nii.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    _assert_error(dataset, capsys, "unreadable", f)


def test_wrong_file_ending(dataset, capsys):
    src = dataset / "imagesTr" / "c1_0000.nii.gz"
    f = dataset / "imagesTr" / "c1_0000.mha"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(f))
    src.unlink()
    _assert_error(dataset, capsys, "file ending '.mha' is not the dataset's '.nii.gz'", f)


@pytest.mark.parametrize(
    "edit,what",
    [
        (lambda d: d.pop("file_ending"), "dataset.json lacks key(s) file_ending"),
        (lambda d: d.update(numTraining=5), "numTraining is 5 but labelsTr holds 3"),
    ],
    ids=["missing_keys", "inconsistent_num_training"],
)
def test_bad_dataset_json(dataset, capsys, edit, what):
    f = dataset / "dataset.json"
    d = json.loads(f.read_text())
    edit(d)
    f.write_text(json.dumps(d))
    _assert_error(dataset, capsys, what, f)


def test_every_problem_is_reported(dataset, capsys):
    (dataset / "imagesTr" / "c1_0001.nii.gz").unlink()
    _write(np.zeros((8, 16, 15), np.float32), dataset / "imagesTr" / "c0_0000.nii.gz")
    code, err = _verify(dataset, capsys)
    assert code == 2
    assert "c1_0001.nii.gz" in err and "c0_0000.nii.gz" in err and "2 problems found" in err


def test_dataset_id_missing_and_ambiguous(dataset, capsys):
    workdir = dataset.parent.parent
    assert cli(["plan-and-preprocess", "-d", "999", "--workdir", str(workdir)]) == 2
    assert "no dataset with id 999" in capsys.readouterr().err
    shutil.copytree(dataset, workdir / "raw" / "Dataset321_Other")
    assert cli(["plan-and-preprocess", "-d", "321", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "matches several folders" in err and "Dataset321_Other" in err and NAME in err


def test_subprocess_has_no_traceback(dataset):
    (dataset / "imagesTr" / "c1_0001.nii.gz").unlink()
    r = subprocess.run(
        [sys.executable, "-m", "umamba_seg", *VERIFY, "--workdir", str(dataset.parent.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: channel 0001 of case 'c1' is missing")
