"""Dataset converters (umamba_seg.convert): each runs on a small fake copy of the download layout,
and its output passes nnunetv2's own integrity check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from umamba_seg.convert import brats2023, common, dsb2018, endovis2017, isic2018, neurips_cells
from umamba_seg.errors import UserInputError


class _InlinePool:
    """Stands in for the spawn pool of nnunetv2's integrity check: same checks, no worker start-up."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def starmap(self, fn, iterable):
        return [fn(*args) for args in iterable]


def _verify(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnunetv2's integrity check (raises on any problem), its checks run in this process.

    One test (ISIC) runs it unpatched, through the converters' --verify path."""
    import multiprocessing
    from types import SimpleNamespace

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    with monkeypatch.context() as m:
        m.setattr(multiprocessing, "get_context", lambda method=None: SimpleNamespace(Pool=_InlinePool))
        verify_dataset_integrity(str(folder), num_processes=1)


# ---- BraTS ------------------------------------------------------------------------------
SHAPE_3D = (6, 7, 8)  # z, y, x


def _nifti(arr: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-5.0, 3.0, 7.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def _tumour(values=(1, 2, 3)) -> np.ndarray:
    seg = np.zeros(SHAPE_3D, np.uint8)
    seg[1:5, 1:6, 1:7] = values[1]  # edema around
    seg[2:4, 2:5, 2:5] = values[0]  # necrotic core
    seg[2:4, 3:4, 5:6] = values[2]  # enhancing
    return seg


def _brats_case(root: Path, case: str, sep: str, sequences, seg: np.ndarray | None, rng) -> None:
    for i, s in enumerate(sequences):
        _nifti((rng.random(SHAPE_3D) * 100 + i).astype(np.float32), root / case / f"{case}{sep}{s}.nii.gz")
    if seg is not None:
        _nifti(seg, root / case / f"{case}{sep}seg.nii.gz")


@pytest.fixture()
def brats_src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "brats_download"
    train = src / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    seq23 = ("t1n", "t1c", "t2w", "t2f")
    _brats_case(train, "BraTS-GLI-00000-000", "-", seq23, _tumour(), rng)
    _brats_case(train, "BraTS-GLI-00002-000", "-", seq23, _tumour(), rng)
    _brats_case(
        src / "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData", "BraTS-GLI-00001-000", "-", seq23, None, rng
    )
    # an older, 2021-named case whose enhancing tumour is label 4
    _brats_case(
        src / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData",
        "BraTS2021_00005",
        "_",
        ("t1", "t1ce", "t2", "flair"),
        _tumour((1, 2, 4)),
        rng,
    )
    return src


def test_brats_converts_channels_labels_and_regions(
    brats_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = brats2023.convert(brats_src, tmp_path / "raw", 706)
    assert out == tmp_path / "raw" / "Dataset706_BraTS2023"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 3
    assert ds["file_ending"] == ".nii.gz"
    assert ds["channel_names"] == {"0": "T1", "1": "T1C", "2": "T2W", "3": "T2F"}
    assert ds["labels"]["whole tumor"] == [1, 2, 3] and ds["labels"]["tumor core"] == [1, 3]
    assert ds["regions_class_order"] == [2, 1, 3]
    # four channels per case, bytes copied unchanged, in the documented order
    case_dir = brats_src / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / "BraTS-GLI-00000-000"
    for ch, seq in enumerate(("t1n", "t1c", "t2w", "t2f")):
        dst = out / "imagesTr" / f"BraTS-GLI-00000-000_{ch:04d}.nii.gz"
        assert dst.read_bytes() == (case_dir / f"BraTS-GLI-00000-000-{seq}.nii.gz").read_bytes()
    # validation case without seg -> imagesTs only
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        f"BraTS-GLI-00001-000_{c:04d}.nii.gz" for c in range(4)
    ]
    assert not (out / "labelsTr" / "BraTS-GLI-00001-000.nii.gz").exists()
    # 2023 labels kept, 2021's 4 -> 3, geometry kept
    lab23 = sitk.ReadImage(str(out / "labelsTr" / "BraTS-GLI-00000-000.nii.gz"))
    lab21 = sitk.ReadImage(str(out / "labelsTr" / "BraTS2021_00005.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab23), _tumour())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab21), _tumour())
    assert lab21.GetOrigin() == (-5.0, 3.0, 7.0)
    np.testing.assert_array_equal(brats2023.to_brats2021_labels(_tumour()), _tumour((1, 2, 4)))
    _verify(out, monkeypatch)


def test_brats_regions_decode_back_to_2023_labels(brats_src: Path, tmp_path: Path) -> None:
    """nnU-Net's region -> label decoding with our regions_class_order returns the BraTS 2023 labels."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    out = brats2023.convert(brats_src, tmp_path / "raw", 706)
    ds = json.loads((out / "dataset.json").read_text())
    lm = LabelManager(ds["labels"], ds["regions_class_order"])
    seg = _tumour()
    regions = np.stack([np.isin(seg, r) for r in lm.all_regions]).astype(np.float32)
    decoded = lm.convert_probabilities_to_segmentation(regions)
    np.testing.assert_array_equal(np.asarray(decoded), seg)


def test_brats_plain_labels_option(brats_src: Path, tmp_path: Path) -> None:
    out = brats2023.convert(brats_src, tmp_path / "raw", 707, regions=False)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}
    assert "regions_class_order" not in ds


def test_brats_missing_sequence_and_bad_labels_are_user_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    _brats_case(src, "BraTS-GLI-00003-000", "-", ("t1n", "t1c", "t2w"), _tumour(), rng)
    with pytest.raises(UserInputError, match="lacks its t2f sequence"):
        brats2023.convert(src, tmp_path / "raw", 706)
    src2 = tmp_path / "src2"
    _brats_case(src2, "BraTS-GLI-00004-000", "-", ("t1n", "t1c", "t2w", "t2f"), _tumour((1, 2, 5)), rng)
    with pytest.raises(UserInputError, match=r"values \[5\]") as e:
        brats2023.convert(src2, tmp_path / "raw", 706)
    assert "BraTS-GLI-00004-000-seg.nii.gz" in e.value.line()
    (tmp_path / "empty").mkdir()
    src3 = tmp_path / "src3"
    _brats_case(
        src3,
        "BraTS-GLI-00005-000",
        "-",
        ("t1n", "t1c", "t2w", "t2f"),
        _tumour().astype(np.float32) * np.float32(0.5),
        rng,
    )  # 0.5, 1.0, 1.5: not BraTS labels
    with pytest.raises(UserInputError, match=r"values \[0\.5, 1\.5\]"):
        brats2023.convert(src3, tmp_path / "raw3", 706)
    with pytest.raises(UserInputError, match="no BraTS case folders"):
        brats2023.convert(tmp_path / "empty", tmp_path / "raw2", 706)


# ---- ISIC -------------------------------------------------------------------------------
def _isic_pair(img_dir: Path, gt_dir: Path | None, case: str, hw, rng) -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(img_dir / f"{case}.jpg", quality=90)
    if gt_dir is not None:
        gt_dir.mkdir(parents=True, exist_ok=True)
        mask = np.zeros(hw, np.uint8)
        mask[hw[0] // 4 : hw[0] // 2, hw[1] // 3 : hw[1] - 2] = 255
        Image.fromarray(mask).save(gt_dir / f"{case}_segmentation.png")


@pytest.fixture()
def isic_src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    src = tmp_path / "isic_download"
    tr_in, tr_gt = src / "ISIC2018_Task1-2_Training_Input", src / "ISIC2018_Task1_Training_GroundTruth"
    _isic_pair(tr_in, tr_gt, "ISIC_0000000", (20, 28), rng)
    _isic_pair(tr_in, tr_gt, "ISIC_0000001", (24, 18), rng)
    _isic_pair(tr_in, tr_gt, "ISIC_0000003", (16, 16), rng)
    (tr_in / "ATTRIBUTION.txt").write_text("fake")
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(tr_in / "ISIC_0000000_superpixels.png")
    _isic_pair(
        src / "ISIC2018_Task1-2_Validation_Input",
        src / "ISIC2018_Task1_Validation_GroundTruth",
        "ISIC_0000010",
        (22, 30),
        rng,
    )
    _isic_pair(src / "ISIC2018_Task1-2_Test_Input", None, "ISIC_0000020", (22, 30), rng)
    return src


def test_isic_converts_jpeg_to_png_and_masks_to_0_1(isic_src: Path, tmp_path: Path) -> None:
    out = isic2018.convert(isic_src, tmp_path / "raw", 705)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".png"
    assert ds["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert ds["labels"] == {"background": 0, "lesion": 1}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "ISIC_0000000_0000.png",
        "ISIC_0000001_0000.png",
        "ISIC_0000003_0000.png",
    ]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["ISIC_0000010_0000.png", "ISIC_0000020_0000.png"]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == ["ISIC_0000010.png"]
    img = np.asarray(Image.open(out / "imagesTr" / "ISIC_0000001_0000.png"))
    jpg = np.asarray(Image.open(isic_src / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000001.jpg").convert("RGB"))
    np.testing.assert_array_equal(img, jpg)  # decoded once, then stored losslessly
    mask = np.asarray(Image.open(out / "labelsTr" / "ISIC_0000001.png"))
    assert mask.shape == (24, 18) and set(np.unique(mask).tolist()) == {0, 1}
    assert mask[6:12, 6:16].all() and mask[:6].sum() == 0
    common.verify_raw_dataset(out)  # the CLI's --verify: nnunetv2's check, failures as UserInputError
    ds["numTraining"] = 4
    (out / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(UserInputError, match="integrity check failed: Did not find the expected number"):
        common.verify_raw_dataset(out)


def test_isic_vmunet_split_layout(tmp_path: Path) -> None:
    """VM-UNet's 7:3 release: train|val/images/*.png with masks of the same name under masks/."""
    rng = np.random.default_rng(4)
    src = tmp_path / "isic18"
    for split, case in (("train", "ISIC_0000005"), ("train", "ISIC_0000006"), ("val", "ISIC_0000007")):
        (src / split / "images").mkdir(parents=True, exist_ok=True)
        (src / split / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(src / split / "images" / f"{case}.png")
        mask = np.zeros((12, 16), np.uint8)
        mask[3:9, 4:12] = 255
        Image.fromarray(mask).save(src / split / "masks" / f"{case}.png")
    out = isic2018.convert(src, tmp_path / "raw", 705)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["ISIC_0000005.png", "ISIC_0000006.png"]
    assert [p.name for p in (out / "labelsTs").iterdir()] == ["ISIC_0000007.png"]
    img = np.asarray(Image.open(out / "imagesTr" / "ISIC_0000005_0000.png"))
    np.testing.assert_array_equal(img, np.asarray(Image.open(src / "train" / "images" / "ISIC_0000005.png")))
    assert np.asarray(Image.open(out / "labelsTs" / "ISIC_0000007.png")).sum() == 48


def test_isic_max_side_shrinks_image_and_mask_together(isic_src: Path, tmp_path: Path) -> None:
    out = isic2018.convert(isic_src, tmp_path / "raw", 705, max_side=14)
    img = np.asarray(Image.open(out / "imagesTr" / "ISIC_0000000_0000.png"))
    mask = np.asarray(Image.open(out / "labelsTr" / "ISIC_0000000.png"))
    assert img.shape == (10, 14, 3) and mask.shape == (10, 14)
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_isic_mask_size_mismatch_is_a_user_error(isic_src: Path, tmp_path: Path) -> None:
    bad = isic_src / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000003_segmentation.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(bad)
    with pytest.raises(UserInputError, match="mask is 5x5") as e:
        isic2018.convert(isic_src, tmp_path / "raw", 705)
    assert str(bad) in e.value.line()


# ---- EndoVis 2017 ---------------------------------------------------------------------
def _endovis_sequence(
    root: Path, n: int, instruments: dict[str, tuple[slice, slice]], frames: int, rng, rgb_masks: bool = False
) -> None:
    seq = root / f"instrument_dataset_{n}"
    (seq / "left_frames").mkdir(parents=True)
    for f in range(frames):
        Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(
            seq / "left_frames" / f"frame{f:03d}.png"
        )
        for folder, (rows, cols) in instruments.items():
            (seq / "ground_truth" / folder).mkdir(parents=True, exist_ok=True)
            m = np.zeros((10, 14), np.uint8)
            m[rows, cols] = 10
            m[rows.start, cols] = 30  # another part value: still the same instrument
            if rgb_masks:
                m = np.repeat(m[..., None], 3, axis=-1)
            Image.fromarray(m).save(seq / "ground_truth" / folder / f"frame{f:03d}.png")


@pytest.fixture()
def endovis_src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    src = tmp_path / "endovis17"
    _endovis_sequence(
        src / "instrument_1_4_training",
        1,
        {
            "Left_Prograsp_Forceps_labels": (slice(1, 4), slice(1, 5)),
            "Maryland_Bipolar_Forceps_labels": (slice(5, 8), slice(2, 6)),
            "Other_labels": (slice(2, 6), slice(9, 13)),
        },
        2,
        rng,
    )
    _endovis_sequence(
        src / "instrument_5_8_training",
        7,
        {
            "Right_Large_Needle_Driver_labels": (slice(0, 3), slice(0, 4)),
            "Monopolar_Curved_Scissors_labels": (slice(6, 9), slice(6, 12)),
        },
        2,
        rng,
        rgb_masks=True,
    )
    _endovis_sequence(src / "instrument_2017_test", 9, {}, 1, rng)
    return src


def test_endovis_instrument_types_from_folder_names() -> None:
    names = {
        "Maryland_Bipolar_Forceps_labels": 1,
        "Left_Prograsp_Forceps_labels": 2,
        "Large_Needle_Driver_Right_labels": 3,
        "Vessel_Sealer_labels": 4,
        "Grasping_Retractor_labels": 5,
        "Monopolar_Curved_Scissors_labels": 6,
        "Other_labels": 7,
        "Bipolar_Forceps_labels": 1,
    }
    assert {n: endovis2017.instrument_type(n) for n in names} == names
    with pytest.raises(UserInputError, match="unknown instrument folder"):
        endovis2017.instrument_type("Suction_labels")
    frame = np.arange(1080 * 1920, dtype=np.int64).reshape(1080, 1920)
    cropped = endovis2017.crop_frame(frame)
    assert cropped.shape == (1024, 1280) and cropped[0, 0] == 28 * 1920 + 320
    assert endovis2017.crop_frame(frame, crop=False).shape == (1080, 1920)
    assert endovis2017.crop_frame(frame[:10, :14]).shape == (10, 14)


def test_endovis_converts_frames_and_type_maps(
    endovis_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = endovis2017.convert(endovis_src, tmp_path / "raw", 704)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 4 and ds["labels"]["Other instrument"] == 7
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "seq1_frame000.png",
        "seq1_frame001.png",
        "seq7_frame000.png",
        "seq7_frame001.png",
    ]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["test_seq9_frame000_0000.png"]
    lab = np.asarray(Image.open(out / "labelsTr" / "seq1_frame001.png"))
    assert (lab[1:4, 1:5] == 2).all() and (lab[5:8, 2:6] == 1).all() and (lab[2:6, 9:13] == 7).all()
    assert (lab > 0).sum() == 12 + 12 + 16
    lab7 = np.asarray(Image.open(out / "labelsTr" / "seq7_frame000.png"))  # RGB-stored masks
    assert (lab7[0:3, 0:4] == 3).all() and (lab7[6:9, 6:12] == 6).all() and (lab7 > 0).sum() == 12 + 18
    frame = np.asarray(
        Image.open(endovis_src / "instrument_1_4_training/instrument_dataset_1/left_frames/frame001.png")
    )
    np.testing.assert_array_equal(np.asarray(Image.open(out / "imagesTr" / "seq1_frame001_0000.png")), frame)
    _verify(out, monkeypatch)


def test_endovis_missing_mask_frame_is_a_user_error(endovis_src: Path, tmp_path: Path) -> None:
    gone = endovis_src / "instrument_1_4_training/instrument_dataset_1/ground_truth/Other_labels/frame001.png"
    gone.unlink()
    with pytest.raises(UserInputError, match="Other_labels lacks frame001.png"):
        endovis2017.convert(endovis_src, tmp_path / "raw", 704)


# ---- NeurIPS cells ----------------------------------------------------------------------
def _touching_cells() -> np.ndarray:
    inst = np.zeros((12, 14), np.uint16)
    inst[2:7, 2:7] = 1
    inst[2:7, 7:12] = 2  # touches cell 1
    inst[8:11, 3:6] = 7
    return inst


@pytest.fixture()
def cells_src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    src = tmp_path / "cells_download"
    tr = src / "Training-labeled"
    (tr / "images").mkdir(parents=True)
    (tr / "labels").mkdir(parents=True)
    # 8-bit RGB PNG, 16-bit grey TIFF, channels-first 3-channel TIFF, grey BMP
    Image.fromarray(rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)).save(tr / "images" / "cell_00001.png")
    tifffile.imwrite(tr / "images" / "cell_00002.tiff", rng.integers(0, 4000, (12, 14), dtype=np.uint16))
    tifffile.imwrite(
        tr / "images" / "cell_00003.tif", rng.integers(1, 60000, (3, 12, 14), dtype=np.uint16), photometric="minisblack"
    )
    Image.fromarray(rng.integers(0, 255, (12, 14), dtype=np.uint8)).save(tr / "images" / "cell_00004.bmp")
    for i in range(1, 5):
        tifffile.imwrite(tr / "labels" / f"cell_0000{i}_label.tiff", _touching_cells())
    unl = src / "Training-unlabeled" / "images"
    unl.mkdir(parents=True)
    Image.fromarray(np.zeros((12, 14), np.uint8)).save(unl / "unlabeled_cell_00001.png")
    tun = src / "Tuning"
    (tun / "images").mkdir(parents=True)
    (tun / "labels").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (12, 14, 3), dtype=np.uint8)).save(tun / "images" / "cell_00101.png")
    tifffile.imwrite(tun / "labels" / "cell_00101_label.tiff", _touching_cells())
    return src


def test_instances_to_interior_boundary_by_hand() -> None:
    inst = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 2, 2], [0, 1, 1, 2, 2], [0, 1, 1, 2, 2], [0, 0, 0, 0, 0]])
    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2],
            [0, 2, 2, 2, 1],  # no 4-neighbour beyond the image edge: interior
            [0, 2, 2, 2, 2],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(neurips_cells.instances_to_labels(inst), expected)
    big = np.zeros((7, 7), int)
    big[1:6, 1:6] = 4
    lab = neurips_cells.instances_to_labels(big)
    assert (lab[2:5, 2:5] == 1).all() and lab[1, 1] == 2 and lab[0, 0] == 0 and (lab == 2).sum() == 16
    np.testing.assert_array_equal(neurips_cells.instances_to_labels(big, "foreground"), (big > 0).astype(np.uint8))


