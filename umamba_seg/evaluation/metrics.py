"""Per-case, per-class segmentation metrics on label arrays with a voxel spacing.

Overlap metrics (Dice, IoU, TP/FP/FN/TN) follow nnU-Net exactly: they are built from
nnunetv2's own ``region_or_label_to_mask`` and ``compute_tp_fp_fn_tn``, and Dice/IoU are
NaN only when reference and prediction are both empty for a class. Surface metrics are
MONAI's: HD95 as ``compute_hausdorff_distance(percentile=95)`` and NSD as
``compute_surface_dice`` define them, in millimetres through the voxel spacing. Both of
those MONAI functions find the mask edges and their distances; here MONAI's
``get_edge_surface_distance`` runs once per class and both metrics are read off its
distances (twice as fast; tests check equality with the two MONAI functions). What
MONAI lacks and this module adds:

- the empty-mask conventions (HD95 NaN when either side is empty; NSD NaN when both are
  empty, 0 when only one is), decided before MONAI is called so it neither warns nor
  returns ``inf``;
- cropping both masks to their common bounding box first, so the one-hot float tensors
  MONAI builds stay small on large volumes (distances are translation invariant and
  edges are found with a zero border, so the result is unchanged);
- 2D data stored as 3D with one slice (nnU-Net's readers give 2D images shape
  ``(1, Y, X)``) is measured in 2D: a singleton axis has no surface across it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask

LabelOrRegion = int | tuple[int, ...]
Tolerance = float | Mapping[LabelOrRegion, float]

METRIC_NAMES: tuple[str, ...] = ("Dice", "IoU", "HD95", "NSD", "TP", "FP", "FN", "TN", "n_ref", "n_pred")
"""Metric keys written per class, in this order."""

NAN = float("nan")


def tolerance_for(nsd_tolerance: Tolerance, label_or_region: LabelOrRegion) -> float:
    """The NSD tolerance (mm) for one class: a single number, or a per-class mapping.

    Raises ``KeyError(label_or_region)`` when the mapping has no entry for the class.
    """
    if isinstance(nsd_tolerance, Mapping):
        if label_or_region not in nsd_tolerance:
            raise KeyError(label_or_region)
        return float(nsd_tolerance[label_or_region])
    return float(nsd_tolerance)


def _spatial_axes_to_keep(shape: Sequence[int]) -> list[int]:
    """Axes with more than one voxel; at least two axes (MONAI measures 2D or 3D)."""
    keep = [i for i, s in enumerate(shape) if s > 1]
    for i in range(len(shape)):
        if len(keep) >= 2:
            break
        if i not in keep:
            keep.append(i)
    return sorted(keep)


def _crop_to_union(mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of their union (both must be non-empty)."""
    union = mask_a | mask_b
    slices = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        present = np.flatnonzero(union.any(axis=other))
        slices.append(slice(int(present[0]), int(present[-1]) + 1))
    box = tuple(slices)
    return mask_a[box], mask_b[box]


def surface_metrics(
    mask_ref: np.ndarray, mask_pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float]:
    """HD95 (mm) and NSD at ``tolerance_mm`` for two boolean masks of the same shape.

    HD95 is NaN when either mask is empty. NSD is NaN when both are empty and 0 when
    exactly one is (MONAI's convention).
    """
    if mask_ref.shape != mask_pred.shape:
        raise ValueError(f"mask shapes differ: {mask_ref.shape} vs {mask_pred.shape}")
    if len(spacing) != mask_ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {mask_ref.ndim}-D mask")
    has_ref, has_pred = bool(mask_ref.any()), bool(mask_pred.any())
    if not has_ref and not has_pred:
        return NAN, NAN
    if not has_ref or not has_pred:
        return NAN, 0.0

    keep = _spatial_axes_to_keep(mask_ref.shape)
    squeeze = tuple(i for i in range(mask_ref.ndim) if i not in keep)
    ref = np.squeeze(mask_ref, axis=squeeze) if squeeze else mask_ref
    pred = np.squeeze(mask_pred, axis=squeeze) if squeeze else mask_pred
    spacing_kept = [float(spacing[i]) for i in keep]
    ref, pred = _crop_to_union(ref, pred)

    y = torch.from_numpy(np.ascontiguousarray(ref))
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))
    with warnings.catch_warnings():
        # both masks are non-empty here, so MONAI's empty-mask warnings cannot apply
        warnings.simplefilter("ignore")
        _, (pred_to_ref, ref_to_pred), _ = get_edge_surface_distance(
            y_pred, y, distance_metric="euclidean", spacing=spacing_kept, symmetric=True
        )
    return hd95_from_distances(pred_to_ref, ref_to_pred), nsd_from_distances(pred_to_ref, ref_to_pred, tolerance_mm)


