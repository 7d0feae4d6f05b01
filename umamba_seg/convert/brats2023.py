"""BraTS 2023 (and 2021-style) brain tumour MRI -> nnU-Net raw dataset with four channels.

Why: each BraTS case is a folder of four co-registered MRI sequences plus one label file;
nnU-Net wants ``<case>_000{0..3}.nii.gz`` channels and consecutive labels.

Source layouts understood (one folder per case, anywhere below SRC_DIR):

* BraTS 2023 (GLI, and MEN/MET/PED/SSA which name files the same way):
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``,
  labels 1 = necrotic tumour core (NETC), 2 = surrounding FLAIR hyperintensity / edema (SNFH),
  3 = enhancing tumour (ET): already consecutive, kept as they are.
* BraTS 2021 and earlier: ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``,
  labels 1, 2, 4: remapped 4 -> 3, which gives exactly the 2023 meaning of 1, 2, 3.

Channels: 0 = T1 (t1n / t1), 1 = T1 contrast (t1c / t1ce), 2 = T2 (t2w / t2), 3 = FLAIR (t2f / flair).
Cases without a label file (validation data) go to ``imagesTs``.

``dataset.json`` describes the evaluated regions, as BraTS scores them, for nnU-Net's region-based
training (sigmoid outputs, one per region): whole tumour (1, 2, 3), tumour core (1, 3), enhancing
tumour (3), with ``regions_class_order`` (2, 1, 3) so that predictions come back as BraTS 2023 labels
(WT painted 2, then TC painted 1, then ET painted 3). ``--no-regions`` writes the three plain labels
instead (softmax training). Predictions for a BraTS 2021 submission need 3 -> 4 again: see
:func:`to_brats2021_labels`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umamba_seg.convert import common
from umamba_seg.convert.common import StrPath
from umamba_seg.errors import UserInputError

NAME = "BraTS2023"
DEFAULT_ID = 706
CHANNEL_NAMES = {0: "T1", 1: "T1C", 2: "T2W", 3: "T2F"}
PLAIN_LABELS = {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}
REGION_LABELS = {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (1, 3), "enhancing tumor": (3,)}
REGIONS_CLASS_ORDER = (2, 1, 3)

#: what this converter reads: the download's name, what it must hold, where it comes from
SOURCE = common.Source(
    "BraTS",
    common.Hint(
        "BraTS case folders (files like <case>-t1n.nii.gz or <case>_t1.nii.gz)",
        "pass the folder that holds the extracted case folders",
    ),
    training=None,  # validation cases alone convert (to imagesTs)
    reference="BraTS 2023 challenge on https://www.synapse.org (see datasets.md)",
    license="BraTS data use agreement (see the challenge page)",
)


@dataclass(frozen=True)
class Naming:
    """How one BraTS release names a case's files: separator, sequences in channel order, label."""

    release: str
    sep: str
    sequences: tuple[str, str, str, str]
    seg: str
    label_values: frozenset[int]


NAMINGS = (
    Naming("2023", "-", ("t1n", "t1c", "t2w", "t2f"), "seg", frozenset({0, 1, 2, 3})),
    Naming("2021", "_", ("t1", "t1ce", "t2", "flair"), "seg", frozenset({0, 1, 2, 4})),
)


@dataclass(frozen=True)
class Case:
    case_id: str
    images: tuple[Path, Path, Path, Path]
    label: Path | None
    naming: Naming

    @property
    def test(self) -> bool:
        """Without a label file (validation data): ``imagesTs``."""
        return self.label is None


def _find_file(folder: Path, case_id: str, sep: str, key: str) -> Path | None:
    for ending in (".nii.gz", ".nii"):
        p = folder / f"{case_id}{sep}{key}{ending}"
        if p.is_file():
            return p
    return None


def find_cases(src: Path) -> list[Case]:
    """Every case folder below ``src``, recognised by its first sequence's file name."""
    cases: dict[str, Case] = {}
    for naming in NAMINGS:
        first = naming.sequences[0]
        for pattern in (f"*{naming.sep}{first}.nii.gz", f"*{naming.sep}{first}.nii"):
            for hit in sorted(src.rglob(pattern)):
                folder = hit.parent
                case_id = folder.name
                if not hit.name.startswith(case_id + naming.sep) or case_id in cases:
                    continue
                images = []
                for seq in naming.sequences:
                    p = _find_file(folder, case_id, naming.sep, seq)
                    if p is None:
                        raise UserInputError(
                            f"case {case_id} lacks its {seq} sequence ({case_id}{naming.sep}{seq}.nii.gz)",
                            folder,
                            "re-extract the download or remove that case folder",
                        )
                    images.append(p)
                label = _find_file(folder, case_id, naming.sep, naming.seg)
                cases[case_id] = Case(case_id, tuple(images), label, naming)
    return [cases[k] for k in sorted(cases)]