def test_interior_boundary_round_trips_to_instances() -> None:
    from umamba_seg.inference.instances import seed_regions, semantic_to_instances

    inst = _touching_cells()
    back = semantic_to_instances(neurips_cells.instances_to_labels(inst))
    assert len(np.unique(back[back > 0])) == 3
    for k in (1, 2, 7):  # each original cell maps to exactly one recovered instance, and back
        values = np.unique(back[inst == k])
        assert len(values) == 1 and values[0] > 0
        assert (inst[back == values[0]] == k).all()
    np.testing.assert_array_equal(back > 0, inst > 0)  # grown over the boundary: full cell extent
    interior_only, n = seed_regions(neurips_cells.instances_to_labels(inst))
    assert n == 3 and (interior_only > 0).sum() == (neurips_cells.instances_to_labels(inst) == 1).sum()
    assert semantic_to_instances(np.zeros((4, 4), np.uint8)).max() == 0


def test_cells_convert_formats_and_pass_integrity(
    cells_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = neurips_cells.convert(cells_src, tmp_path / "raw", 703)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 4
    assert ds["labels"] == {"background": 0, "interior": 1, "boundary": 2}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"cell_0000{i}_0000.png" for i in range(1, 5)]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["cell_00101_0000.png"]  # unlabeled skipped
    assert [p.name for p in (out / "labelsTs").iterdir()] == ["cell_00101.png"]
    for i in range(1, 5):
        img = np.asarray(Image.open(out / "imagesTr" / f"cell_0000{i}_0000.png"))
        assert img.shape == (12, 14, 3) and img.dtype == np.uint8
        lab = np.asarray(Image.open(out / "labelsTr" / f"cell_0000{i}.png"))
        np.testing.assert_array_equal(lab, neurips_cells.instances_to_labels(_touching_cells()))
    grey16 = np.asarray(Image.open(out / "imagesTr" / "cell_00002_0000.png"))
    assert (grey16[..., 0] == grey16[..., 2]).all() and grey16.max() == 255 and grey16.min() == 0
    rgb8 = np.asarray(Image.open(out / "imagesTr" / "cell_00001_0000.png"))
    np.testing.assert_array_equal(rgb8, np.asarray(Image.open(cells_src / "Training-labeled/images/cell_00001.png")))
    _verify(out, monkeypatch)
    bad = lab.copy()
    bad[0, 0] = 5  # the in-process check still catches a label outside dataset.json
    Image.fromarray(bad).save(out / "labelsTr" / "cell_00004.png")
    with pytest.raises(RuntimeError, match="unexpected labels"):
        _verify(out, monkeypatch)


