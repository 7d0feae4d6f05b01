"""NeurIPS 2022 Cell Segmentation challenge microscopy -> nnU-Net raw 2D RGB dataset.

Why: the challenge images mix formats (8-bit PNG/BMP/JPEG, 16-bit or multi-channel TIFF) and its
labels are *instance* masks (one integer per cell); nnU-Net trains semantic labels on one image
format.

Source layout (below SRC_DIR, any depth): ``<split>/images/cell_00001.<png|bmp|tif|tiff|jpg>`` and
``<split>/labels/cell_00001_label.<tiff|tif|png>``, e.g. ``Training-labeled/`` and ``Tuning/``.
Folders whose name says *unlabeled* are skipped; folders named *tuning*, *validation* or *test* (and
images without a label) go to ``imagesTs``/``labelsTs``.

Images: one RGB PNG per case (grey images repeated on the three channels, alpha dropped); 8-bit
images keep their values, other bit depths are scaled per channel from the 1st to the 99th
percentile of the non-zero pixels to 0..255 (the challenge baseline's normalisation, so microscope
bit depth does not matter).

The instance masks themselves, renumbered 1..n, go to ``instancesTr/``/``instancesTs/`` as 16-bit
PNGs (``umamba-seg evaluate --instances`` scores predicted cells against them).

Labels, ``scheme="interior-boundary"`` (default, the U-Mamba cell setting, labels background 0,
interior 1, boundary 2): a pixel is *boundary* when it belongs to a cell and one of its four
neighbours belongs to another cell or to the background; the rest of the cell is *interior*
(umamba-seg's one implementation, :mod:`umamba_seg.instance_labels`, which is also
``umamba-seg instances-to-semantic``). The boundary class keeps touching cells apart, so
``umamba-seg predict --instances`` recovers cells and ``umamba-seg evaluate --instances`` scores
them (F1) against the original instance masks.
``scheme="foreground"`` writes plain cell/background (0/1) instead.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from umamba_seg.convert import common
from umamba_seg.convert.common import ImageCase, StrPath
from umamba_seg.errors import UserInputError
from umamba_seg.instance_labels import SEMANTIC_LABELS, instances_to_semantic

NAME = "NeurIPSCell"
DEFAULT_ID = 703
SCHEMES = {
    "interior-boundary": dict(SEMANTIC_LABELS),
    "foreground": {"background": 0, "cell": 1},
}
_IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_LABEL_ENDINGS = (".tiff", ".tif", ".png")
_TEST_WORDS = re.compile(r"(tuning|validation|test)", re.IGNORECASE)

#: what this converter reads: the download's name, what it must hold, where it comes from
SOURCE = common.Source(
    "NeurIPS cell segmentation",
    common.Hint(
        "cell images (<split>/images/<case>.png|bmp|tif|tiff)",
        "pass the folder that holds Training-labeled/ (with images/ and labels/)",
    ),
    common.Hint(
        "labelled training images (<split>/labels/<case>_label.tiff)",
        "extract the labelled training data (Training-labeled/) below SRC_DIR",
    ),
    reference="https://neurips22-cellseg.grand-challenge.org/",
    license="see the challenge data page",
)


def find_cases(src: Path) -> list[ImageCase]:
    """Pair ``images/<id>.*`` with ``labels/<id>_label.*`` in every split folder below ``src``."""
    cases: dict[str, ImageCase] = {}
    for images_dir in sorted(p for p in src.rglob("images") if p.is_dir()):
        split = images_dir.parent
        rel_parts = split.relative_to(src).parts
        if any("unlabeled" in part.lower() for part in rel_parts):
            continue
        test = common.held_out(images_dir, src, _TEST_WORDS)
        labels_dir = split / "labels"
        for image in sorted(images_dir.iterdir()):
            if not image.is_file() or image.suffix.lower() not in _IMAGE_ENDINGS:
                continue
            case_id = image.name[: -len(image.suffix)]
            if case_id in cases:
                raise UserInputError(
                    f"case {case_id} appears twice ({cases[case_id].image} and {image})",
                    image,
                    "convert the splits separately or rename one of them",
                )
            label = next(
                (
                    labels_dir / f"{case_id}_label{e}"
                    for e in _LABEL_ENDINGS
                    if (labels_dir / f"{case_id}_label{e}").is_file()
                ),
                None,
            )
            cases[case_id] = ImageCase(case_id, image, label, test or label is None)
    return [cases[k] for k in sorted(cases)]


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:  # unreadable or truncated file: tell the user which one
        raise UserInputError(
            f"cannot read {path.suffix} file ({type(e).__name__}: {e})", path, "re-download this file"
        ) from e


def _scale_to_uint8(channel: np.ndarray) -> np.ndarray:
    values = channel[channel > 0]
    if values.size == 0:
        return np.zeros(channel.shape, np.uint8)
    lo, hi = np.percentile(values, [1, 99])
    if hi <= lo:
        hi = lo + 1
    scaled = (channel.astype(np.float64) - lo) / (hi - lo)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def to_rgb_uint8(arr: np.ndarray, where: Path) -> np.ndarray:
    """Any challenge image as (H, W, 3) uint8."""
    a = np.squeeze(arr)
    if a.ndim == 3 and a.shape[0] <= 4 < a.shape[-1]:  # channels first (TIFF)
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] > 4:
        raise UserInputError(
            f"image has shape {arr.shape}, expected a 2D grey or colour image",
            where,
            "remove or re-export this image as 2D",
        )
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.stack([_scale_to_uint8(a[..., c]) for c in range(a.shape[-1])], axis=-1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 2:
        a = np.concatenate([a, np.zeros_like(a[..., :1])], axis=-1)
    return np.ascontiguousarray(a)


def instances_to_labels(instances: np.ndarray, scheme: str = "interior-boundary") -> np.ndarray:
    """Instance mask (0 = background, k = cell k) -> semantic labels of ``scheme`` (uint8);
    interior-boundary is :func:`umamba_seg.instance_labels.instances_to_semantic` (boundary 1 pixel)."""
    inst = np.asarray(instances)
    if scheme == "foreground":
        return (inst > 0).astype(np.uint8)
    if scheme != "interior-boundary":
        raise ValueError(f"unknown scheme {scheme!r}, expected one of {sorted(SCHEMES)}")
    return instances_to_semantic(inst)


def read_instances(case: ImageCase, image_hw: tuple[int, ...]) -> np.ndarray:
    """The case's instance mask, its cells renumbered 1..n (so that they fit a 16-bit PNG)."""
    inst = np.squeeze(_read_array(case.label))
    if inst.shape != image_hw:
        raise UserInputError(
            f"instance mask is {inst.shape} but its image is {image_hw}",
            case.label,
            "use the label file that belongs to this image",
        )
    return relabel_sequential(inst.astype(np.int64))[0]


