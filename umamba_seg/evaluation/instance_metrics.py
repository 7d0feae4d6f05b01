"""Instance metrics of one case: one-to-one matching of predicted and true cells on IoU.

Cell segmentation is scored per object, not per pixel (NeurIPS 2022 Cell Segmentation, DSB
2018): two touching cells predicted as one blob have a high Dice but are one false negative
and a poor match. Here every reference instance and every predicted instance is a distinct
non-zero value of its label map. Their pairwise IoUs come from one pass over the overlapping
pixels; ``scipy.optimize.linear_sum_assignment`` then pairs them one to one, maximising first
the number of pairs with IoU >= the threshold and then their summed IoU (so at thresholds
below 0.5, where a cell may overlap two candidates by that much, the count is still optimal).

Per threshold ``t``: TP = pairs with IoU >= t, FP = unmatched predictions, FN = unmatched
references, precision TP/(TP+FP), recall TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), and
``AP@t`` = TP/(TP+FP+FN), the "average precision" of DSB 2018 and Cellpose; ``AP`` is its
mean over t = 0.50, 0.55, ..., 0.95. ``mean_matched_IoU`` averages the IoU of the TP pairs.
Undefined ratios (0/0) are NaN: precision without predictions, recall without references,
F1 and AP when both are empty.

``exclude_border`` drops, from both maps before matching, every instance that has a voxel
within ``border_width`` voxels of the image edge (the challenge's metric used 2 pixels); axes
of length 1 (the slice axis of a 2D image) have no edge.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
COUNT_KEYS: tuple[str, ...] = ("TP", "FP", "FN")
CASE_KEYS: tuple[str, ...] = (
    "n_reference",
    "n_prediction",
    "TP",
    "FP",
    "FN",
    "precision",
    "recall",
    "F1",
    "mean_matched_IoU",
    "AP",
) + tuple(f"AP@{t:.2f}" for t in AP_THRESHOLDS)
DEFAULT_BORDER_WIDTH = 2


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def relabel(instances: np.ndarray) -> tuple[np.ndarray, int]:
    """Instance ids made consecutive 1..n (0 stays background); returns the map and n."""
    values, inverse = np.unique(np.asarray(instances), return_inverse=True)
    inverse = inverse.reshape(np.shape(instances))
    if values.size and values[0] == 0:
        return inverse, int(values.size - 1)
    return inverse + 1, int(values.size)


def remove_border_instances(instances: np.ndarray, border_width: int = DEFAULT_BORDER_WIDTH) -> np.ndarray:
    """``instances`` without the instances that reach within ``border_width`` voxels of the edge."""
    inst = np.asarray(instances)
    band = np.zeros(inst.shape, bool)
    for axis, n in enumerate(inst.shape):
        if n <= 1:
            continue
        w = min(border_width, n)
        index = [slice(None)] * inst.ndim
        index[axis] = slice(0, w)
        band[tuple(index)] = True
        index[axis] = slice(n - w, n)
        band[tuple(index)] = True
    touching = np.unique(inst[band])
    touching = touching[touching != 0]
    if touching.size == 0:
        return inst
    return np.where(np.isin(inst, touching), 0, inst)


def iou_matrix(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU of every reference instance (rows, ids 1..n in order) with every predicted one (columns)."""
    ref, n_ref = relabel(reference)
    pred, n_pred = relabel(prediction)
    if n_ref == 0 or n_pred == 0:
        return np.zeros((n_ref, n_pred))
    area_ref = np.bincount(ref.ravel(), minlength=n_ref + 1)[1:]
    area_pred = np.bincount(pred.ravel(), minlength=n_pred + 1)[1:]
    both = (ref > 0) & (pred > 0)
    pair = ref[both].astype(np.int64) * (n_pred + 1) + pred[both]
    codes, inter = np.unique(pair, return_counts=True)
    r, p = codes // (n_pred + 1) - 1, codes % (n_pred + 1) - 1
    iou = np.zeros((n_ref, n_pred))
    iou[r, p] = inter / (area_ref[r] + area_pred[p] - inter)
    return iou


def match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one pairs with IoU >= ``threshold`` (as many as possible)."""
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    hit = iou >= threshold
    # a hit is worth more than any sum of IoUs below it can make up: IoU / (2 * n) < 1/2 per pair
    cost = -(hit.astype(float) + iou / (2.0 * min(iou.shape)))
    rows, cols = linear_sum_assignment(cost)
    keep = hit[rows, cols]
    return rows[keep], cols[keep]


def counts_to_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (NaN where undefined)."""
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "F1": _ratio(2 * tp, 2 * tp + fp + fn)}


def instance_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    iou_threshold: float = 0.5,
    exclude_border: bool = False,
    border_width: int = DEFAULT_BORDER_WIDTH,
) -> dict[str, float]:
    """TP/FP/FN, precision, recall, F1 at ``iou_threshold``, mean matched IoU and AP of one case."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    if exclude_border:
        reference = remove_border_instances(reference, border_width)
        prediction = remove_border_instances(prediction, border_width)
    iou = iou_matrix(reference, prediction)
    n_ref, n_pred = iou.shape
    rows, cols = match(iou, iou_threshold)
    tp = len(rows)
    fp, fn = n_pred - tp, n_ref - tp
    out: dict[str, float] = {"n_reference": n_ref, "n_prediction": n_pred, "TP": tp, "FP": fp, "FN": fn}
    out.update(counts_to_scores(tp, fp, fn))
    out["mean_matched_IoU"] = float(iou[rows, cols].mean()) if tp else float("nan")
    ap = []
    for t in AP_THRESHOLDS:
        tp_t = len(match(iou, t)[0])
        ap.append(_ratio(tp_t, n_ref + n_pred - tp_t))
    out["AP"] = float("nan") if all(math.isnan(a) for a in ap) else float(np.mean(ap))
    out.update({f"AP@{t:.2f}": a for t, a in zip(AP_THRESHOLDS, ap)})
    return out
