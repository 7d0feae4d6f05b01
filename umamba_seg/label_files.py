"""Read and write label maps (semantic or instance) in any format nnU-Net reads, atomically.

Reading goes through nnunetv2's reader-writer classes, chosen from the file ending the way
nnU-Net chooses them, so a label map's geometry (spacing, origin, direction, a TIFF's spacing
side file) comes back in the properties nnU-Net's writers restore it from. Writing goes through
a scratch folder next to the output: the writer writes the final name (and any side file) there,
then each file is renamed into place, the label map last, so an interrupted run leaves only
whole files and a side file never carries a temporary name.

Instance maps need wider integers than nnU-Net's writers give (they cast to uint8 below 255
values and to uint16 above): :func:`write_instance_map` writes uint16, or uint32 when there are
more than 65535 instances, for the SimpleITK formats (``.nii.gz``, ``.nrrd``, ``.mha``, ...) and
TIFF; a PNG holds at most uint16 (more instances are an error naming ``.tif`` as the fix); other
formats fall back to their nnU-Net writer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from umamba_seg.errors import UserInputError
from umamba_seg.image_files import check_image_file

UINT16_MAX = np.iinfo(np.uint16).max


def supported_label_endings() -> list[str]:
    """Every file ending one of nnU-Net's reader-writers claims, longest first."""
    from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES

    endings = {e.lower() for io in LIST_OF_IO_CLASSES for e in io.supported_file_endings}
    return sorted(endings, key=len, reverse=True)


def list_label_files(folder: Path) -> tuple[list[Path], str]:
    """The label maps of ``folder`` (hidden files skipped) and their one file ending."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError("the input folder does not exist", folder, "pass a folder of label maps with -i")
    endings = supported_label_endings()
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            ending = next((e for e in endings if p.name.lower().endswith(e)), None)
            if ending is not None:
                found.setdefault(ending, []).append(p)
    found.pop(".json", None)  # never a label map (TIFF side files)
    if not found:
        raise UserInputError(
            "no label maps in the folder", folder, f"put files ending in one of {', '.join(sorted(endings))} there"
        )
    if len(found) > 1:
        raise UserInputError(
            f"the folder mixes file endings ({', '.join(sorted(found))})", folder, "keep one file format per folder"
        )
    ending, files = next(iter(found.items()))
    return files, ending


def reader_writer_for(ending: str, example: Path, dataset: dict | None = None):
    """An instance of the nnunetv2 reader-writer nnU-Net would use for ``example``: dataset.json's
    choice when ``dataset`` is given, else the first reader that opens the file ending."""
    from nnunetv2.imageio.reader_writer_registry import (
        determine_reader_writer_from_dataset_json,
        determine_reader_writer_from_file_ending,
    )

    try:
        if dataset is not None:
            io_class = determine_reader_writer_from_dataset_json(dataset, str(example), verbose=False)
        else:
            io_class = determine_reader_writer_from_file_ending(
                ending, str(example), allow_nonmatching_filename=True, verbose=False
            )
    except RuntimeError:
        raise UserInputError(
            f"no nnU-Net reader can open {ending} files",
            example,
            "convert the label maps to .nii.gz, .nrrd, .mha, .png or .tif",
        ) from None
    return io_class()


def read_label_map(rw, path: Path, role: str = "label map") -> tuple[np.ndarray, dict]:
    """A label map as an integer array in nnU-Net's axis order ((1, y, x) for 2D) and its properties."""
    check_image_file(path)
    try:
        seg, props = rw.read_seg(str(path))
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's fault
        raise UserInputError(
            f"cannot read the {role} ({type(e).__name__}: {e})", path, "check that the file is a valid label image"
        ) from None
    seg = seg[0]
    if not np.isfinite(seg).all() or not np.array_equal(seg, np.floor(seg)) or (seg.size and seg.min() < 0):
        raise UserInputError(
            f"the {role} holds values that are not whole non-negative numbers",
            path,
            "pass label maps (0 background, one integer per class or cell)",
        )
    return seg.astype(np.int64), props


def _write_through_scratch(final: Path, write: Callable[[Path], None]) -> None:
    """Let ``write(path)`` write ``final``'s name (plus side files) into a scratch folder, then
    rename every file it wrote into ``final``'s folder, ``final`` itself last."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        write(scratch / final.name)
        produced = sorted(scratch.iterdir(), key=lambda p: p.name == final.name)
        for p in produced:
            os.replace(p, final.parent / p.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_label_map(rw, seg: np.ndarray, final: Path, props: dict) -> None:
    """Write a semantic label map (nnU-Net axis order, (1, y, x) for 2D) with nnU-Net's writer."""
    _write_through_scratch(final, lambda path: rw.write_seg(seg, str(path), props))


def instance_dtype(instances: np.ndarray) -> type:
    """uint16, or uint32 when the largest instance id does not fit."""
    return np.uint16 if int(np.max(instances, initial=0)) <= UINT16_MAX else np.uint32


def _write_instances(rw, seg: np.ndarray, path: Path, props: dict) -> None:
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    dtype = instance_dtype(seg)
    data = seg.astype(dtype)
    ending = path.name.lower()
    if isinstance(rw, SimpleITKIO) and "sitk_stuff" in props:
        import SimpleITK as sitk

        stuff = props["sitk_stuff"]
        image = sitk.GetImageFromArray(data[0] if len(stuff["spacing"]) == 2 else data)
        image.SetSpacing(stuff["spacing"])
        image.SetOrigin(stuff["origin"])
        image.SetDirection(stuff["direction"])
        if "original_orientation" in stuff:  # SimpleITKIOWithReorient: back to the file's orientation
            image = sitk.DICOMOrient(image, stuff["original_orientation"])
        sitk.WriteImage(image, str(path), True)
    elif isinstance(rw, Tiff3DIO):
        import tifffile
        from batchgenerators.utilities.file_and_folder_operations import save_json

        tifffile.imwrite(path, data, compression="zlib")
        stem = path.name[: path.name.rindex(".")]
        save_json({"spacing": props["spacing"]}, str(path.parent / f"{stem}.json"))
    elif isinstance(rw, NaturalImage2DIO) and ending.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(path, data[0], compression="zlib")
    elif isinstance(rw, NaturalImage2DIO) and ending.endswith(".png"):
        if dtype != np.uint16:
            raise UserInputError(
                f"{int(seg.max())} instances do not fit a 16-bit PNG",
                path,
                "predict from .tif images (instance maps up to 2^32 - 1)",
            )
        from PIL import Image

        Image.fromarray(data[0]).save(path, format="PNG")
    else:
        if dtype != np.uint16:
            raise UserInputError(
                f"{int(seg.max())} instances do not fit this format's 16-bit writer",
                path,
                "use .nii.gz, .nrrd, .mha or .tif",
            )
        rw.write_seg(data, str(path), props)


def write_instance_map(rw, instances: np.ndarray, final: Path, props: dict) -> None:
    """Write an instance map (nnU-Net axis order) as uint16, or uint32 when needed, atomically."""
    _write_through_scratch(final, lambda path: _write_instances(rw, np.asarray(instances), path, props))
