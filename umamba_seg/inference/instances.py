"""Interior/boundary segmentations -> cell instances: seeds grown into the cell foreground.

A model trained on background 0 / interior 1 / boundary 2 (:mod:`umamba_seg.instance_labels`)
predicts touching cells as interiors separated by boundary. Each connected interior region
(8-connectivity in 2D, 18 in 3D, which never joins two cells' interiors when the boundary is
at least one voxel wide) is a seed; the seeds grow into the foreground (interior or boundary
voxels) with ``skimage.segmentation.watershed``:

- with the predicted interior probability, on ``1 - p(interior)``: a voxel joins the cell it is
  reached from along the most interior-like path, so seams follow the model's confidence;
- with labels only (no probabilities), each foreground voxel joins the nearest seed (Euclidean
  distance; over random touching discs this misassigns fewer boundary voxels than a watershed
  on that distance, which ties at equal distances).

Foreground regions without a seed (all boundary) stay background. ``min_size`` then drops
instances of fewer voxels (specks), and the instances are numbered 1..n.
"""

from __future__ import annotations

import numpy as np

INTERIOR = 1


def seed_regions(semantic: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected interior regions (8-connected in 2D, 18 in 3D), numbered 1..n."""
    from scipy import ndimage

    seg = np.asarray(semantic)
    structure = ndimage.generate_binary_structure(seg.ndim, min(2, seg.ndim))
    seeds, n = ndimage.label(seg == INTERIOR, structure=structure)
    return seeds, int(n)


def remove_small(instances: np.ndarray, min_size: int) -> np.ndarray:
    """Instances of at least ``min_size`` voxels, renumbered 1..n."""
    from skimage.segmentation import relabel_sequential

    inst = np.asarray(instances)
    if min_size > 1 and inst.any():
        sizes = np.bincount(inst.ravel())
        small = np.flatnonzero(sizes < min_size)
        small = small[small != 0]
        if small.size:
            inst = np.where(np.isin(inst, small), 0, inst)
    return relabel_sequential(inst)[0]


def semantic_to_instances(semantic: np.ndarray, interior_probability: np.ndarray | None = None,
                          min_size: int = 0) -> np.ndarray:
    """Instance map (int32, 0 background) from an interior/boundary map (and its interior probability)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    seg = np.asarray(semantic)
    seeds, n = seed_regions(seg)
    if n == 0:
        return np.zeros(seg.shape, np.int32)
    if interior_probability is not None:
        prob = np.asarray(interior_probability, dtype=np.float32)
        if prob.shape != seg.shape:
            raise ValueError(f"probability shape {prob.shape} differs from segmentation shape {seg.shape}")
        grown = watershed(1.0 - prob, markers=seeds, mask=seg > 0)
    else:
        _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        grown = np.where(seg > 0, seeds[tuple(nearest)], 0)
    return remove_small(grown, min_size).astype(np.int32)