def hd95_from_distances(pred_to_ref: torch.Tensor, ref_to_pred: torch.Tensor) -> float:
    """MONAI's HD95: the larger of the two directed 95th percentiles (``torch.quantile``)."""
    return float(torch.max(torch.quantile(pred_to_ref, 0.95), torch.quantile(ref_to_pred, 0.95)))


def nsd_from_distances(pred_to_ref: torch.Tensor, ref_to_pred: torch.Tensor, tolerance_mm: float) -> float:
    """MONAI's NSD (edge-voxel form): boundary voxels within the tolerance over all of them."""
    correct = int((pred_to_ref <= tolerance_mm).sum()) + int((ref_to_pred <= tolerance_mm).sum())
    return correct / (len(pred_to_ref) + len(ref_to_pred))


def overlap_metrics(
    mask_ref: np.ndarray, mask_pred: np.ndarray, ignore_mask: np.ndarray | None = None
) -> dict[str, float]:
    """Dice, IoU and the confusion counts, exactly as nnU-Net computes them."""
    tp, fp, fn, tn = (int(v) for v in compute_tp_fp_fn_tn(mask_ref, mask_pred, ignore_mask))
    if tp + fp + fn == 0:
        dice = iou = NAN
    else:
        dice = 2 * tp / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
    return {"Dice": dice, "IoU": iou, "TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_ref": tp + fn, "n_pred": tp + fp}


def compute_case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    labels_or_regions: Sequence[LabelOrRegion],
    nsd_tolerance: Tolerance = 1.0,
    ignore_label: int | None = None,
) -> dict[LabelOrRegion, dict[str, float]]:
    """All metrics of one case for every label (int) or region (tuple of labels).

    ``reference`` and ``prediction`` are integer label maps of the same spatial shape
    (no channel axis) and ``spacing`` gives the voxel size in mm along each of their
    axes. Voxels whose reference is ``ignore_label`` count for no metric. Returns
    ``{label_or_region: {metric: value}}`` with the keys of :data:`METRIC_NAMES`.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} != prediction shape {prediction.shape}")
    ignore_mask = reference == ignore_label if ignore_label is not None else None
    results: dict[LabelOrRegion, dict[str, float]] = {}
    for label_or_region in labels_or_regions:
        mask_ref = region_or_label_to_mask(reference, label_or_region)
        mask_pred = region_or_label_to_mask(prediction, label_or_region)
        overlap = overlap_metrics(mask_ref, mask_pred, ignore_mask)
        if ignore_mask is not None:
            mask_ref = mask_ref & ~ignore_mask
            mask_pred = mask_pred & ~ignore_mask
        # the tolerance matters only when both sides have voxels: look it up only then
        needs_tolerance = bool(mask_ref.any()) and bool(mask_pred.any())
        tolerance = tolerance_for(nsd_tolerance, label_or_region) if needs_tolerance else 0.0
        hd95, nsd = surface_metrics(mask_ref, mask_pred, spacing, tolerance)
        metrics = dict(overlap, HD95=hd95, NSD=nsd)
        results[label_or_region] = {name: metrics[name] for name in METRIC_NAMES}
    return results


def empty_class_metrics(num_voxels: int) -> dict[str, float]:
    """Metrics of a class absent from both reference and prediction of a case.

    ``num_voxels`` is the number of counted voxels (all of them: true negatives).
    """
    return {
        "Dice": NAN,
        "IoU": NAN,
        "HD95": NAN,
        "NSD": NAN,
        "TP": 0,
        "FP": 0,
        "FN": 0,
        "TN": int(num_voxels),
        "n_ref": 0,
        "n_pred": 0,
    }


def is_nan(value: float) -> bool:
    """True for a float NaN (counts are ints and never NaN)."""
    return isinstance(value, float) and math.isnan(value)
