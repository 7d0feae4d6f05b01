"""Data Science Bowl 2018 nuclei -> nnU-Net raw 2D RGB dataset with instance maps.

Why: each DSB 2018 image comes with one binary PNG *per nucleus*; nnU-Net wants one semantic label
map per image, and the instance score (F1, the challenge's AP) needs one instance map per image.

Source layout (below SRC_DIR, any depth): ``<image_id>/images/<image_id>.png`` and
``<image_id>/masks/<mask_id>.png`` (0 background, 255 nucleus), e.g. ``stage1_train/`` and
``stage1_test/``. Images without masks, and every image in a folder whose name says *test*, go to
``imagesTs`` (with ``labelsTs``/``instancesTs`` when they have masks); the rest to ``imagesTr``.

Per case: the image as one RGB PNG (alpha dropped, grey repeated on three channels); the
instance map (mask files in name order numbered 1..n; where masks overlap, which happens in the
release, the later mask keeps the pixel) as a 16-bit PNG in ``instancesTr/``/``instancesTs/``;
and the labels background 0, interior 1, boundary 2 made from it by
:func:`umamba_seg.instance_labels.instances_to_semantic`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umamba_seg.convert import common
from umamba_seg.convert.common import StrPath
from umamba_seg.errors import UserInputError
from umamba_seg.instance_labels import SEMANTIC_LABELS, instances_to_semantic

NAME = "DSB2018Nuclei"
DEFAULT_ID = 708
_TEST_WORDS = re.compile(r"test", re.IGNORECASE)

#: what this converter reads: the download's name, what it must hold, where it comes from
SOURCE = common.Source(
    "DSB 2018",
    common.Hint("nucleus images (<image_id>/images/<image_id>.png)", "pass the folder that holds stage1_train/"),
    common.Hint("images with masks (<image_id>/masks/*.png)", "extract stage1_train.zip below SRC_DIR"),
    reference="https://www.kaggle.com/c/data-science-bowl-2018",
    license="see the competition's data page",
)
#: dataset.json's description
DESCRIPTION = (
    "Data Science Bowl 2018 nuclei converted by umamba-seg convert dsb2018; per-nucleus "
    "masks -> instance maps (instancesTr/Ts) and interior/boundary labels"
)


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    masks: tuple[Path, ...]
    test: bool


def find_cases(src: Path) -> list[Case]:
    """Every ``<id>/images/<id>.png`` below ``src`` with the PNGs of its ``<id>/masks/`` folder."""
    cases: dict[str, Case] = {}
    for image in sorted(src.rglob("*.png")):
        case_dir = image.parent.parent
        if image.parent.name != "images" or image.stem != case_dir.name:
            continue
        if image.stem in cases:
            raise UserInputError(
                f"image {image.stem} appears twice ({cases[image.stem].image} and {image})",
                image,
                "convert the stages separately",
            )
        masks = tuple(sorted((case_dir / "masks").glob("*.png"))) if (case_dir / "masks").is_dir() else ()
        test = common.held_out(case_dir, src, _TEST_WORDS) or not masks
        cases[image.stem] = Case(image.stem, image, masks, test)
    return [cases[k] for k in sorted(cases)]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as e:  # unreadable or truncated file: tell the user which one
        raise UserInputError(f"cannot read the PNG ({type(e).__name__}: {e})", path, "re-download this file") from None


def to_rgb(image: np.ndarray, where: Path) -> np.ndarray:
    """(H, W), (H, W, 3) or (H, W, 4) 8-bit -> (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.dtype != np.uint8:
        raise UserInputError(
            f"image has shape {image.shape} and type {image.dtype}, expected 8-bit grey or colour",
            where,
            "re-export it as an 8-bit PNG",
        )
    return np.ascontiguousarray(a[..., :3])


def masks_to_instances(masks: tuple[Path, ...], shape: tuple[int, int]) -> np.ndarray:
    """One nucleus per mask file, numbered 1..n in name order (later masks win overlaps)."""
    inst = np.zeros(shape, np.uint16)
    for k, mask_file in enumerate(masks, start=1):
        mask = _read_png(mask_file)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape != shape:
            raise UserInputError(
                f"mask is {mask.shape} but its image is {shape}", mask_file, "use the masks that belong to this image"
            )
        inst[mask > 0] = k
    return inst


def convert(src: StrPath, out_raw: StrPath, dataset_id: int = DEFAULT_ID, overwrite: bool = False) -> Path:
    """Convert the DSB 2018 folder ``src`` into ``out_raw/DatasetXXX_DSB2018Nuclei``; return that folder."""
    cases = SOURCE.read(src, find_cases)
    ds = common.prepare_dataset(out_raw, dataset_id, NAME, ".png")

    def write_nuclei(case: Case) -> None:
        rgb = to_rgb(_read_png(case.image), case.image)
        if case.masks:
            inst = masks_to_instances(case.masks, rgb.shape[:2])
            common.write_instance_png(inst, ds.instances(case.case_id, case.test))
            common.write_png(instances_to_semantic(inst), ds.label(case.case_id, case.test))
        common.write_png(rgb, ds.image(case.case_id, 0, case.test))

    def nuclei_files(case: Case) -> list[Path]:
        return ds.case_files(case.case_id, case.test, labelled=bool(case.masks), instances=True)

    common.convert_cases(ds, cases, "nuclei", overwrite, nuclei_files, write_nuclei)
    return common.finish_dataset(ds, cases, SOURCE, common.RGB_CHANNELS, dict(SEMANTIC_LABELS), DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__.splitlines()[0], DEFAULT_ID, "dsb2018")
    return common.run_cli(parser, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
