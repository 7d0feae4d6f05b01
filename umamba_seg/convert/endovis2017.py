"""EndoVis 2017 robotic instrument segmentation -> nnU-Net raw 2D RGB dataset (instrument types).

Why: the challenge download gives, per video, the left camera frames and one binary-ish mask
folder per instrument (``ground_truth/Left_Prograsp_Forceps_labels/frame000.png``, ...); nnU-Net
wants one label map per frame. This converter paints each instrument's pixels with its *type*,
the labels of U-Mamba's ``Dataset704_Endovis17``: bipolar forceps 1 (also "Maryland bipolar"),
prograsp forceps 2, large needle driver 3, vessel sealer 4, grasping retractor 5, monopolar curved
scissors 6, other instruments (``Other_labels``: e.g. a drop-in ultrasound probe) 7. The type comes
from the mask folder's name, whatever its Left/Right decoration. Mask values encode the instrument
part (shaft, wrist, clasper); every value above 0 counts as the instrument. Where two masks overlap
the later folder (alphabetical) wins.

Source layout (below SRC_DIR, any depth): ``instrument_dataset_<N>/left_frames/frame000.png`` and
``instrument_dataset_<N>/ground_truth/<Instrument>_labels/frame000.png`` (e.g. the extracted
``instrument_1_4_training`` and ``instrument_5_8_training`` zips). Sequences under a folder named
test go to ``imagesTs`` (their ground truth comes in another layout and is not converted).

Frames of 1920 x 1080 are cropped to the 1280 x 1024 camera image starting at pixel (x=320, y=28),
as the challenge describes (``crop=False`` keeps them whole). Case names are ``seq<N>_frameXXX``
(``test_seq<N>_frameXXX`` for test frames), so nnU-Net folds can still be grouped per video.
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

NAME = "Endovis17"
DEFAULT_ID = 704
LABELS = {
    "background": 0,
    "Bipolar Forceps": 1,
    "Prograsp Forceps": 2,
    "Large Needle Driver": 3,
    "Vessel Sealer": 4,
    "Grasping Retractor": 5,
    "Monopolar Curved Scissors": 6,
    "Other instrument": 7,
}
# keyword in the lower-cased mask folder name -> instrument type (first match wins)
_TYPE_KEYWORDS = (
    ("bipolar", 1),
    ("prograsp", 2),
    ("needle", 3),
    ("vessel", 4),
    ("retractor", 5),
    ("scissors", 6),
    ("monopolar", 6),
    ("other", 7),
)
_TEST_WORDS = re.compile(r"(^|[^a-z])test([^a-z]|$)", re.IGNORECASE)
FULL_FRAME_HW = (1080, 1920)
CROP_Y, CROP_X, CROP_H, CROP_W = 28, 320, 1024, 1280

#: what this converter reads: the download's name, what it must hold, where it comes from
SOURCE = common.Source(
    "EndoVis 2017",
    common.Hint(
        "EndoVis frames (instrument_dataset_<N>/left_frames/*.png)",
        "pass the folder where the EndoVis 2017 zips were extracted",
    ),
    common.Hint(
        "training frames with ground_truth/<Instrument>_labels folders",
        "extract the training zips (instrument_1_4_training, instrument_5_8_training)",
    ),
    reference="https://endovissub2017-roboticinstrumentsegmentation.grand-challenge.org/",
    license="see the challenge page",
)
#: dataset.json's description
DESCRIPTION = (
    "EndoVis 2017 robotic instrument segmentation converted by "
    "umamba-seg convert endovis2017; left frames, instrument types as labels"
)


@dataclass(frozen=True)
class Case:
    case_id: str
    frame: Path
    masks: tuple[tuple[int, Path], ...]  # (instrument type, mask file)
    test: bool


def instrument_type(folder_name: str) -> int:
    """Instrument type of a ground-truth folder such as ``Right_Large_Needle_Driver_labels``."""
    name = folder_name.lower()
    for keyword, label in _TYPE_KEYWORDS:
        if keyword in name:
            return label
    raise UserInputError(
        f"unknown instrument folder '{folder_name}'",
        folder_name,
        f"expected a name containing one of {[k for k, _ in _TYPE_KEYWORDS]}; rename it or remove it",
    )


def _sequence_number(folder: Path) -> str:
    m = re.search(r"(\d+)$", folder.name)
    return m.group(1) if m else folder.name


def find_cases(src: Path) -> list[Case]:
    """Every left frame below ``src`` with the masks of its sequence's instruments."""
    cases: dict[str, Case] = {}
    for frames_dir in sorted(p for p in src.rglob("left_frames") if p.is_dir()):
        seq_dir = frames_dir.parent
        test = common.held_out(frames_dir, src, _TEST_WORDS)
        gt_dir = seq_dir / "ground_truth"
        label_dirs = [] if test or not gt_dir.is_dir() else sorted(p for p in gt_dir.iterdir() if p.is_dir())
        types = [(instrument_type(d.name), d) for d in label_dirs]
        prefix = ("test_" if test else "") + f"seq{_sequence_number(seq_dir)}_"
        for frame in sorted(frames_dir.glob("*.png")):
            case_id = prefix + frame.stem
            if case_id in cases:
                raise UserInputError(
                    f"two sequences are both named {seq_dir.name}",
                    seq_dir,
                    "convert the training zips of each sequence only once",
                )
            masks = []
            for label, d in types:
                mask = d / frame.name
                if not mask.is_file():
                    raise UserInputError(
                        f"ground truth folder {d.name} lacks {frame.name}", d, "re-extract the sequence's ground truth"
                    )
                masks.append((label, mask))
            cases[case_id] = Case(case_id, frame, tuple(masks), test or not types)
    return [cases[k] for k in sorted(cases)]


