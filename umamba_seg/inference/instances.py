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

:func:`export_with_instances` is ``predict --instances``: one resampling of the logits to the
input's geometry gives nnunetv2's semantic export and the probabilities the watershed uses, so
the instance map (``OUT/instances/<case><ending>``) has exactly the semantic map's geometry.
"""

from __future__ import annotations

from pathlib import Path

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


def semantic_to_instances(
    semantic: np.ndarray, interior_probability: np.ndarray | None = None, min_size: int = 0
) -> np.ndarray:
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


INSTANCES_FOLDER = "instances"
BOUNDARY = 2


def check_instance_labels(dataset_json: dict, where) -> None:
    """``predict --instances`` needs a model of background 0, interior 1, boundary 2 (no regions)."""
    from umamba_seg.errors import UserInputError

    labels = dataset_json.get("labels", {})
    values = {v for v in labels.values() if isinstance(v, int)}
    if any(not isinstance(v, int) for v in labels.values()) or not {0, INTERIOR, BOUNDARY} <= values:
        raise UserInputError(
            "--instances needs a model trained on labels background 0, interior 1, boundary 2",
            where,
            "train on labels made by `umamba-seg instances-to-semantic` (or predict without --instances)",
        )


def instance_file(output_dir: Path, case: str, file_ending: str) -> Path:
    """Where ``predict --instances`` puts a case's instance map."""
    return Path(output_dir) / INSTANCES_FOLDER / f"{case}{file_ending}"


def export_with_instances(
    logits,
    properties: dict,
    predictor,
    case_dataset_json: dict,
    output_truncated: str,
    save_probabilities: bool,
    instances_out: Path,
    min_size: int = 0,
    num_threads_torch: int = 1,
) -> None:
    """nnunetv2's export (semantic map, optional ``.npz``/``.pkl`` under ``output_truncated``)
    plus the instance map at ``instances_out``, from one resampling of ``logits`` to the input's
    geometry; the instance map is written (atomically) first."""
    from batchgenerators.utilities.file_and_folder_operations import save_pickle
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    from umamba_seg.label_files import write_instance_map

    pm, cm = predictor.plans_manager, predictor.configuration_manager
    label_manager = pm.get_label_manager(case_dataset_json)
    segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, pm, cm, label_manager, properties, return_probabilities=True, num_threads_torch=num_threads_torch
    )
    rw = pm.image_reader_writer_class()
    instances = semantic_to_instances(segmentation, probabilities[INTERIOR], min_size)
    write_instance_map(rw, instances, instances_out, properties)
    if save_probabilities:
        np.savez_compressed(output_truncated + ".npz", probabilities=probabilities)
        save_pickle(properties, output_truncated + ".pkl")
    rw.write_seg(segmentation, output_truncated + case_dataset_json["file_ending"], properties)