def test_cells_foreground_scheme(cells_src: Path, tmp_path: Path) -> None:
    out = neurips_cells.convert(cells_src, tmp_path / "raw", 708, scheme="foreground")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "cell": 1}
    lab = np.asarray(Image.open(out / "labelsTr" / "cell_00003.png"))
    np.testing.assert_array_equal(lab, (_touching_cells() > 0).astype(np.uint8))


# ---- DSB 2018 ---------------------------------------------------------------------------
def _dsb_image(root: Path, image_id: str, rgba: np.ndarray, masks: list[np.ndarray]) -> None:
    (root / image_id / "images").mkdir(parents=True)
    Image.fromarray(rgba).save(root / image_id / "images" / f"{image_id}.png")
    for k, mask in enumerate(masks):
        (root / image_id / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / image_id / "masks" / f"m{k}.png")


@pytest.fixture()
def dsb_src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    src = tmp_path / "dsb_download"
    a, b = np.zeros((12, 10), np.uint8), np.zeros((12, 10), np.uint8)
    a[1:6, 2:7] = 255
    b[4:10, 2:7] = 255  # overlaps a: the later mask keeps rows 4-5
    _dsb_image(src / "stage1_train", "aa11", rng.integers(0, 255, (12, 10, 4), dtype=np.uint8), [a, b])
    _dsb_image(src / "stage1_train", "bb22", rng.integers(0, 255, (12, 10), dtype=np.uint8), [a])
    _dsb_image(src / "stage1_test", "cc33", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8), [])
    return src


