"""Tests of the synthetic dataset generator (umamba_seg.data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

from umamba_seg.data import KINDS, case_ids, get_kind, make_dataset
from umamba_seg.data.kind import SizePreset, size_presets
from umamba_seg.errors import UserInputError


def _read_case(dataset: Path, split: str, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one case back with the reader nnU-Net itself picks for the dataset."""
    dj = json.loads((dataset / "dataset.json").read_text())
    n_files = 1 if dj["file_ending"] == ".png" else len(dj["channel_names"])
    images = [str(dataset / f"images{split}" / f"{case_id}_{c:04d}{dj['file_ending']}") for c in range(n_files)]
    rw = determine_reader_writer_from_dataset_json(dj, images[0], verbose=False)()
    data, props = rw.read_images(images)
    seg, _ = rw.read_seg(str(dataset / f"labels{split}" / f"{case_id}{dj['file_ending']}"))
    return data, seg[0], props


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_a_valid_nnunet_dataset(kind, raw_dataset_factory):
    dataset = raw_dataset_factory(kind)
    spec = get_kind(kind)
    preset = spec.sizes["tiny"]
    assert dataset.name == f"Dataset{spec.default_id:03d}_{spec.name}"

    verify_dataset_integrity(str(dataset), num_processes=1)  # raises on any problem

    dj = json.loads((dataset / "dataset.json").read_text())
    assert dj["numTraining"] == preset.num_train and dj["numTest"] == preset.num_test
    train_ids, test_ids = case_ids(spec, preset.num_train, preset.num_test)
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == sorted(
        f"{c}{spec.file_ending}" for c in train_ids
    )
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == sorted(
        f"{c}{spec.file_ending}" for c in test_ids
    )
    # no temporary files left behind by the atomic writer
    assert not [p for p in dataset.rglob("*") if p.name.startswith(".")]

    labels_seen = set()
    for split, ids in (("Tr", train_ids), ("Ts", test_ids)):
        for case_id in ids:
            data, seg, props = _read_case(dataset, split, case_id)
            assert data.shape[0] == len(spec.channel_names)
            assert data.shape[1:] == seg.shape
            assert np.isfinite(data).all()
            assert set(np.unique(seg)) <= set(spec.labels.values())
            labels_seen |= set(np.unique(seg).astype(int).tolist())
            if spec.ndim == 3:
                assert np.allclose(props["spacing"], preset.spacing)
                assert seg.shape == preset.shape
            else:
                assert seg.shape == (1, *preset.shape)
    # every class occurs somewhere, and the image content differs between cases
    assert labels_seen == set(spec.labels.values())
    a, _, _ = _read_case(dataset, "Tr", train_ids[0])
    b, _, _ = _read_case(dataset, "Tr", train_ids[1])
    assert not np.array_equal(a, b)


def test_ct_is_in_hounsfield_units_with_distinct_organs(raw_3d_dataset):
    data, seg, props = _read_case(raw_3d_dataset, "Tr", "ct_000")
    ct = data[0]
    assert np.allclose(props["spacing"], (3.0, 0.8, 0.8))
    assert ct[0, 0, 0] < -900  # air in the corner
    liver, kidney = ct[seg == 1], ct[seg == 2]
    assert 60 < np.median(liver) < 150
    assert np.median(kidney) > np.median(liver) + 15
    # organs are sizeable structures, not specks: liver several % of the volume
    assert (seg == 1).mean() > 0.03 and (seg == 2).mean() > 0.003


def test_mri_needs_both_channels(raw_dataset_factory):
    dataset = raw_dataset_factory("mri3d")
    checked = 0
    for i in range(4):
        data, seg, _ = _read_case(dataset, "Tr", f"mri_{i:03d}")
        if not ((seg == 1).sum() > 20 and (seg == 2).sum() > 20):
            continue
        t1, flair = data
        tissue = (seg == 0) & (flair > np.percentile(flair, 60))
        flair_ratio = np.median(flair[seg == 1]) / np.median(flair[tissue])
        t1_ratio = np.median(t1[seg == 1]) / np.median(t1[tissue])
        # oedema stands out on FLAIR much more than on T1; the enhancing core on T1
        assert flair_ratio > 1.2 and flair_ratio > 1.3 * t1_ratio
        assert np.percentile(t1[seg == 2], 90) > 1.4 * np.median(t1[seg == 1])
        checked += 1
    assert checked >= 2


