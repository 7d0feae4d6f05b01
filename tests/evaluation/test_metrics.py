"""Per-case metrics against hand-computed values (anisotropic spacing) and MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from umamba_seg.evaluation.metrics import METRIC_NAMES, compute_case_metrics, surface_metrics, tolerance_for

SPACING = (3.0, 2.0, 0.5)  # mm along numpy axes 0, 1, 2


def _single_voxels(shape, ref_at, pred_at):
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[ref_at] = 1
    pred[pred_at] = 1
    return ref, pred


@pytest.mark.parametrize(
    "pred_at, distance",
    [
        ((1, 0, 0), 3.0),  # one voxel along axis 0: 3 mm
        ((0, 2, 0), 4.0),  # two voxels along axis 1: 2 * 2 mm
        ((0, 0, 3), 1.5),  # three voxels along axis 2: 3 * 0.5 mm
        ((1, 1, 1), math.sqrt(9 + 4 + 0.25)),  # diagonal
    ],
)
def test_hd95_and_nsd_use_spacing_per_axis(pred_at, distance):
    ref, pred = _single_voxels((4, 5, 8), (0, 0, 0), pred_at)
    m = compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance=distance - 0.01)[1]
    assert m["HD95"] == pytest.approx(distance, rel=1e-6)
    assert m["NSD"] == 0.0
    assert m["Dice"] == 0.0 and m["IoU"] == 0.0
    assert (m["TP"], m["FP"], m["FN"], m["n_ref"], m["n_pred"]) == (0, 1, 1, 1, 1)
    assert m["TN"] == ref.size - 2
    # the tolerance is inclusive (d <= tau)
    at_tolerance = compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance=distance + 1e-6)[1]
    assert at_tolerance["NSD"] == 1.0


@pytest.mark.parametrize("line_length, hd95", [(10, 10.0), (20, 0.0)])
def test_hd95_is_the_interpolated_95th_percentile(line_length, hd95):
    # reference: a one-voxel-thick line (every voxel is an edge); prediction: the same
    # line plus one outlier 10 rows = 20 mm away. Directed distances pred -> ref are
    # line_length zeros and one 20; ref -> pred all zeros. torch.quantile interpolates:
    # position 0.95 * line_length, i.e. 9.5 -> halfway between 0 and 20 for 10 voxels,
    # 19 -> the last zero for 20 voxels.
    ref = np.zeros((11, line_length), np.uint8)
    ref[0, :] = 1
    pred = ref.copy()
    pred[10, 0] = 1
    got_hd95, got_nsd = surface_metrics(ref == 1, pred == 1, (2.0, 1.0), tolerance_mm=1.0)
    assert got_hd95 == pytest.approx(hd95, abs=1e-5)
    n = line_length
    assert got_nsd == pytest.approx(2 * n / (2 * n + 1))


def test_shifted_cube_by_hand():
    # 3x3x3 cube shifted one voxel along axis 2 (0.5 mm): 18 voxels overlap
    ref = np.zeros((5, 5, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4, 1:4] = 1
    pred[1:4, 1:4, 2:5] = 1
    m = compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance=0.4)[1]
    assert list(m) == list(METRIC_NAMES)
    assert m["Dice"] == pytest.approx(2 * 18 / (27 + 27))
    assert m["IoU"] == pytest.approx(18 / 36)
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (18, 9, 9, ref.size - 36)
    # each cube has 26 edge voxels (all but its centre). Pred -> ref: 16 edges lie on
    # ref edges (0 mm); the 9 on the far face and the one over ref's centre are 0.5 mm
    # away. The same holds ref -> pred by symmetry.
    assert m["HD95"] == pytest.approx(0.5)
    assert m["NSD"] == pytest.approx((16 + 16) / 52)
    assert compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance=0.5)[1]["NSD"] == 1.0


def test_empty_class_conventions():
    shape = (3, 4, 5)
    empty = np.zeros(shape, np.uint8)
    blob = np.zeros(shape, np.uint8)
    blob[1, 1:3, 1:4] = 1

    both = compute_case_metrics(empty, empty, SPACING, [1])[1]
    assert all(math.isnan(both[k]) for k in ("Dice", "IoU", "HD95", "NSD"))
    assert (both["TP"], both["FP"], both["FN"], both["TN"]) == (0, 0, 0, empty.size)

    only_pred = compute_case_metrics(empty, blob, SPACING, [1])[1]
    assert only_pred["Dice"] == 0.0 and only_pred["IoU"] == 0.0
    assert math.isnan(only_pred["HD95"]) and only_pred["NSD"] == 0.0
    assert (only_pred["FP"], only_pred["n_pred"], only_pred["n_ref"]) == (6, 6, 0)

    only_ref = compute_case_metrics(blob, empty, SPACING, [1])[1]
    assert only_ref["Dice"] == 0.0 and only_ref["IoU"] == 0.0
    assert math.isnan(only_ref["HD95"]) and only_ref["NSD"] == 0.0
    assert (only_ref["FN"], only_ref["n_ref"], only_ref["n_pred"]) == (6, 6, 0)


def test_regions_and_ignore_label():
    ref = np.zeros((1, 4, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 1, 0:2] = 1
    ref[0, 1, 2:4] = 2
    ref[0, 3, :] = 3  # ignore label
    pred[0, 1, 0:3] = 1  # one voxel of label 2 predicted as 1
    pred[0, 1, 3] = 2
    pred[0, 3, 0:2] = 1  # predictions inside the ignore label do not count
    out = compute_case_metrics(ref, pred, (999.0, 1.0, 1.0), [1, 2, (1, 2)], ignore_label=3)
    assert (out[1]["TP"], out[1]["FP"], out[1]["FN"]) == (2, 1, 0)
    assert out[1]["Dice"] == pytest.approx(4 / 5)
    assert (out[2]["TP"], out[2]["FP"], out[2]["FN"]) == (1, 0, 1)
    assert (out[(1, 2)]["TP"], out[(1, 2)]["FP"], out[(1, 2)]["FN"]) == (4, 0, 0)
    assert out[(1, 2)]["Dice"] == 1.0 and out[(1, 2)]["HD95"] == 0.0
    assert out[(1, 2)]["TN"] == ref.size - 6 - 4
    # label 1, measured in 2D with the ignore area left out: directed distances
    # pred -> ref are [0, 0, 1] mm, whose interpolated 95th percentile is 0.9 mm
    assert out[1]["HD95"] == pytest.approx(0.9, rel=1e-6)


def test_2d_stored_with_one_slice_is_measured_in_2d():
    rng = np.random.default_rng(3)
    ref = (rng.random((12, 14)) > 0.6).astype(np.uint8)
    pred = (rng.random((12, 14)) > 0.6).astype(np.uint8)
    as_2d = compute_case_metrics(ref, pred, (0.7, 1.3), [1], nsd_tolerance=1.0)[1]
    as_3d = compute_case_metrics(ref[None], pred[None], (999.0, 0.7, 1.3), [1], nsd_tolerance=1.0)[1]
    assert as_2d == as_3d


@pytest.mark.parametrize("shape, spacing", [((20, 24), (0.8, 2.5)), ((9, 12, 14), (2.5, 0.7, 1.1))])
def test_surface_metrics_equal_monai_public_functions(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    for trial in range(3):
        ref = np.zeros(shape, bool)
        pred = np.zeros(shape, bool)
        # two random boxes plus speckle, so edges, holes and outliers all occur
        for mask in (ref, pred):
            lo = [int(rng.integers(0, s // 2)) for s in shape]
            hi = [int(rng.integers(l + 1, s + 1)) for l, s in zip(lo, shape)]
            mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
            mask |= rng.random(shape) > 0.97
        tol = 1.5
        hd95, nsd = surface_metrics(ref, pred, spacing, tol)
        y = torch.from_numpy(ref)[None, None].float()
        y_pred = torch.from_numpy(pred)[None, None].float()
        monai_hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=list(spacing)
        )
        monai_nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[tol], include_background=True, spacing=list(spacing)
        )
        assert hd95 == pytest.approx(float(monai_hd95[0, 0]), rel=1e-6), trial
        assert nsd == pytest.approx(float(monai_nsd[0, 0]), rel=1e-6), trial


def test_per_class_tolerances_are_looked_up_only_when_needed():
    ref = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = 1
    pred[1, 1, 3] = 1  # 1 mm away along axis 2 (0.5 mm spacing)
    pred[0, 0, 0] = 2  # class 2 only predicted: NSD 0 whatever the tolerance
    out = compute_case_metrics(ref, pred, SPACING, [1, 2], nsd_tolerance={1: 1.0})
    assert out[1]["NSD"] == 1.0 and out[2]["NSD"] == 0.0
    assert compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance={1: 0.9})[1]["NSD"] == 0.0
    with pytest.raises(KeyError):
        compute_case_metrics(ref, pred, SPACING, [1], nsd_tolerance={2: 1.0})
    assert tolerance_for(2.5, (1, 2)) == 2.5


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        compute_case_metrics(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), (1.0, 1.0), [1])