def crop_frame(arr: np.ndarray, crop: bool = True) -> np.ndarray:
    """The 1280 x 1024 camera image out of a 1920 x 1080 video frame (other sizes unchanged)."""
    if crop and tuple(arr.shape[:2]) == FULL_FRAME_HW:
        return arr[CROP_Y : CROP_Y + CROP_H, CROP_X : CROP_X + CROP_W]
    return arr


def _read(path: Path, mode: str | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except OSError as e:
        raise UserInputError(f"cannot read image ({e})", path, "re-extract this file") from e


def type_map(masks: tuple[tuple[int, Path], ...], frame_hw: tuple[int, int], crop: bool = True) -> np.ndarray:
    """One uint8 label map from the per-instrument masks of a frame."""
    out = np.zeros(frame_hw, np.uint8)
    for label, path in masks:
        m = _read(path)
        if m.ndim == 3:  # some sequences store the grey part values as RGB
            m = m[..., 0]
        m = crop_frame(m, crop)
        if m.shape != frame_hw:
            raise UserInputError(
                f"mask is {m.shape[1]}x{m.shape[0]}, its frame {frame_hw[1]}x{frame_hw[0]}",
                path,
                "use the ground truth of this sequence",
            )
        out[m > 0] = label
    return out


def convert(
    src: StrPath, out_raw: StrPath, dataset_id: int = DEFAULT_ID, crop: bool = True, overwrite: bool = False
) -> Path:
    """Convert the EndoVis 2017 folder ``src`` into ``out_raw/DatasetXXX_Endovis17``; return that folder."""
    cases = SOURCE.read(src, find_cases)
    ds = common.prepare_dataset(out_raw, dataset_id, NAME, ".png")

    def write_frame(case: Case) -> None:
        rgb = np.ascontiguousarray(crop_frame(_read(case.frame, "RGB"), crop))
        if not case.test:
            common.write_png(type_map(case.masks, rgb.shape[:2], crop), ds.label(case.case_id))
        common.write_png(rgb, ds.image(case.case_id, 0, case.test))

    def frame_files(case: Case) -> list[Path]:
        return ds.case_files(case.case_id, case.test, labelled=not case.test)

    common.convert_cases(ds, cases, "EndoVis17", overwrite, frame_files, write_frame)
    return common.finish_dataset(ds, cases, SOURCE, common.RGB_CHANNELS, LABELS, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__.splitlines()[0], DEFAULT_ID, "endovis2017")
    parser.add_argument("--no-crop", action="store_true", help="keep 1920x1080 frames whole")
    return common.run_cli(parser, convert, argv, lambda args: dict(crop=not args.no_crop))


if __name__ == "__main__":
    sys.exit(main())