def test_endoscopy_instruments_are_grey_on_red_tissue(raw_2d_dataset):
    data, seg, _ = _read_case(raw_2d_dataset, "Tr", "endo_000")
    assert data.shape[0] == 3 and data.max() <= 255
    red_minus_green = data[0, 0] - data[1, 0]
    tissue = (seg[0] == 0) & (data[:, 0].sum(0) > 60)  # skip the black vignette corners
    assert np.median(red_minus_green[seg[0] == 1]) < 20
    assert np.median(red_minus_green[tissue]) > 60


def test_microscopy_nuclei_touch_and_vary_in_size(raw_dataset_factory):
    from scipy import ndimage

    dataset = raw_dataset_factory("microscopy2d")
    data, seg, _ = _read_case(dataset, "Tr", "nuclei_000")
    img, seg = data[0, 0], seg[0]
    assert np.median(img[seg == 1]) > 2 * np.median(img[seg == 0])
    # touching nuclei: some border pixels sit between two interiors, not next to background
    interiors, n = ndimage.label(seg == 1)
    assert n >= 5
    sizes = np.bincount(interiors.ravel())[1:]
    assert sizes.max() > 2 * np.median(sizes)
    near_bg = ndimage.binary_dilation(seg == 0)
    assert ((seg == 2) & ~near_bg).sum() > 0


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    kw = dict(size="tiny", num_train=2, num_test=1, progress=False)
    a = make_dataset("endoscopy2d", tmp_path / "a", seed=3, **kw)
    b = make_dataset("endoscopy2d", tmp_path / "b", seed=3, **kw)
    c = make_dataset("endoscopy2d", tmp_path / "c", seed=4, **kw)
    d = make_dataset("endoscopy2d", tmp_path / "d", seed=3, size="tiny", num_train=3, num_test=1, progress=False)
    img = "imagesTr/endo_001_0000.png"
    test_img = "imagesTs/endo_test_000_0000.png"
    assert (a / img).read_bytes() == (b / img).read_bytes()
    assert (a / "labelsTs/endo_test_000.png").read_bytes() == (b / "labelsTs/endo_test_000.png").read_bytes()
    assert (a / img).read_bytes() != (c / img).read_bytes()
    # held-out cases do not depend on how many training cases were asked for
    assert (a / test_img).read_bytes() == (d / test_img).read_bytes()


def test_rerun_reuses_and_new_arguments_regenerate(tmp_path):
    kw = dict(size="tiny", num_test=1, progress=False)
    first = make_dataset("microscopy2d", tmp_path, num_train=3, **kw)
    stamp = (first / "dataset.json").stat().st_mtime_ns
    again = make_dataset("microscopy2d", tmp_path, num_train=3, **kw)
    assert again == first and (first / "dataset.json").stat().st_mtime_ns == stamp
    make_dataset("microscopy2d", tmp_path, num_train=2, **kw)
    assert len(list((first / "imagesTr").iterdir())) == 2  # stale third case removed
    assert json.loads((first / "dataset.json").read_text())["numTraining"] == 2


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(UserInputError, match="unknown dataset kind"):
        make_dataset("pet4d", tmp_path)
    with pytest.raises(UserInputError, match="unknown size"):
        make_dataset("ct3d", tmp_path, size="huge")
    with pytest.raises(UserInputError, match="num-train"):
        make_dataset("ct3d", tmp_path, num_train=0)
    (tmp_path / "Dataset903_MyRealData").mkdir()
    with pytest.raises(UserInputError, match="already used by Dataset903_MyRealData"):
        make_dataset("endoscopy2d", tmp_path, size="tiny")
    foreign = tmp_path / "Dataset055_SynthEndoscopy"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"labels": {}}))
    with pytest.raises(UserInputError, match="not made by umamba-seg"):
        make_dataset("endoscopy2d", tmp_path, dataset_id=55, size="tiny")
    assert (foreign / "dataset.json").exists()  # never overwritten


def test_size_presets_share_one_spacing_in_the_order_given():
    sizes = size_presets((3.0, 0.8, 0.8), tiny=((4, 8, 8), 2, 1), default=((16, 32, 32), 5, 2))
    assert list(sizes) == ["tiny", "default"]
    assert sizes["default"] == SizePreset((16, 32, 32), (3.0, 0.8, 0.8), 5, 2)
    assert size_presets(small=((64, 80), 20, 6))["small"].spacing == (1.0, 1.0)  # 2D: pixels
