"""Cell and nucleus instances: the instance metric, instance <-> semantic conversion, seeded growth,
and the whole instance workflow through the CLI."""

from __future__ import annotations

import json
import math
import shutil
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
    assert main(["evaluate", "-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "--instances", "-np", "1"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    per_case = {Path(c["reference_file"]).name: c["metrics"] for c in summary["metric_per_case"]}
    assert per_case["a.png"]["F1"] == pytest.approx(0.8) and per_case["b.png"]["F1"] == 1.0
    assert summary["mean"]["F1"] == pytest.approx(0.9)
    assert summary["pooled"] == {
        "TP": 5,
        "FP": 0,
        "FN": 1,
        "precision": 1.0,
        "recall": pytest.approx(5 / 6),
        "F1": pytest.approx(10 / 11),
    }
    csv_lines = (tmp_path / "pred" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,") and "F1" in csv_lines[0].split(",")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["a", "b", "mean", "pooled"]
    # other geometry: one error line, exit 2
    _write_png(np.zeros((40, 41)), tmp_path / "pred" / "b.png")
    capsys.readouterr()
    assert main(["evaluate", "-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "--instances", "-np", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("error: prediction shape") and "b.png" in err


# ----------------------------------------------------------------------------- instances <-> semantic


def _touching_blocks() -> np.ndarray:
    """Five cells: a row of three touching squares, a disc touching the row, a lone cell."""
    inst = np.zeros((48, 48), np.int32)
    inst[4:14, 4:14] = 3
    inst[4:14, 14:24] = 8
    inst[4:14, 24:30] = 11
    yy, xx = np.mgrid[:48, :48]
    inst[(np.hypot(yy - 20, xx - 18) < 6) & (inst == 0)] = 20  # touches the squares from below
    inst[34:44, 30:44] = 5
    return inst


def test_instances_to_semantic_by_hand_and_width():
    from umamba_seg.instance_labels import instances_to_semantic

    inst = np.zeros((7, 9), int)
    inst[1:6, 1:4] = 1
    inst[1:6, 4:8] = 2
    sem = instances_to_semantic(inst)
    expected_row = [0, 2, 1, 2, 2, 1, 1, 2, 0]  # both sides of the seam are boundary
    assert sem[3].tolist() == expected_row
    assert sem[1, 1:8].tolist() == [2] * 7 and sem[0].tolist() == [0] * 9
    assert set(np.unique(sem)) == {0, 1, 2}
    wide = instances_to_semantic(inst, boundary_width=2)
    assert wide[3].tolist() == [0, 2, 2, 2, 2, 2, 2, 2, 0]
    with pytest.raises(ValueError):
        instances_to_semantic(inst, boundary_width=0)


def test_semantic_to_instances_round_trip():
    from umamba_seg.inference.instances import semantic_to_instances
    from umamba_seg.instance_labels import instances_to_semantic

    inst = _touching_blocks()
    back = semantic_to_instances(instances_to_semantic(inst))
    # the same partition: every original cell is exactly one recovered instance
    pairs = {(int(a), int(b)) for a, b in zip(inst.ravel(), back.ravel())}
    assert len(pairs) == 6 and len({a for a, _ in pairs}) == 6 and len({b for _, b in pairs}) == 6
    assert instance_metrics(inst, back)["mean_matched_IoU"] == 1.0
    # 3D: two touching boxes
    vol = np.zeros((10, 12, 20), np.int32)
    vol[2:8, 2:10, 2:10] = 4
    vol[2:8, 2:10, 10:18] = 9
    back3 = semantic_to_instances(instances_to_semantic(vol))
    assert instance_metrics(vol, back3)["AP"] == 1.0
    # without a boundary the two squares would be one seed; min_size drops specks
    sem = instances_to_semantic(inst)
    sem[0, 0] = 1
    assert semantic_to_instances(sem).max() == 6 and semantic_to_instances(sem, min_size=2).max() == 5


def test_seeds_grow_along_the_interior_probability():
    from umamba_seg.inference.instances import semantic_to_instances

    sem = np.zeros((1, 5, 9), np.uint8)  # 2D as nnU-Net holds it: (1, y, x)
    sem[0, 1:4, 1:8] = 2
    sem[0, 2, 2] = 1
    sem[0, 2, 6] = 1
    prob = np.zeros(sem.shape, np.float32)
    prob[0, :, :6] = 0.4  # the left seed's side looks more like interior up to column 5
    inst = semantic_to_instances(sem, prob)
    assert inst[0, 2, 5] == inst[0, 2, 2] != inst[0, 2, 6]
    inst = semantic_to_instances(sem)  # by distance: column 4 is as near to both, 5 is nearer the right
    assert inst[0, 2, 5] == inst[0, 2, 6]


def _to_semantic(inp: Path, out: Path, *options: str) -> int:
    """Exit code of ``instances-to-semantic -i inp -o out`` with ``options``."""
    return main(["instances-to-semantic", "-i", str(inp), "-o", str(out), *options])


def test_cli_instances_to_semantic_png_and_nifti(tmp_path):
    import SimpleITK as sitk

    from umamba_seg.instance_labels import instances_to_semantic

    inst = _touching_blocks()
    _write_png(inst, tmp_path / "inst2d" / "a.png")
    assert _to_semantic(tmp_path / "inst2d", tmp_path / "sem2d") == 0
    got = np.asarray(Image.open(tmp_path / "sem2d" / "a.png"))
    np.testing.assert_array_equal(got, instances_to_semantic(inst))
    assert not [p for p in (tmp_path / "sem2d").iterdir() if p.name.startswith(".")]  # no scratch left

    vol = np.zeros((6, 10, 12), np.uint16)
    vol[1:5, 2:8, 1:6] = 1000  # ids above 255
    vol[1:5, 2:8, 6:11] = 2
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, -2.0, 3.0))
    (tmp_path / "inst3d").mkdir()
    sitk.WriteImage(img, str(tmp_path / "inst3d" / "v.nii.gz"))
    assert _to_semantic(tmp_path / "inst3d", tmp_path / "sem3d", "--boundary-width", "2") == 0
    out = sitk.ReadImage(str(tmp_path / "sem3d" / "v.nii.gz"))
    assert out.GetSpacing() == pytest.approx((0.5, 0.7, 2.0)) and out.GetOrigin() == pytest.approx((1.0, -2.0, 3.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), instances_to_semantic(vol, 2))
    assert _to_semantic(tmp_path / "inst3d", tmp_path / "x", "--boundary-width", "0") == 2
    assert _to_semantic(tmp_path / "nothing", tmp_path / "x") == 2


def test_instance_maps_written_as_uint16_or_uint32(tmp_path):
    import SimpleITK as sitk

    from umamba_seg.label_files import read_label_map, reader_writer_for, write_instance_map

    vol = np.zeros((1, 4, 5), np.int64)
    vol[0, 1, 1] = 3
    img = sitk.GetImageFromArray(vol[0].astype(np.uint8))
    img.SetSpacing((0.3, 0.4))
    sitk.WriteImage(img, str(tmp_path / "ref.nii.gz"))
    rw = reader_writer_for(".nii.gz", tmp_path / "ref.nii.gz")
    _, props = read_label_map(rw, tmp_path / "ref.nii.gz")
    write_instance_map(rw, vol, tmp_path / "out" / "small.nii.gz", props)
    small = sitk.ReadImage(str(tmp_path / "out" / "small.nii.gz"))
    assert small.GetPixelID() == sitk.sitkUInt16 and small.GetSpacing() == pytest.approx((0.3, 0.4))
    vol[0, 2, 2] = 70000
    write_instance_map(rw, vol, tmp_path / "out" / "big.nii.gz", props)
    big = sitk.ReadImage(str(tmp_path / "out" / "big.nii.gz"))
    assert big.GetPixelID() == sitk.sitkUInt32 and sitk.GetArrayFromImage(big)[2, 2] == 70000


def test_predict_refuses_instances_without_interior_boundary_labels():
    from umamba_seg.errors import UserInputError
    from umamba_seg.inference.instances import check_instance_labels

    check_instance_labels({"labels": {"background": 0, "interior": 1, "boundary": 2}}, "dataset.json")
    with pytest.raises(UserInputError, match="interior 1, boundary 2"):
        check_instance_labels({"labels": {"background": 0, "instrument": 1}}, "dataset.json")


# ----------------------------------------------------------------------------- the whole workflow


@pytest.mark.slow
def test_instance_workflow_cli(raw_dataset_factory, workdir_factory, tmp_path):
    """Generated microscopy: instance maps -> semantic labels -> 2-iteration CNN ->
    predict --instances (fold ensemble, two parts, --continue) -> evaluate --instances."""
    import tifffile

    from tests.pipeline_fixtures import TINY_SCHEDULE, run_cli

    raw = raw_dataset_factory("microscopy2d", num_train=5, num_test=2)
    assert sorted(p.name for p in (raw / "instancesTs").iterdir()) == ["nuclei_test_000.tif", "nuclei_test_001.tif"]
    workdir = workdir_factory(raw)
    ds = workdir / "raw" / raw.name
    # the labels are exactly what instances-to-semantic makes of the instance maps
    run_cli("instances-to-semantic", "-i", ds / "instancesTr", "-o", tmp_path / "labels")
    for f in (ds / "labelsTr").iterdir():
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels" / f.name), tifffile.imread(f))
    ds_id = raw.name[7:10]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", "cnn", "-c", "2d", "--workdir", workdir)
    run_cli("train", "-d", ds_id, "-c", "2d", "-f", "0", "--workdir", workdir, *TINY_SCHEDULE)
    # a second fold for the fold ensemble, without training it: the same weights under fold_1
    fold0 = next((workdir / "results" / raw.name).glob("*__2d")) / "fold_0"
    (fold0.parent / "fold_1").mkdir()
    shutil.copy(fold0 / "checkpoint_final.pth", fold0.parent / "fold_1" / "checkpoint_final.pth")
    out = tmp_path / "pred"
    predict = [
        "predict",
        "-i",
        ds / "imagesTs",
        "-o",
        out,
        "-d",
        ds_id,
        "-c",
        "2d",
        "-f",
        "0",
        "1",
        "--no-tta",
        "--device",
        "cpu",
        "--instances",
        "--min-size",
        "3",
        "--workdir",
        workdir,
        "--num-parts",
        "2",
    ]
    run_cli(*predict, "--part-id", "0")
    assert [p.name for p in (out / "instances").iterdir()] == ["nuclei_test_000.tif"]
    run_cli(*predict, "--part-id", "1")
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "instances").iterdir()}
    run_cli(*predict, "--part-id", "1", "--continue")  # nothing left to do
    assert {p.name: p.stat().st_mtime_ns for p in (out / "instances").iterdir()} == stamps
    for case in ("nuclei_test_000", "nuclei_test_001"):
        inst = tifffile.imread(out / "instances" / f"{case}.tif")
        assert inst.dtype == np.uint16 and inst.shape == tifffile.imread(ds / "imagesTs" / f"{case}_0000.tif").shape
        sem = tifffile.imread(out / f"{case}.tif")
        assert not (inst[sem == 0]).any()  # instances only where the semantic map has cells
    run_cli(
        "evaluate", "-r", ds / "instancesTs", "-p", out / "instances", "--instances", "--exclude-border", "-np", "1"
    )
    summary = json.loads((out / "instances" / "summary.json").read_text())
    assert summary["exclude_border"] is True and len(summary["metric_per_case"]) == 2
    assert any("F1" in k for k in summary["mean"]) and 0.0 <= summary["pooled"]["F1"] <= 1.0


def test_demo_cells_shows_f1_next_to_dice(tmp_path, capsys):
    from umamba_seg import demo

    calls: list[list[str]] = []

    def fake_cli(argv):
        calls.append(list(argv))
        if argv[0] == "evaluate":
            pred = Path(argv[argv.index("-p") + 1])
            pred.mkdir(parents=True, exist_ok=True)
            if "--instances" in argv:
                summary = {"mean": {"F1": 0.625}, "pooled": {}, "metric_per_case": []}
            else:
                summary = {"foreground_mean": {"Dice": 0.75}, "mean": {"1": {"Dice": 0.8}, "2": {"Dice": 0.7}}}
            (pred / "summary.json").write_text(json.dumps(summary))
        return 0

    out = demo.run_demo(tmp_path, fake_cli, archs=["cnn"], fast=True, cells=True)
    assert [c[0] for c in calls] == ["make-dataset", "plan-and-preprocess", "train", "predict", "evaluate", "evaluate"]
    assert calls[0][calls[0].index("--kind") + 1] == "microscopy2d"
    assert "--instances" in calls[3]
    inst_eval = calls[5]
    assert "--instances" in inst_eval and inst_eval[inst_eval.index("-r") + 1].endswith("instancesTs")
    assert inst_eval[inst_eval.index("-p") + 1] == calls[3][calls[3].index("-o") + 1] + "/instances"
    assert out["results"][0]["f1"] == 0.625 and out["results"][0]["dice"]["mean"] == 0.75
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("dataset"))
    assert header.index("mean Dice") < header.index("F1@0.5")
    assert "0.750   0.625" in printed and "interior 0.800, boundary 0.700" in printed


