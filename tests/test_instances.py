"""Cell and nucleus instances: the instance metric, instance <-> semantic conversion, seeded growth,
and the whole instance workflow through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from umamba_seg.cli import main
from umamba_seg.evaluation.instance_metrics import AP_THRESHOLDS, instance_metrics, match, remove_border_instances


def _canvas(shape=(40, 40)) -> np.ndarray:
    return np.zeros(shape, np.int32)


# ----------------------------------------------------------------------------- metric, known answers

def test_touching_cells_predicted_exactly_score_one():
    ref = _canvas()
    ref[5:15, 5:15] = 7  # ids need not be consecutive
    ref[5:15, 15:25] = 300  # touches cell 7
    m = instance_metrics(ref, ref.copy())
    assert (m["TP"], m["FP"], m["FN"]) == (2, 0, 0)
    assert m["F1"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["AP"] == 1.0 and m["mean_matched_IoU"] == 1.0


def test_touching_cells_merged_into_one_prediction():
    ref = _canvas()
    ref[5:15, 5:10] = 1
    ref[5:15, 10:15] = 2
    pred = _canvas()
    pred[5:15, 5:15] = 1  # the blob: IoU 0.5 with each true cell
    m = instance_metrics(ref, pred, iou_threshold=0.5)
    assert (m["TP"], m["FP"], m["FN"]) == (1, 0, 1)
    assert m["F1"] == pytest.approx(2 / 3)
    assert m["mean_matched_IoU"] == pytest.approx(0.5)
    assert m["AP@0.50"] == pytest.approx(0.5) and m["AP@0.55"] == 0.0
    assert m["AP"] == pytest.approx(0.5 / len(AP_THRESHOLDS))
    # above 0.5 the blob matches neither cell
    m = instance_metrics(ref, pred, iou_threshold=0.6)
    assert (m["TP"], m["FP"], m["FN"]) == (0, 1, 2) and m["F1"] == 0.0


def test_split_cell():
    ref = _canvas()
    ref[10:20, 10:20] = 1  # 100 pixels
    pred = _canvas()
    pred[10:20, 10:16] = 4  # IoU 0.6
    pred[10:20, 16:20] = 9  # IoU 0.4
    m = instance_metrics(ref, pred)
    assert (m["TP"], m["FP"], m["FN"]) == (1, 1, 0)
    assert m["precision"] == 0.5 and m["recall"] == 1.0 and m["F1"] == pytest.approx(2 / 3)
    assert m["mean_matched_IoU"] == pytest.approx(0.6)
    # matched at 0.50, 0.55, 0.60 (TP/(TP+FP+FN) = 1/2), at no higher threshold
    assert [m[f"AP@{t:.2f}"] for t in AP_THRESHOLDS] == pytest.approx([0.5] * 3 + [0.0] * 7)
    assert m["AP"] == pytest.approx(0.15)


def test_empty_prediction_and_empty_reference():
    ref = _canvas()
    ref[2:8, 2:8] = 1
    ref[20:28, 20:28] = 2
    ref[30:35, 5:10] = 3
    m = instance_metrics(ref, _canvas())
    assert (m["TP"], m["FP"], m["FN"]) == (0, 0, 3)
    assert m["F1"] == 0.0 and m["recall"] == 0.0 and m["AP"] == 0.0
    assert math.isnan(m["precision"]) and math.isnan(m["mean_matched_IoU"])
    m = instance_metrics(_canvas(), ref)
    assert (m["TP"], m["FP"], m["FN"]) == (0, 3, 0)
    assert m["F1"] == 0.0 and m["precision"] == 0.0 and m["AP"] == 0.0 and math.isnan(m["recall"])
    m = instance_metrics(_canvas(), _canvas())
    assert (m["TP"], m["FP"], m["FN"]) == (0, 0, 0) and math.isnan(m["F1"]) and math.isnan(m["AP"])


def test_partial_overlaps_ap_and_3d():
    ref = np.zeros((6, 20, 20), np.uint16)
    ref[1:5, 2:12, 2:12] = 1  # 400 voxels
    pred = np.zeros_like(ref)
    pred[1:5, 2:12, 4:12] = 1  # 320 of 400: IoU 0.8
    m = instance_metrics(ref, pred)
    assert m["TP"] == 1 and m["mean_matched_IoU"] == pytest.approx(0.8)
    assert m["AP"] == pytest.approx(sum(t <= 0.8 + 1e-9 for t in AP_THRESHOLDS) / len(AP_THRESHOLDS))


def test_matching_maximises_the_number_of_pairs():
    # greedy by largest IoU would pair reference 0 with prediction 0 and leave reference 1 unmatched
    iou = np.array([[0.6, 0.35], [0.35, 0.0]])
    rows, cols = match(iou, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = match(iou, 0.5)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]


def test_exclude_border_drops_edge_cells_on_both_sides():
    ref = _canvas()
    ref[0:6, 10:16] = 1  # touches the top edge
    ref[20:26, 20:26] = 2
    ref[2:6, 30:36] = 3  # starts at row 2: just outside the 2-pixel band
    pred = _canvas()
    pred[20:26, 20:26] = 5  # the border cells are missed
    kept = remove_border_instances(ref)
    assert set(np.unique(kept)) == {0, 2, 3}
    m = instance_metrics(ref, pred, exclude_border=True)
    assert (m["TP"], m["FP"], m["FN"]) == (1, 0, 1)
    ref[1:6, 30:36] = 3  # now reaches row 1, inside the 2-pixel band
    m = instance_metrics(ref, pred, exclude_border=True)
    assert (m["TP"], m["FP"], m["FN"]) == (1, 0, 0) and m["F1"] == 1.0
    # a 2D image stored as (1, H, W): the length-1 axis has no edge
    m = instance_metrics(ref[None], pred[None], exclude_border=True)
    assert (m["TP"], m["FN"]) == (1, 0)


# ----------------------------------------------------------------------------- evaluate --instances

def _write_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_cli_evaluate_instances_writes_summary_and_refuses_other_geometry(tmp_path, capsys):
    ref = _canvas()
    ref[5:15, 5:10] = 1
    ref[5:15, 10:15] = 2
    ref[25:35, 25:35] = 3
    pred = _canvas()
    pred[5:15, 5:15] = 1  # merged
    pred[25:35, 25:35] = 2
    _write_png(ref, tmp_path / "ref" / "a.png")
    _write_png(pred, tmp_path / "pred" / "a.png")
    _write_png(ref, tmp_path / "ref" / "b.png")
    _write_png(ref, tmp_path / "pred" / "b.png")
    assert main(["evaluate", "-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "--instances",
                 "-np", "1"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    per_case = {Path(c["reference_file"]).name: c["metrics"] for c in summary["metric_per_case"]}
    assert per_case["a.png"]["F1"] == pytest.approx(0.8) and per_case["b.png"]["F1"] == 1.0
    assert summary["mean"]["F1"] == pytest.approx(0.9)
    assert summary["pooled"] == {"TP": 5, "FP": 0, "FN": 1, "precision": 1.0, "recall": pytest.approx(5 / 6),
                                 "F1": pytest.approx(10 / 11)}
    csv_lines = (tmp_path / "pred" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,") and "F1" in csv_lines[0].split(",")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["a", "b", "mean", "pooled"]
    # other geometry: one error line, exit 2
    _write_png(np.zeros((40, 41)), tmp_path / "pred" / "b.png")
    capsys.readouterr()
    assert main(["evaluate", "-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "--instances",
                 "-np", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: prediction shape") and "b.png" in err