def convert(
    src: StrPath,
    out_raw: StrPath,
    dataset_id: int = DEFAULT_ID,
    scheme: str = "interior-boundary",
    overwrite: bool = False,
) -> Path:
    """Convert the challenge folder ``src`` into ``out_raw/DatasetXXX_NeurIPSCell``; return that folder."""
    if scheme not in SCHEMES:
        raise UserInputError(f"unknown label scheme {scheme!r}", "--scheme", f"use one of {sorted(SCHEMES)}")
    cases = SOURCE.read(src, find_cases)
    ds = common.prepare_dataset(out_raw, dataset_id, NAME, ".png")

    def write_cell_image(case: ImageCase) -> None:
        rgb = to_rgb_uint8(_read_array(case.image), case.image)
        if case.label is not None:
            inst = read_instances(case, rgb.shape[:2])
            common.write_instance_png(inst, ds.instances(case.case_id, case.test))
            common.write_png(instances_to_labels(inst, scheme), ds.label(case.case_id, case.test))
        common.write_png(rgb, ds.image(case.case_id, 0, case.test))

    def cell_image_files(case: ImageCase) -> list[Path]:
        return ds.case_files(case.case_id, case.test, labelled=case.label is not None, instances=True)

    common.convert_cases(ds, cases, "cells", overwrite, cell_image_files, write_cell_image)
    description = (
        f"NeurIPS 2022 cell segmentation converted by umamba-seg convert neurips_cells; "
        f"instance masks -> {scheme} labels; instance task: umamba-seg predict --instances"
    )
    return common.finish_dataset(ds, cases, SOURCE, common.RGB_CHANNELS, SCHEMES[scheme], description)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__.splitlines()[0], DEFAULT_ID, "neurips_cells")
    parser.add_argument(
        "--scheme",
        choices=sorted(SCHEMES),
        default="interior-boundary",
        help="semantic labels made from the instance masks (default interior-boundary)",
    )
    return common.run_cli(parser, convert, argv, lambda args: dict(scheme=args.scheme))


if __name__ == "__main__":
    sys.exit(main())
