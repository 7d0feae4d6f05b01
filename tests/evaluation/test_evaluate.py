"""evaluate_folders: file pairing, label discovery, dataset.json regions, reports, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics, load_summary_json
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from PIL import Image

from umamba_seg.errors import UserInputError
from umamba_seg.evaluation.evaluate import evaluate_folders

SITK_SPACING = (0.5, 2.0, 3.0)  # x, y, z as SimpleITK orders them: numpy axes (z, y, x) = (3, 2, 0.5)


def _write(folder: Path, name: str, arr: np.ndarray, spacing=SITK_SPACING) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    path = folder / name
    sitk.WriteImage(img, str(path))
    return path


def _cases(tmp_path: Path) -> tuple[Path, Path]:
    """Three 3D cases; class 2 is absent from case b's reference and prediction."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    a_ref = np.zeros((4, 5, 8), np.uint8)
    a_ref[0, 0, 0] = 1
    a_ref[2, 2, 4:6] = 2
    a_pred = np.zeros_like(a_ref)
    a_pred[1, 0, 0] = 1  # one voxel along numpy axis 0 (sitk z, 3 mm)
    a_pred[2, 2, 4:6] = 2
    a_pred[3, 4, 7] = 5  # label only in a prediction: not evaluated
    b_ref = np.zeros_like(a_ref)
    b_ref[1, 1, 1:4] = 1
    b_pred = b_ref.copy()
    c_ref = np.zeros_like(a_ref)
    c_ref[3, 3, 3] = 2
    c_pred = np.zeros_like(a_ref)  # class 2 missed: Dice 0, HD95 NaN, NSD 0; class 1: both empty
    for name, r, p in (("a", a_ref, a_pred), ("b", b_ref, b_pred), ("c", c_ref, c_pred)):
        _write(ref, f"case_{name}.nii.gz", r)
        _write(pred, f"case_{name}.nii.gz", p)
    return ref, pred


