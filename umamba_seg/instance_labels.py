"""Instance label maps -> semantic labels 0 background, 1 interior, 2 boundary.

nnU-Net trains semantic classes, but cells and nuclei touch: as one "cell" class, two touching
cells are one blob. The usual remedy, and the labels the U-Mamba authors trained their cell
datasets with, is a *boundary* class: a cell voxel with a face neighbour (4-neighbourhood in 2D,
6 in 3D) in another cell or in the background is boundary, the rest of the cell is interior.
Voxels beyond the image edge do not count as neighbours. ``boundary_width`` PX > 1 also makes
boundary every cell voxel within PX - 1 face steps of such a voxel, for thicker seams.
The dataset.json labels are ``{"background": 0, "interior": 1, "boundary": 2}``.

With a boundary of width >= 1, interiors of different cells never share a face or an edge
(in 3D they may share a corner), so connected interiors (8-connectivity in 2D, 18 in 3D) give
the cells back one each: :mod:`umamba_seg.inference.instances` grows them back to full cells.

:func:`convert_instance_folder` is ``umamba-seg instances-to-semantic``: every instance map of a
folder (any format nnU-Net reads, 2D or 3D) to a semantic map of the same format and geometry.
Instance ids are read through nnU-Net's readers as float32, exact up to 2^24.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from umamba_seg.errors import UserInputError
from umamba_seg.label_files import list_label_files, read_label_map, reader_writer_for, write_label_map

log = logging.getLogger(__name__)

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
SEMANTIC_LABELS = {"background": BACKGROUND, "interior": INTERIOR, "boundary": BOUNDARY}


def instance_boundaries(instances: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Boolean mask of the cell voxels within ``boundary_width`` face steps of another value."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    if boundary_width < 1:
        raise ValueError(f"boundary_width must be at least 1, got {boundary_width}")
    inst = np.asarray(instances)
    edge = find_boundaries(inst, connectivity=1, mode="inner")  # cell voxels with a differing face neighbour
    if boundary_width > 1 and edge.any():
        structure = ndimage.generate_binary_structure(inst.ndim, 1)
        edge = ndimage.binary_dilation(edge, structure, iterations=boundary_width - 1) & (inst != 0)
    return edge


def instances_to_semantic(instances: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Instance map (0 background, k cell k) -> uint8 map of background 0, interior 1, boundary 2."""
    inst = np.asarray(instances)
    out = np.zeros(inst.shape, np.uint8)
    out[inst != 0] = INTERIOR
    out[instance_boundaries(inst, boundary_width)] = BOUNDARY
    return out


def _check_width(boundary_width: int) -> None:
    if not isinstance(boundary_width, (int, np.integer)) or boundary_width < 1:
        raise UserInputError(
            f"--boundary-width {boundary_width} is not a whole number >= 1",
            "--boundary-width",
            "use 1 (the default) or a few pixels",
        )


def convert_instance_folder(
    input_dir: Path, output_dir: Path, boundary_width: int = 1, verbose: bool = True
) -> list[Path]:
    """Convert every instance map in ``input_dir`` into ``output_dir`` (same names, format and
    geometry); returns the written files. Output files are written whole or not at all."""
    _check_width(boundary_width)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    files, ending = list_label_files(input_dir)
    if output_dir.resolve() == input_dir.resolve():
        raise UserInputError("the output folder is the input folder", output_dir, "pass a different -o")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserInputError("the output path is a file, not a folder", output_dir, "pass a folder with -o")
    rw = reader_writer_for(ending, files[0])
    written = []
    for f in files:
        instances, props = read_label_map(rw, f, "instance map")
        semantic = instances_to_semantic(instances, boundary_width)
        try:
            write_label_map(rw, semantic, output_dir / f.name, props)
        except OSError as e:
            raise UserInputError(
                f"cannot write the label map ({e.strerror or e})",
                e.filename or output_dir,
                "pass an output folder you can write to with -o",
            ) from None
        written.append(output_dir / f.name)
        if verbose:
            log.info("%s: %d cell(s)", f.name, int(np.count_nonzero(np.unique(instances))))
    return written