def test_dsb_converts_masks_to_instances_and_labels(dsb_src: Path, tmp_path: Path) -> None:
    out = dsb2018.convert(dsb_src, tmp_path / "raw", 708)
    assert out.name == "Dataset708_DSB2018Nuclei"
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["numTraining"] == 2 and ds["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert "kaggle.com" in ds["reference"] and ds["converted_by"] == "umamba-seg"
    inst = np.asarray(Image.open(out / "instancesTr" / "aa11.png"))
    assert inst[2, 3] == 1 and inst[5, 3] == 2 and inst[0, 0] == 0  # later mask wins the overlap
    labels = np.asarray(Image.open(out / "labelsTr" / "aa11.png"))
    assert set(np.unique(labels)) == {0, 1, 2}
    rgb = np.asarray(Image.open(out / "imagesTr" / "bb22_0000.png"))
    assert rgb.shape == (12, 10, 3) and (rgb[..., 0] == rgb[..., 2]).all()  # grey repeated on R, G, B
    # an image without masks in a test folder: imagesTs only
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["cc33_0000.png"]
    assert not (out / "labelsTs").exists() or not list((out / "labelsTs").iterdir())


# ---- shared behaviour -------------------------------------------------------------------
def test_source_read_names_what_is_missing(tmp_path: Path) -> None:
    """The shared reader: a missing folder, a download without cases, one without training cases."""
    cases = [common.ImageCase("a", tmp_path / "a.png", None, True)]
    source = common.Source(
        "Demo", common.Hint("demo images", "extract them"), common.Hint("labelled images", "add labels"), "", ""
    )
    with pytest.raises(UserInputError, match="the Demo folder does not exist"):
        source.read(tmp_path / "nowhere", lambda folder: cases)
    with pytest.raises(UserInputError, match="no demo images found") as e:
        source.read(tmp_path, lambda folder: [])
    assert e.value.line().endswith("extract them")
    with pytest.raises(UserInputError, match="no labelled images found"):
        source.read(tmp_path, lambda folder: cases)
    test_only = common.Source("Demo", common.Hint("demo images", "extract them"), None, "", "")
    assert test_only.read(tmp_path, lambda folder: cases) == cases


def test_held_out_looks_at_the_folders_between_source_and_path(tmp_path: Path) -> None:
    words = re.compile("test", re.IGNORECASE)
    assert common.held_out(tmp_path / "stage1_test" / "x" / "img.png", tmp_path, words)
    assert not common.held_out(tmp_path / "train" / "test_image.png", tmp_path, words)  # the name itself
    assert not common.held_out(tmp_path / "img.png", tmp_path, words)


def test_case_files_and_the_case_loop_skip_finished_cases(tmp_path: Path) -> None:
    ds = common.prepare_dataset(tmp_path / "raw", 42, "Demo", ".png")
    assert ds.case_files("c", True, channels=2, instances=True) == [
        ds.root / "imagesTs" / "c_0000.png",
        ds.root / "imagesTs" / "c_0001.png",
        ds.root / "instancesTs" / "c.png",
        ds.root / "labelsTs" / "c.png",
    ]
    assert ds.case_files("c", False, labelled=False) == [ds.root / "imagesTr" / "c_0000.png"]
    cases = [common.ImageCase(c, tmp_path / c, None, True) for c in ("a", "b")]
    written = []

    def write(case: common.ImageCase) -> None:
        written.append(case.case_id)
        ds.image(case.case_id, 0, True).parent.mkdir(exist_ok=True)
        ds.image(case.case_id, 0, True).write_bytes(b"x")

    def files(case: common.ImageCase) -> list[Path]:
        return ds.case_files(case.case_id, case.test, labelled=False)

    common.convert_cases(ds, cases, "demo", False, files, write)
    common.convert_cases(ds, cases, "demo", False, files, write)
    assert written == ["a", "b"]
    common.convert_cases(ds, cases, "demo", True, files, write)
    assert written == ["a", "b", "a", "b"]


def test_a_converter_option_error_is_one_line(isic_src: Path, tmp_path: Path, capsys) -> None:
    assert isic2018.main([str(isic_src), "--out", str(tmp_path / "raw"), "--max-side", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-side 3 is too small, --max-side, use 256 or more"]
    assert not (tmp_path / "raw").exists()  # refused before anything was written


def test_rerun_skips_done_cases_and_removes_temp_leftovers(isic_src: Path, tmp_path: Path) -> None:
    out = isic2018.convert(isic_src, tmp_path / "raw", 705)
    done = out / "imagesTr" / "ISIC_0000000_0000.png"
    stamp = done.stat().st_mtime_ns
    leftover = out / "imagesTr" / ".ISIC_0000001_0000.png.abc123.tmp.png"
    leftover.write_bytes(b"half a file")
    (out / "labelsTr" / "ISIC_0000003.png").unlink()  # as if killed before this case finished
    isic2018.convert(isic_src, tmp_path / "raw", 705)
    assert not leftover.exists()
    assert done.stat().st_mtime_ns == stamp
    assert (out / "labelsTr" / "ISIC_0000003.png").is_file()
    isic2018.convert(isic_src, tmp_path / "raw", 705, overwrite=True)
    assert done.stat().st_mtime_ns != stamp


def test_id_clash_and_foreign_cases_are_user_errors(isic_src: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "Dataset705_Other").mkdir(parents=True)
    with pytest.raises(UserInputError, match="already used by Dataset705_Other"):
        isic2018.convert(isic_src, raw, 705)
    out = isic2018.convert(isic_src, raw, 706)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(out / "labelsTr" / "ISIC_9999999.png")
    with pytest.raises(UserInputError, match="not in the source"):
        isic2018.convert(isic_src, raw, 706)
    with pytest.raises(UserInputError, match="integer from 1 to 999"):
        common.dataset_folder_name(1000, "X")


def test_cli_converts_and_reports_user_errors_in_one_line(isic_src: Path, tmp_path: Path) -> None:
    """``umamba-seg convert NAME`` and ``python -m umamba_seg.convert.NAME``, as a user runs them."""
    env = {**os.environ, "PYTHONPATH": ""}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "umamba_seg",
            "convert",
            "isic2018",
            str(isic_src),
            "--workdir",
            str(tmp_path / "w"),
            "--id",
            "12",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Dataset012_ISIC2018" in ok.stdout and f"-d 12 --workdir {tmp_path / 'w'}" in ok.stdout
    assert (tmp_path / "w" / "raw" / "Dataset012_ISIC2018" / "dataset.json").is_file()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "umamba_seg.convert.isic2018",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "raw"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the ISIC folder does not exist")
    assert "Traceback" not in bad.stderr


def test_convert_subcommand_hands_its_arguments_to_the_converter(isic_src: Path, tmp_path: Path, capsys) -> None:
    from umamba_seg.cli import main

    assert main(["convert", "isic2018", str(isic_src), "--out", str(tmp_path / "raw"), "--id", "13"]) == 0
    assert (tmp_path / "raw" / "Dataset013_ISIC2018" / "labelsTr").is_dir()
    assert main(["convert", "isic2018", str(tmp_path / "nowhere"), "--out", str(tmp_path / "raw")]) == 2
    captured = capsys.readouterr()
    assert "error: the ISIC folder does not exist" in captured.err
    assert captured.out.count("[convert] done") == 1  # only the run that succeeded
    assert main(["convert", "nope", str(isic_src)]) == 2  # not a converter: one usage line
    assert "invalid choice: 'nope'" in capsys.readouterr().err
