"""Is an image file whole and what its name says? Checked before any reader sees it.

SimpleITK, which nnunetv2 reads NIfTI with, fills the missing part of a truncated ``.nii``
or ``.nii.gz`` with zeros and reports success; an empty file or a PNG renamed ``.nii.gz``
surfaces as a bare ``RuntimeError`` deep inside nnunetv2. :func:`check_image_file` turns
each of these into one :class:`UserInputError` naming the file:

- empty files, and content that does not match the ending (magic bytes);
- NIfTI: the gzip stream is decompressed to its end-of-stream marker (CRC checked) and
  must hold the header's ``vox_offset + voxels * bytes per voxel``; uncompressed likewise;
- more than ``max_dim`` dimensions (a 4D volume where 3D is expected), several components
  per voxel, or a voxel spacing that is not positive (readers turn 0 into 1.0), from the
  header (NIfTI, MetaImage, NRRD);
- PNG: the chunk CRCs (Pillow's ``verify``). Other formats' readers raise on truncation
  themselves; callers turn that into a one-line error too.

A file that passed is remembered by (path, size, mtime) for the rest of the process.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from umamba_seg.errors import UserInputError

NIFTI_ENDINGS = (".nii.gz", ".nii")
ITK_HEADER_ENDINGS = (".mha", ".mhd", ".nrrd", ".nhdr")
_MAGIC = {
    ".nii.gz": (b"\x1f\x8b",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".bmp": (b"BM",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".tif": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    ".nrrd": (b"NRRD",),
    ".npy": (b"\x93NUMPY",),
}
_LOOKS_LIKE = (
    (b"\x89PNG", "a PNG image"),
    (b"\x1f\x8b", "gzip data"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"NRRD", "an NRRD file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"BM", "a BMP image"),
    (b"ObjectType", "a MetaImage header"),
    (b"\x93NUMPY", "a numpy array"),
)
_CHUNK = 1 << 20
_checked: dict[tuple[str, int, int], None] = {}


def _ending(path: Path) -> str:
    name = path.name.lower()
    for e in sorted(set(_MAGIC) | set(NIFTI_ENDINGS) | set(ITK_HEADER_ENDINGS), key=len, reverse=True):
        if name.endswith(e):
            return e
    return path.suffix.lower()


def _looks_like(head: bytes) -> str:
    for magic, what in _LOOKS_LIKE:
        if head.startswith(magic):
            return f" (it holds {what})"
    return ""


def _bad(what: str, path: Path, fix: str = "re-export or re-copy the file") -> UserInputError:
    return UserInputError(what, path, fix)


def _gzip_length(path: Path) -> tuple[int, bytes]:
    """Decompressed length and first bytes of a gzip file; raises if the stream is cut short or corrupt."""
    total, head = 0, b""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while not d.eof:
            chunk = f.read(_CHUNK)
            if not chunk:
                raise _bad(
                    "unreadable or truncated file (the compressed data ends before its end-of-stream marker)", path
                )
            try:
                data = d.decompress(chunk)
            except zlib.error as e:
                raise _bad(f"unreadable or corrupt compressed data ({e})", path) from None
            total += len(data)
            if len(head) < _NIFTI_HEADER_BYTES:
                head += data[: _NIFTI_HEADER_BYTES - len(head)]
    return total, head


_NIFTI_HEADER_BYTES = 544


def _raw_pixdim(head: bytes) -> tuple[float, ...] | None:
    """pixdim[1..ndim] exactly as stored (nibabel and ITK replace zeros by 1.0 when they load)."""
    import struct

    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dim = struct.unpack(order + "8h", head[40:56])
            pix = struct.unpack(order + "8f", head[76:108])
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dim = struct.unpack(order + "8q", head[16:80])
            pix = struct.unpack(order + "8d", head[104:168])
            break
    else:
        return None
    n = max(0, min(int(dim[0]), 3))
    return tuple(float(x) for x in pix[1 : 1 + n])


def _check_nifti(path: Path, ending: str, max_dim: int) -> None:
    import nibabel as nib
    import numpy as np

    if ending == ".nii.gz":
        available, head = _gzip_length(path)
    else:
        available = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_NIFTI_HEADER_BYTES)
    pixdim = _raw_pixdim(head)
    if pixdim is not None:
        _check_spacing(tuple(abs(z) if z < 0 else z for z in pixdim), path)
    try:
        header = nib.load(str(path)).header
        shape = tuple(int(s) for s in header.get_data_shape())
        voxels = int(np.prod(shape, dtype=np.int64))
        expected = int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize
    except Exception as e:  # noqa: BLE001 - any header nibabel cannot parse is a bad file
        raise _bad(f"not a readable NIfTI file ({type(e).__name__}: {str(e).strip()[:100]})", path) from None
    if available < expected:
        raise _bad(
            f"unreadable or truncated file (holds {available} of the {expected} bytes its header announces)", path
        )
    dims = len(shape)
    while dims > max_dim and shape[dims - 1] == 1:
        dims -= 1
    if dims > max_dim:
        raise _bad(
            f"image is {dims}D {shape} where at most {max_dim}D is expected",
            path,
            "split 4D volumes into one 3D file per channel (_0000, _0001, ...)",
        )


def _check_spacing(spacing: tuple[float, ...], path: Path) -> None:
    """A zero, negative or non-finite voxel size (readers would silently make it 1.0)."""
    if any(not (0 < z < float("inf")) for z in spacing):
        raise _bad(
            f"voxel spacing {spacing} in the header is not positive",
            path,
            "write the image with its real voxel size (mm)",
        )


def _check_itk_header(path: Path, max_dim: int) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1][:100] if str(e).strip() else "unreadable header"
        raise _bad(f"unreadable image header ({msg})", path) from None
    dim, comps = reader.GetDimension(), reader.GetNumberOfComponents()
    _check_spacing(tuple(reader.GetSpacing())[:3], path)
    if dim > max_dim or comps > 1:
        raise _bad(
            f"image is {dim}D"
            + (f" with {comps} components per voxel" if comps > 1 else "")
            + f" where at most {max_dim}D with one component is expected",
            path,
            "split it into one file per channel (_0000, _0001, ...)",
        )


def check_image_file(path: str | Path, max_dim: int = 3) -> None:
    """Raise :class:`UserInputError` naming ``path`` if it is missing, empty, truncated, not the
    format its ending says, or has more than ``max_dim`` dimensions."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise _bad(f"cannot read the file ({e.strerror})", path, "check the path and its permissions") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _checked:
        return
    if not path.is_file():
        raise _bad("not a regular file", path, "pass image files")
    if st.st_size == 0:
        raise _bad("empty file (0 bytes)", path)
    ending = _ending(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise _bad(f"cannot read the file ({e.strerror})", path, "check its permissions") from None
    magics = _MAGIC.get(ending)
    if magics is not None and not any(head.startswith(m) for m in magics):
        raise _bad(f"not a {ending} file{_looks_like(head)}", path, f"convert it to {ending} or rename it")
    if (
        ending == ".nii"
        and int.from_bytes(head[:4], "little") not in (348, 540)
        and int.from_bytes(head[:4], "big") not in (348, 540)
    ):
        raise _bad(f"not a .nii file{_looks_like(head)}", path, "convert it to NIfTI or rename it")
    if ending in NIFTI_ENDINGS:
        _check_nifti(path, ending, max_dim)
    elif ending in ITK_HEADER_ENDINGS:
        _check_itk_header(path, max_dim)
    elif ending == ".png":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - Pillow raises several types for broken files
            raise _bad(f"truncated or corrupt PNG ({type(e).__name__}: {str(e)[:80]})", path) from None
    _checked[key] = None
