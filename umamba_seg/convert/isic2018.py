"""ISIC 2018 Task 1 (and ISIC 2017 Part 1) skin lesion photographs -> nnU-Net raw 2D RGB dataset.

Why: the download holds JPEG photographs and 0/255 PNG masks in separate folders; nnU-Net wants
lossless images (it refuses JPEG) named ``<case>_0000.png`` and masks with labels 0/1.

Source layout (the official zips extracted side by side below SRC_DIR; any depth):

* ``ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg`` and
  ``ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png``
* likewise ``..._Validation_Input`` / ``..._Validation_GroundTruth`` and ``..._Test_Input`` /
  ``..._Test_GroundTruth``;
* ISIC 2017: ``ISIC-2017_Training_Data/ISIC_0000000.jpg`` (its ``*_superpixels.png`` are ignored) and
  ``ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png``;
* VM-UNet's released 7:3 split: ``train/images/ISIC_0000000.png`` with ``train/masks/ISIC_0000000.png``
  and the same under ``val/`` (a file in a folder named ``masks`` is the mask of the image with its name).

An image goes to ``imagesTs`` when a folder in its path names it val, validation or test data, else to
``imagesTr``; masks of test images go to ``labelsTs`` (``umamba-seg evaluate -r labelsTs`` uses them).
Images without a mask go to ``imagesTs``. One RGB PNG per case holds the three channels (R, G, B), as
nnU-Net's natural-image reader expects. ``max_side`` optionally shrinks large photographs (the
longer side to at most that many pixels; bilinear for images, nearest for masks).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from umamba_seg.convert import common
from umamba_seg.convert.common import ImageCase, StrPath
from umamba_seg.errors import UserInputError

NAME = "ISIC2018"
DEFAULT_ID = 705
LABELS = {"background": 0, "lesion": 1}
_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png")
_TEST_WORDS = re.compile(r"(^|[^a-z])(val|validation|test)([^a-z]|$)", re.IGNORECASE)

#: what this converter reads: the download's name, what it must hold, where it comes from
SOURCE = common.Source(
    "ISIC",
    common.Hint("ISIC photographs (ISIC_*.jpg)", "pass the folder where the ISIC zips were extracted"),
    common.Hint(
        "training masks (ISIC_*_segmentation.png outside validation/test folders)",
        "extract the Training_GroundTruth zip next to the Training_Input one",
    ),
    reference="https://challenge.isic-archive.com/data/",
    license="CC-BY-NC 4.0 (see the ISIC archive)",
)
#: dataset.json's description
DESCRIPTION = (
    "ISIC skin lesion boundary segmentation converted by umamba-seg convert isic2018; "
    "JPEG photographs stored as RGB PNG, masks 0/255 -> 0/1"
)


def find_cases(src: Path) -> list[ImageCase]:
    """Pair every ``ISIC_*`` photograph with its ``*_segmentation.png`` mask."""
    masks: dict[tuple[str, bool], Path] = {}
    images: dict[str, Path] = {}
    for p in sorted(src.rglob("ISIC_*")):
        if not p.is_file():
            continue
        stem, ending = p.name[: -len(p.suffix)], p.suffix.lower()
        if ending == ".png" and (stem.endswith("_segmentation") or p.parent.name.lower() == "masks"):
            masks[(stem.removesuffix("_segmentation"), common.held_out(p, src, _TEST_WORDS))] = p
        elif ending in _IMAGE_ENDINGS and "_" not in stem[len("ISIC_") :]:
            if stem in images:
                raise UserInputError(
                    f"image {stem} appears twice ({images[stem]} and {p})",
                    p,
                    "extract each ISIC zip once, or convert 2017 and 2018 separately",
                )
            images[stem] = p
    cases = []
    for stem, image in sorted(images.items()):
        test = common.held_out(image, src, _TEST_WORDS)
        mask = masks.get((stem, test))
        cases.append(ImageCase(stem, image, mask, test or mask is None))
    return cases


def _resize(img, max_side: int | None, resample):
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(size, resample)


def read_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """The photograph as (H, W, 3) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = _resize(im.convert("RGB"), max_side, Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except OSError as e:
        raise UserInputError(f"cannot read image ({e})", path, "re-download this file") from e


def read_mask(
    path: Path, size_hw: tuple[int, int], original_hw: tuple[int, int], max_side: int | None = None
) -> np.ndarray:
    """The 0/255 mask as 0/1 uint8, checked against the photograph's size."""
    from PIL import Image

    with Image.open(path) as im:
        mask = im.convert("L")
        if (mask.size[1], mask.size[0]) != original_hw:
            raise UserInputError(
                f"mask is {mask.size[0]}x{mask.size[1]} but its image is {original_hw[1]}x{original_hw[0]}",
                path,
                "use the ground truth of the same ISIC release as the images",
            )
        mask = _resize(mask, max_side, Image.Resampling.NEAREST)
        arr = np.asarray(mask)
    assert arr.shape == size_hw
    return (arr > 127).astype(np.uint8)


def _original_hw(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def convert(
    src: StrPath, out_raw: StrPath, dataset_id: int = DEFAULT_ID, max_side: int | None = None, overwrite: bool = False
) -> Path:
    """Convert the ISIC folder ``src`` into ``out_raw/DatasetXXX_ISIC2018``; return that folder."""
    cases = SOURCE.read(src, find_cases)
    ds = common.prepare_dataset(out_raw, dataset_id, NAME, ".png")

    def write_photograph(case: ImageCase) -> None:
        rgb = read_rgb(case.image, max_side)
        if case.label is not None:
            mask = read_mask(case.label, rgb.shape[:2], _original_hw(case.image), max_side)
            common.write_png(mask, ds.label(case.case_id, case.test))
        common.write_png(rgb, ds.image(case.case_id, 0, case.test))

    def photograph_files(case: ImageCase) -> list[Path]:
        return ds.case_files(case.case_id, case.test, labelled=case.label is not None)

    common.convert_cases(ds, cases, "ISIC", overwrite, photograph_files, write_photograph)
    return common.finish_dataset(ds, cases, SOURCE, common.RGB_CHANNELS, LABELS, DESCRIPTION)


def _options(args) -> dict:
    if args.max_side is not None and args.max_side < 8:
        raise UserInputError(f"--max-side {args.max_side} is too small", "--max-side", "use 256 or more")
    return dict(max_side=args.max_side)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__.splitlines()[0], DEFAULT_ID, "isic2018")
    parser.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="shrink photographs so that the longer side is at most this many pixels",
    )
    return common.run_cli(parser, convert, argv, _options)


if __name__ == "__main__":
    sys.exit(main())