# ----------------------------------------------------------------------------- converters write instance maps


def test_dsb2018_and_neurips_converters_write_instances_and_labels(tmp_path):
    import tifffile

    from umamba_seg.convert import dsb2018, neurips_cells
    from umamba_seg.instance_labels import instances_to_semantic

    inst = _touching_blocks()
    src = tmp_path / "dsb"
    rng = np.random.default_rng(0)
    for stage, case, with_masks in (
        ("stage1_train", "a1", True),
        ("stage1_train", "b2", True),
        ("stage1_test", "c3", False),
    ):
        (src / stage / case / "images").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (48, 48, 4), dtype=np.uint8)).save(
            src / stage / case / "images" / f"{case}.png"
        )
        if with_masks:
            (src / stage / case / "masks").mkdir()
            for k in np.unique(inst[inst > 0]):
                Image.fromarray(((inst == k) * 255).astype(np.uint8)).save(
                    src / stage / case / "masks" / f"m{k:03d}.png"
                )
    out = dsb2018.convert(src, tmp_path / "raw")
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "interior": 1, "boundary": 2}
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["c3_0000.png"]
    got = np.asarray(Image.open(out / "instancesTr" / "a1.png"))
    assert got.dtype == np.uint16 and instance_metrics(inst, got)["AP"] == 1.0  # same cells, ids 1..n
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labelsTr" / "a1.png")), instances_to_semantic(inst))
    assert np.asarray(Image.open(out / "imagesTr" / "b2_0000.png")).shape == (48, 48, 3)

    cells = tmp_path / "cells" / "Training-labeled"
    (cells / "images").mkdir(parents=True)
    (cells / "labels").mkdir()
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(cells / "images" / "cell_00001.png")
    tifffile.imwrite(cells / "labels" / "cell_00001_label.tiff", (inst * 1000).astype(np.uint32))  # large ids
    out = neurips_cells.convert(tmp_path / "cells", tmp_path / "raw", 703)
    got = np.asarray(Image.open(out / "instancesTr" / "cell_00001.png"))
    assert got.max() == 5 and instance_metrics(inst, got)["AP"] == 1.0