def remap_labels(seg: np.ndarray, naming: Naming, where: Path) -> np.ndarray:
    """Check the label values of one release and map them to 0, 1, 2, 3 (uint8)."""
    values = np.unique(seg).tolist()  # floats stay floats: a 0.5 must not pass as 0
    unexpected = sorted(v for v in values if v not in naming.label_values)
    if unexpected:
        raise UserInputError(
            f"label file has values {unexpected}, BraTS {naming.release} uses {sorted(naming.label_values)}",
            where,
            "check that this is a BraTS label file and not a prediction or another dataset",
        )
    out = seg.astype(np.uint8)
    if 4 in naming.label_values:
        out[seg == 4] = 3
    return out


def to_brats2021_labels(seg: np.ndarray) -> np.ndarray:
    """Our 0..3 labels back to the BraTS 2021 convention (enhancing tumour = 4)."""
    out = np.asarray(seg).astype(np.uint8).copy()
    out[out == 3] = 4
    return out


def _convert_label(case: Case, dst: Path) -> None:
    import SimpleITK as sitk

    seg_img = sitk.ReadImage(str(case.label))
    ref = sitk.ImageFileReader()
    ref.SetFileName(str(case.images[0]))
    ref.ReadImageInformation()
    if tuple(seg_img.GetSize()) != tuple(ref.GetSize()) or not np.allclose(
        seg_img.GetSpacing(), ref.GetSpacing(), atol=1e-4
    ):
        raise UserInputError(
            f"label grid {seg_img.GetSize()} spacing {seg_img.GetSpacing()} differs from the "
            f"images' {ref.GetSize()} spacing {ref.GetSpacing()}",
            case.label,
            "use the label file that belongs to this case",
        )
    seg = remap_labels(sitk.GetArrayFromImage(seg_img), case.naming, case.label)
    out = sitk.GetImageFromArray(seg)
    out.CopyInformation(seg_img)
    common.write_sitk(out, dst)


def _convert_image(src: Path, dst: Path) -> None:
    if src.name.endswith(".nii.gz"):
        common.copy_file(src, dst)
    else:
        import SimpleITK as sitk

        common.write_sitk(sitk.ReadImage(str(src)), dst)


def convert(
    src: StrPath, out_raw: StrPath, dataset_id: int = DEFAULT_ID, regions: bool = True, overwrite: bool = False
) -> Path:
    """Convert the BraTS folder ``src`` into ``out_raw/DatasetXXX_BraTS2023``; return that folder."""
    labels, extra = (REGION_LABELS, dict(regions_class_order=REGIONS_CLASS_ORDER)) if regions else (PLAIN_LABELS, {})
    cases = SOURCE.read(src, find_cases)
    ds = common.prepare_dataset(out_raw, dataset_id, NAME, ".nii.gz")

    def write_case(case: Case) -> None:
        if not case.test:
            _convert_label(case, ds.label(case.case_id))
        for ch, image in enumerate(case.images):
            _convert_image(image, ds.image(case.case_id, ch, case.test))

    def case_files(case: Case) -> list[Path]:
        return ds.case_files(case.case_id, case.test, channels=len(CHANNEL_NAMES), labelled=not case.test)

    common.convert_cases(ds, cases, "BraTS", overwrite, case_files, write_case)
    releases = sorted({c.naming.release for c in cases})
    description = (
        f"BraTS {'/'.join(releases)} converted by umamba-seg convert brats2023; labels 1 NETC, "
        f"2 SNFH, 3 ET (BraTS 2023 meaning; 2021-style 4 mapped to 3)"
    )
    return common.finish_dataset(ds, cases, SOURCE, CHANNEL_NAMES, labels, description, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = common.build_parser(__doc__.splitlines()[0], DEFAULT_ID, "brats2023")
    parser.add_argument(
        "--no-regions", action="store_true", help="plain labels NETC/SNFH/ET instead of BraTS regions WT/TC/ET"
    )
    return common.run_cli(parser, convert, argv, lambda args: dict(regions=not args.no_regions))


if __name__ == "__main__":
    sys.exit(main())