def _nan_equal(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_nan_equal(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(_nan_equal(a, b) for a, b in zip(x, y))
    if isinstance(x, float) and math.isnan(x):
        return isinstance(y, float) and math.isnan(y)
    return x == y


def test_discovered_labels_metrics_and_reports(tmp_path, capsys):
    ref, pred = _cases(tmp_path)
    summary = evaluate_folders(ref, pred, nsd_tolerance=2.9, num_processes=1)

    assert set(summary) >= {"metric_per_case", "mean", "foreground_mean"}
    assert [Path(c["reference_file"]).name for c in summary["metric_per_case"]] == [
        "case_a.nii.gz",
        "case_b.nii.gz",
        "case_c.nii.gz",
    ]
    a, b, c = (case["metrics"] for case in summary["metric_per_case"])
    assert list(a) == [1, 2]  # label 5 exists only in a prediction
    assert a[1]["HD95"] == pytest.approx(3.0)  # spacing follows the numpy axis order
    assert a[1]["NSD"] == 0.0 and a[1]["Dice"] == 0.0
    assert a[2]["Dice"] == 1.0 and a[2]["HD95"] == 0.0 and a[2]["NSD"] == 1.0
    assert b[1]["Dice"] == 1.0
    assert math.isnan(b[2]["Dice"]) and math.isnan(b[2]["HD95"]) and b[2]["TN"] == 4 * 5 * 8
    assert math.isnan(c[1]["Dice"]) and c[2]["Dice"] == 0.0 and math.isnan(c[2]["HD95"]) and c[2]["NSD"] == 0.0

    # means leave NaN cases out; the foreground mean averages the class means
    assert summary["mean"][1]["Dice"] == pytest.approx(0.5)  # cases a, b
    assert summary["mean"][1]["HD95"] == pytest.approx(1.5)  # (3 + 0) / 2
    assert summary["mean"][2]["Dice"] == pytest.approx(0.5)  # cases a, c
    assert summary["mean"][2]["HD95"] == pytest.approx(0.0)  # case a only
    assert summary["foreground_mean"]["HD95"] == pytest.approx(0.75)
    assert summary["nan_counts"] == {
        "1": {"Dice": 1, "IoU": 1, "HD95": 1, "NSD": 1},
        "2": {"Dice": 1, "IoU": 1, "HD95": 2, "NSD": 1},
    }

    # summary.json: nnU-Net's schema, readable by nnunetv2, NaN as JSON NaN
    text = (pred / "summary.json").read_text()
    assert "NaN" in text
    on_disk = json.loads(text)
    assert on_disk["nsd_tolerance_mm"] == {"1": 2.9, "2": 2.9}
    assert set(on_disk["metric_per_case"][0]["metrics"]) == {"1", "2"}
    assert set(on_disk["metric_per_case"][0]["metrics"]["1"]) == {
        "Dice",
        "IoU",
        "HD95",
        "NSD",
        "TP",
        "FP",
        "FN",
        "TN",
        "n_ref",
        "n_pred",
    }
    assert _nan_equal(load_summary_json(str(pred / "summary.json")), summary)

    # summary.csv: one row per case and class, the class means, the foreground mean
    with open(pred / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 + 2 + 1
    assert rows[0]["case"] == "case_a" and rows[0]["class"] == "1" and float(rows[0]["HD95"]) == pytest.approx(3.0)
    assert rows[3]["Dice"] == "nan"
    assert rows[-1]["case"] == "foreground_mean" and float(rows[-1]["HD95"]) == pytest.approx(0.75)

    with Image.open(pred / "summary_boxplot.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300

    table = capsys.readouterr().out
    assert "1/1/1/1" in table and "1/1/2/1" in table and "2.9 mm" in table
    assert not list(pred.glob(".*.tmp*"))  # atomic writes left no temporary file


def test_overlap_metrics_match_nnunetv2_compute_metrics(tmp_path):
    ref, pred = _cases(tmp_path)
    ours = evaluate_folders(ref, pred, num_processes=1, verbose=False)
    for case in ours["metric_per_case"]:
        theirs = compute_metrics(case["reference_file"], case["prediction_file"], SimpleITKIO(), [1, 2])
        for label in (1, 2):
            for m in ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_ref", "n_pred"):
                assert _nan_equal(float(case["metrics"][label][m]), float(theirs["metrics"][label][m])), (
                    case["reference_file"],
                    label,
                    m,
                )


def test_dataset_json_regions_names_ignore_and_tolerance_file(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    r = np.zeros((3, 6, 6), np.uint8)
    r[1, 1:3, 1:3] = 1
    r[1, 3:5, 1:3] = 2
    r[2, :, :] = 3  # ignore label
    p = r.copy()
    p[1, 3:5, 1:3] = 1  # all of label 2 predicted as 1: region (1, 2) still perfect
    p[2, 0, 0] = 1  # inside the ignore area: not counted
    _write(ref, "x.nrrd", r)
    _write(pred, "x.nrrd", p)
    dataset = {
        "labels": {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3},
        "regions_class_order": [1, 2],
        "file_ending": ".nrrd",
        "channel_names": {"0": "CT"},
        "numTraining": 1,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    (tmp_path / "tol.json").write_text(json.dumps({"whole": 0.5, "2": 1.0}))
    out = tmp_path / "eval"
    summary = evaluate_folders(
        ref, pred, out, dataset_json=tmp_path, nsd_tolerance=tmp_path / "tol.json", num_processes=1
    )
    metrics = summary["metric_per_case"][0]["metrics"]
    assert list(metrics) == [(1, 2), 2]
    assert metrics[(1, 2)]["Dice"] == 1.0 and metrics[(1, 2)]["FP"] == 0
    assert metrics[(1, 2)]["TN"] == r.size - 36 - 8
    assert metrics[2]["Dice"] == 0.0 and math.isnan(metrics[2]["HD95"])
    assert (out / "summary.json").is_file() and not (pred / "summary.json").exists()
    on_disk = json.loads((out / "summary.json").read_text())
    assert set(on_disk["mean"]) == {"(1, 2)", "2"}
    assert on_disk["nsd_tolerance_mm"] == {"(1, 2)": 0.5, "2": 1.0}
    table = capsys.readouterr().out
    assert "(1, 2) whole" in table and "2 core" in table and "0.5 mm" in table


def test_png_2d_cases(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    r = np.zeros((8, 10), np.uint8)
    r[2:5, 2:5] = 1
    p = np.zeros_like(r)
    p[2:5, 4:7] = 1  # shifted two pixels along x: 2 mm at 1 mm spacing
    Image.fromarray(r).save(ref / "img.png")
    Image.fromarray(p).save(pred / "img.png")
    m = evaluate_folders(ref, pred, num_processes=1, verbose=False)["metric_per_case"][0]["metrics"][1]
    assert m["Dice"] == pytest.approx(2 * 3 / 18)
    # 2D edges: all 8 border pixels of each square; 3 of 8 pred edges lie on ref edges,
    # the others are 1 or 2 mm away; the 95th percentile of [0,0,0,1,1,2,2,2] is 2 mm
    assert m["HD95"] == pytest.approx(2.0)


def test_missing_prediction_names_the_file(tmp_path):
    ref, pred = _cases(tmp_path)
    (pred / "case_b.nii.gz").unlink()
    with pytest.raises(UserInputError) as e:
        evaluate_folders(ref, pred, num_processes=1, verbose=False)
    assert "case_b.nii.gz" in str(e.value) and "1 of 3" in str(e.value)


def test_shape_mismatch_names_the_prediction(tmp_path):
    ref, pred = _cases(tmp_path)
    _write(pred, "case_c.nii.gz", np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(UserInputError) as e:
        evaluate_folders(ref, pred, num_processes=1, verbose=False)
    assert "shape" in e.value.what and e.value.where.endswith("pred/case_c.nii.gz")


def test_non_label_values_are_an_error(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref, "a.nii.gz", np.ones((2, 3, 4)))
    pred.mkdir()
    img = sitk.GetImageFromArray(np.full((2, 3, 4), 0.5, np.float32))
    img.SetSpacing(SITK_SPACING)
    sitk.WriteImage(img, str(pred / "a.nii.gz"))
    with pytest.raises(UserInputError, match="not whole numbers") as e:
        evaluate_folders(ref, pred, num_processes=1, verbose=False)
    assert e.value.where == str(pred / "a.nii.gz")


def test_spacing_mismatch_is_an_error(tmp_path):
    ref, pred = _cases(tmp_path)
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "case_a.nii.gz")))
    _write(pred, "case_a.nii.gz", arr, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(UserInputError, match="spacing"):
        evaluate_folders(ref, pred, num_processes=1, verbose=False)


def test_folder_errors(tmp_path):
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    with pytest.raises(UserInputError, match="no segmentation files"):
        evaluate_folders(empty, other, verbose=False)
    with pytest.raises(UserInputError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", other, verbose=False)
    _write(empty, "a.nii.gz", np.ones((2, 2, 2)))
    _write(empty, "b.nrrd", np.ones((2, 2, 2)))
    with pytest.raises(UserInputError, match="mixes file endings"):
        evaluate_folders(empty, other, verbose=False)
    (empty / "b.nrrd").unlink()
    with pytest.raises(UserInputError, match="no predictions"):
        evaluate_folders(empty, other, verbose=False)


def test_tolerance_errors(tmp_path):
    ref, pred = _cases(tmp_path)
    bad = tmp_path / "tol.json"
    bad.write_text('{"1": -1}')
    with pytest.raises(UserInputError, match=">= 0"):
        evaluate_folders(ref, pred, nsd_tolerance=bad, verbose=False)
    bad.write_text('{"liver": 1.0}')
    with pytest.raises(UserInputError, match="neither a label"):
        evaluate_folders(ref, pred, nsd_tolerance=bad, verbose=False)
    # class 1 needs a tolerance in case a (present on both sides); none is given
    with pytest.raises(UserInputError, match="no NSD tolerance for class 1"):
        evaluate_folders(ref, pred, nsd_tolerance={2: 1.0}, num_processes=1, verbose=False)
    summary = evaluate_folders(ref, pred, nsd_tolerance={"default": 3.0}, num_processes=1, verbose=False)
    assert summary["metric_per_case"][0]["metrics"][1]["NSD"] == 1.0
    # a CLI string: a number, else a file
    summary = evaluate_folders(ref, pred, nsd_tolerance="3", num_processes=1, verbose=False)
    assert summary["metric_per_case"][0]["metrics"][1]["NSD"] == 1.0
    with pytest.raises(UserInputError, match="file not found"):
        evaluate_folders(ref, pred, nsd_tolerance=str(tmp_path / "missing.json"), verbose=False)


@pytest.mark.slow
def test_worker_processes_give_the_same_summary(tmp_path):
    ref, pred = _cases(tmp_path)
    serial = evaluate_folders(ref, pred, tmp_path / "serial", num_processes=1, verbose=False)
    parallel = evaluate_folders(ref, pred, tmp_path / "parallel", num_processes=2, verbose=False)
    assert _nan_equal(serial, parallel)
