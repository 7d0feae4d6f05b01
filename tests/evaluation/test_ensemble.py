"""ensemble_folders on small fake probability folders: averaging, outputs, input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from umamba_seg.errors import UserInputError
from umamba_seg.evaluation.ensemble import ensemble_folders

SHAPE = (4, 5, 6)  # numpy (z, y, x)
DATASET = {
    "labels": {"background": 0, "a": 1, "b": 2},
    "file_ending": ".nii.gz",
    "channel_names": {"0": "CT"},
    "numTraining": 2,
}
PLANS = {
    "dataset_name": "Dataset001_Fake",
    "plans_name": "umambaPlans_cnn",
    "image_reader_writer": "SimpleITKIO",
    "label_manager": "LabelManager",
    "configurations": {},
}


def _properties(tmp_path: Path) -> dict:
    img = sitk.GetImageFromArray(np.zeros(SHAPE, np.uint8))
    img.SetSpacing((0.5, 2.0, 3.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "geometry.nii.gz"))
    return SimpleITKIO().read_seg(str(tmp_path / "geometry.nii.gz"))[1]


def _folder(
    root: Path,
    name: str,
    probabilities: dict[str, np.ndarray],
    props: dict,
    dataset: dict = DATASET,
    plans: dict = PLANS,
) -> Path:
    folder = root / name
    folder.mkdir()
    for case, p in probabilities.items():
        np.savez_compressed(folder / f"{case}.npz", probabilities=p.astype(np.float32))
        save_pickle(props, str(folder / f"{case}.pkl"))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


def _constant(p0: float, p1: float, p2: float) -> np.ndarray:
    return np.stack([np.full(SHAPE, v, np.float32) for v in (p0, p1, p2)])


@pytest.fixture
def two_folders(tmp_path):
    props = _properties(tmp_path)
    a = _constant(0.2, 0.5, 0.3)  # alone: label 1 everywhere
    b = _constant(0.2, 0.6, 0.2)
    b[:, :2] = np.array([0.2, 0.1, 0.7])[:, None, None, None]  # first two slices: label 2
    folder_a = _folder(tmp_path, "a", {"case_0": a, "case_1": a}, props)
    folder_b = _folder(tmp_path, "b", {"case_0": b, "case_1": a}, props)
    return tmp_path, folder_a, folder_b, props


def test_average_then_argmax_with_geometry(two_folders):
    root, folder_a, folder_b, _ = two_folders
    out = root / "out"
    written = ensemble_folders([folder_a, folder_b], out, num_processes=1, save_probabilities=True, verbose=False)
    assert sorted(p.name for p in written) == ["case_0.nii.gz", "case_1.nii.gz"]
    img = sitk.ReadImage(str(out / "case_0.nii.gz"))
    seg = sitk.GetArrayFromImage(img)
    # average: first two slices (0.2, 0.3, 0.5) -> 2; the rest (0.2, 0.55, 0.25) -> 1
    expected = np.ones(SHAPE, np.uint8)
    expected[:2] = 2
    np.testing.assert_array_equal(seg, expected)
    assert img.GetSpacing() == pytest.approx((0.5, 2.0, 3.0)) and img.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case_1.nii.gz"))), np.ones(SHAPE, np.uint8)
    )
    merged = np.load(out / "case_0.npz")["probabilities"]
    np.testing.assert_allclose(merged[:, 0, 0, 0], [0.2, 0.3, 0.5], rtol=1e-6)
    assert json.loads((out / "dataset.json").read_text()) == DATASET
    assert json.loads((out / "plans.json").read_text()) == PLANS
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the staging folder is gone
    # the output holds everything a further ensemble needs
    again = ensemble_folders([out, folder_a], root / "out2", num_processes=1, verbose=False)
    assert len(again) == 2


def test_different_labels_are_refused(two_folders):
    root, folder_a, _, props = two_folders
    other = dict(DATASET, labels={"background": 0, "a": 1, "c": 2})
    folder_c = _folder(root, "c", {"case_0": _constant(1, 0, 0), "case_1": _constant(1, 0, 0)}, props, dataset=other)
    with pytest.raises(UserInputError) as e:
        ensemble_folders([folder_a, folder_c], root / "out", num_processes=1, verbose=False)
    assert "'labels' differs" in e.value.what and e.value.where == str(folder_c / "dataset.json")


def test_different_dataset_is_refused(two_folders):
    root, folder_a, _, props = two_folders
    folder_d = _folder(
        root,
        "d",
        {"case_0": _constant(1, 0, 0), "case_1": _constant(1, 0, 0)},
        props,
        plans=dict(PLANS, dataset_name="Dataset002_Other"),
    )
    with pytest.raises(UserInputError, match="dataset_name"):
        ensemble_folders([folder_a, folder_d], root / "out", num_processes=1, verbose=False)


def test_missing_files_are_named(two_folders):
    root, folder_a, folder_b, _ = two_folders
    (folder_b / "case_1.npz").unlink()
    with pytest.raises(UserInputError) as e:
        ensemble_folders([folder_a, folder_b], root / "out", num_processes=1, verbose=False)
    assert "case_1" in e.value.what and e.value.where == str(folder_b / "case_1.npz")
    (folder_a / "case_1.npz").unlink()
    with pytest.raises(UserInputError, match="one of the input folders"):
        ensemble_folders([folder_a, folder_b], folder_a, verbose=False)
    (folder_b / "plans.json").unlink()
    with pytest.raises(UserInputError, match="plans.json missing"):
        ensemble_folders([folder_a, folder_b], root / "out", num_processes=1, verbose=False)
    with pytest.raises(UserInputError, match="at least two"):
        ensemble_folders([folder_a], root / "out", verbose=False)
    with pytest.raises(UserInputError, match="given twice"):
        ensemble_folders([folder_a, root / "a"], root / "out", verbose=False)


def test_mismatched_probability_shapes_are_refused(two_folders):
    root, folder_a, _, props = two_folders
    small = np.stack([np.full((4, 5, 5), v, np.float32) for v in (0.2, 0.5, 0.3)])
    folder_e = _folder(root, "e", {"case_0": small, "case_1": small}, props)
    with pytest.raises(UserInputError, match="do not fit together"):
        ensemble_folders([folder_a, folder_e], root / "out", num_processes=1, verbose=False)


@pytest.mark.slow
def test_worker_processes_write_the_same_segmentations(two_folders):
    root, folder_a, folder_b, _ = two_folders
    ensemble_folders([folder_a, folder_b], root / "serial", num_processes=1, verbose=False)
    ensemble_folders([folder_a, folder_b], root / "parallel", num_processes=2, verbose=False)
    for case in ("case_0.nii.gz", "case_1.nii.gz"):
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(root / "serial" / case))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(root / "parallel" / case))),
        )
