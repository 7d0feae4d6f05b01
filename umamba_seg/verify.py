"""``--verify``: check a raw dataset up front and report every problem, one line each.

Extends nnunetv2's ``verify_dataset_integrity`` (which stops at the first failed assert and
prints multi-line messages): our checks run first and collect every problem with the file
and the fix; when they find none, nnunetv2's own check runs as well. The same per-case checks
explain failures that surface later (e.g. inside preprocessing).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names
from umamba_seg.case_files import CHANNEL_NAME, allowed_file_counts
from umamba_seg.errors import UserInputError, UserInputErrors
from umamba_seg.json_files import read_json
from umamba_seg.log import show_progress
from umamba_seg.safe_paths import check_dataset_entries

REQUIRED_KEYS = ("labels", "numTraining", "file_ending")
# the file endings nnunetv2's image readers take (its reader registry), longest first
KNOWN_ENDINGS = tuple(
    sorted({e for io in LIST_OF_IO_CLASSES for e in io.supported_file_endings}, key=lambda e: (-len(e), e))
)
GEOMETRY_RTOL = 1e-3
# no imaging modality stores intensities this large; their squares overflow float32 statistics
# (the fingerprint's and z-score's std), which turns every preprocessed case into NaN
MAX_ABS_INTENSITY = 1e10

log = logging.getLogger(__name__)


def _ending(name: str) -> str:
    for e in KNOWN_ENDINGS:
        if name.lower().endswith(e):
            return e
    return "".join(Path(name).suffixes)


def load_dataset_json(raw_dataset: Path) -> dict:
    """dataset.json with its required keys checked."""
    f = raw_dataset / "dataset.json"
    if not f.is_file():
        raise UserInputError(
            "dataset.json not found",
            f,
            "create it (nnU-Net v2 format: channel_names, labels, numTraining, file_ending)",
        )
    ds = read_json(f, "fix the syntax")
    if not isinstance(ds, dict):
        raise UserInputError("dataset.json is not a JSON object", f, 'write it as {"channel_names": ..., ...}')
    missing = [k for k in REQUIRED_KEYS if k not in ds]
    if "channel_names" not in ds and "modality" not in ds:
        missing.insert(0, "channel_names")
    if missing:
        raise UserInputError(
            f"dataset.json lacks key(s) {', '.join(missing)}", f, "add them (see nnU-Net's dataset_format.md)"
        )
    check_dataset_json_types(ds, f)
    check_dataset_entries(ds, raw_dataset, f)  # file_ending, case identifiers and paths stay inside
    check_dataset_json_names(ds, f)
    return ds


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_dataset_json_types(ds: dict, f: Path) -> None:
    """The types nnunetv2 assumes: labels {name: int or [int, ...]}, channel_names {"0": name},
    numTraining an int, file_ending a string such as ".nii.gz"."""
    from umamba_seg.safe_paths import check_file_ending

    labels = ds["labels"]
    if not isinstance(labels, dict) or not labels:
        raise UserInputError(
            f"'labels' must be an object {{name: value}}, not {type(labels).__name__}",
            f,
            'write e.g. "labels": {"background": 0, "tumor": 1}',
        )
    for name, v in labels.items():
        values = v if isinstance(v, list) and v else [v]
        bad = [x for x in values if not _is_int(x) or x < 0]
        if bad:
            raise UserInputError(
                f"label '{name}' has value {bad[0]!r}, not a non-negative integer",
                f,
                "label values are the integers stored in the label maps",
            )
    channels = ds.get("channel_names", ds.get("modality"))
    key = "channel_names" if "channel_names" in ds else "modality"
    if not isinstance(channels, dict) or not channels or not all(str(k).isdigit() for k in channels):
        raise UserInputError(
            f"'{key}' must be an object {{\"0\": name, ...}}, not {channels!r:.60}",
            f,
            'write e.g. "channel_names": {"0": "CT"}',
        )
    if sorted(int(k) for k in channels) != list(range(len(channels))):
        raise UserInputError(
            f"'{key}' keys {sorted(channels)} are not 0..{len(channels) - 1}",
            f,
            "number the channels 0, 1, ... as in the _0000, _0001 file suffixes",
        )
    if not _is_int(ds["numTraining"]) or ds["numTraining"] < 0:
        raise UserInputError(
            f"'numTraining' must be a whole number, not {ds['numTraining']!r}",
            f,
            'set it to the number of training cases, e.g. "numTraining": 20',
        )
    check_file_ending(ds["file_ending"], f)


def _channel_count(ds: dict) -> int:
    return len(ds.get("channel_names", ds.get("modality", {})))


def _files_with_ending(folder: Path, ending: str, problems: list[UserInputError]) -> Iterator[Path]:
    """The visible files of ``folder`` in name order that end in ``ending``; each other file
    is a problem (appended to ``problems``) and skipped."""
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name.endswith(ending):
            yield p
        else:
            problems.append(
                UserInputError(
                    f"file ending '{_ending(p.name)}' is not the dataset's '{ending}'",
                    p,
                    f"convert it to {ending} or fix file_ending in dataset.json",
                )
            )


def _label_values(ds: dict) -> set[int]:
    vals: set[int] = set()
    for v in ds["labels"].values():
        vals.update(v if isinstance(v, (list, tuple)) else [v])
    return {int(v) for v in vals}


def collect_file_problems(raw_dataset: Path, ds: dict) -> tuple[list[UserInputError], dict[str, dict]]:
    """Naming problems (missing/extra channels, wrong endings, labels without images, numTraining).

    Returns the problems and the cases ``{case: {"images": [...], "label": path}}`` that are complete.
    """
    problems: list[UserInputError] = []
    ending = ds["file_ending"]
    n_ch = _channel_count(ds)
    images_dir, labels_dir = raw_dataset / "imagesTr", raw_dataset / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            problems.append(UserInputError("folder missing", d, "create it with the training files"))
    if problems:
        return problems, {}
    channels: dict[str, dict[int, Path]] = {}
    for p in _files_with_ending(images_dir, ending, problems):
        m = CHANNEL_NAME.match(p.name[: -len(ending)])
        if not m:
            problems.append(
                UserInputError("image name lacks the _XXXX channel suffix", p, f"rename it to <case>_0000{ending}")
            )
            continue
        channels.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
    labels = {p.name[: -len(ending)]: p for p in _files_with_ending(labels_dir, ending, problems)}
    cases: dict[str, dict] = {}
    counts = allowed_file_counts(n_ch, [ending])
    for case, chans in channels.items():
        n_files = len(chans) if len(chans) in counts and set(chans) == set(range(len(chans))) else n_ch
        for c in range(n_files):
            if c not in chans:
                problems.append(
                    UserInputError(
                        f"channel {c:04d} of case '{case}' is missing",
                        images_dir / f"{case}_{c:04d}{ending}",
                        f"every case needs {n_ch} channel file(s) as in channel_names",
                    )
                )
        for c in sorted(set(chans) - set(range(n_files))):
            problems.append(
                UserInputError(
                    f"extra channel {c:04d} (dataset.json has {n_ch} channel(s))",
                    chans[c],
                    "remove the file or add the channel to channel_names",
                )
            )
        if case not in labels:
            problems.append(
                UserInputError(
                    f"case '{case}' has no label file",
                    labels_dir / f"{case}{ending}",
                    "add the label map or remove the case's images",
                )
            )
        elif all(c in chans for c in range(n_files)) and len(chans) == n_files:
            cases[case] = {"images": [chans[c] for c in range(n_files)], "label": labels[case]}
    for case in sorted(set(labels) - set(channels)):
        problems.append(
            UserInputError(
                f"label of case '{case}' has no image",
                labels[case],
                f"add {case}_0000{ending} to imagesTr or remove the label",
            )
        )
    n_labels = len(labels)
    if ds["numTraining"] != n_labels:
        problems.append(
            UserInputError(
                f"numTraining is {ds['numTraining']} but labelsTr holds {n_labels} case(s)",
                raw_dataset / "dataset.json",
                f"set numTraining to {n_labels}",
            )
        )
    return problems, cases


def _reader(ds: dict, example: Path):
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    return determine_reader_writer_from_dataset_json(ds, str(example), allow_nonmatching_filename=True, verbose=False)()


def _geometry(path: Path) -> tuple | None:
    """(dimension, size, spacing, origin, direction) from SimpleITK's header read, or None if not an ITK file."""
    import SimpleITK as sitk

    if _ending(path.name) not in (".nii.gz", ".nii", ".mha", ".nrrd"):
        return None
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return (r.GetDimension(), r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection(), r.GetNumberOfComponents())


def _raw_voxels(path: Path) -> np.ndarray:
    """Voxels as stored (SimpleITK turns NIfTI NaN into 0 on read, so NIfTI goes through nibabel)."""
    if _ending(path.name) in (".nii", ".nii.gz"):
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))


def check_case(
    case: str, images: list[Path], label: Path | None, ds: dict, expect_dim: int | None = None
) -> list[UserInputError]:
    """Read one case and report what is wrong with it (unreadable, 4D, geometry, NaN, label values)."""
    from umamba_seg.image_files import check_image_file

    problems: list[UserInputError] = []
    files = list(images) + ([label] if label is not None else [])
    for f in files:
        try:
            check_image_file(f)
        except UserInputError as e:
            problems.append(e)
    if problems:
        return problems
    geos = {}
    for f in files:
        try:
            g = _geometry(f)
        except RuntimeError as e:
            problems.append(
                UserInputError(
                    f"unreadable or truncated file ({str(e).strip().splitlines()[-1][:120]})",
                    f,
                    "re-export or re-download it",
                )
            )
            continue
        if g is not None:
            geos[f] = g
            dim = g[0]
            if (expect_dim is not None and dim > expect_dim) or dim > 3 or g[5] > 1:
                problems.append(
                    UserInputError(
                        f"image is {dim}D"
                        + (f" with {g[5]} components" if g[5] > 1 else "")
                        + f" where {expect_dim or 3}D is expected",
                        f,
                        "split 4D/multi-component volumes into one file per channel (_0000, _0001, ...)",
                    )
                )
    if problems:
        return problems
    if label is not None and label in geos:
        lg = geos[label]
        for f in images:
            g = geos.get(f)
            if g is None:
                continue
            if tuple(g[1]) != tuple(lg[1]):
                problems.append(
                    UserInputError(
                        f"image shape {tuple(g[1])} differs from label shape {tuple(lg[1])}",
                        f,
                        "resample or crop image and label to the same grid",
                    )
                )
                continue
            for name, i in (("spacing", 2), ("origin", 3), ("direction", 4)):
                a, b = np.asarray(g[i], float), np.asarray(lg[i], float)
                if not np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=GEOMETRY_RTOL):
                    problems.append(
                        UserInputError(
                            f"image {name} {tuple(np.round(a, 4))} differs from label {name} {tuple(np.round(b, 4))}",
                            f,
                            f"make the label's {name} match its image (same voxel grid)",
                        )
                    )
    if problems:
        return problems
    try:
        rw = _reader(ds, images[0])
        data, _ = rw.read_images([str(f) for f in images])
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        return [
            UserInputError(
                f"unreadable image ({type(e).__name__}: {str(e).strip()[:120]})",
                images[0],
                "re-export it in the dataset's format",
            )
        ]
    for f, ch in zip(images, data):
        # nnunetv2's SimpleITK reader hides NaN, so look at the raw voxels where we can
        try:
            raw = _raw_voxels(f) if f in geos else ch
        except Exception as e:  # noqa: BLE001 - truncated or corrupt payload
            problems.append(
                UserInputError(f"unreadable or truncated file ({type(e).__name__})", f, "re-export or re-download it")
            )
            continue
        finite = np.isfinite(raw)
        n = int(raw.size - np.count_nonzero(finite))
        if n:
            problems.append(UserInputError(f"{n} NaN/Inf voxel(s)", f, "replace them with valid intensities"))
        elif raw.size and float(np.max(np.abs(raw))) > MAX_ABS_INTENSITY:
            problems.append(
                UserInputError(
                    f"intensity {float(np.max(np.abs(raw))):.3g} is beyond +-{MAX_ABS_INTENSITY:.0e} (it would turn "
                    "normalisation into NaN)",
                    f,
                    "rescale the image to its modality's units",
                )
            )
    if label is not None:
        try:
            seg, _ = rw.read_seg(str(label))
        except Exception as e:  # noqa: BLE001
            return problems + [UserInputError(f"unreadable label ({type(e).__name__})", label, "re-export it")]
        if data.shape[1:] != seg.shape[1:] and not geos:
            problems.append(
                UserInputError(
                    f"image shape {data.shape[1:]} differs from label shape {seg.shape[1:]}",
                    images[0],
                    "make image and label the same size",
                )
            )
        if not np.all(np.isfinite(seg)):
            problems.append(UserInputError("label has NaN/Inf values", label, "labels must be integers"))
        else:
            vals = np.unique(seg)
            if np.any(vals != np.round(vals)):
                problems.append(
                    UserInputError(
                        f"non-integer label values (e.g. {vals[vals != np.round(vals)][0]:g})",
                        label,
                        "save the label map with integer values (nearest-neighbour)",
                    )
                )
            else:
                allowed = _label_values(ds)
                extra = sorted(int(v) for v in vals if int(v) not in allowed)
                if extra:
                    problems.append(
                        UserInputError(
                            f"label value(s) {extra} not in dataset.json labels {sorted(allowed)}",
                            label,
                            "add them to 'labels' in dataset.json or fix the label map",
                        )
                    )
    return problems


def present_labels(label: Path, ds: dict) -> set[int]:
    seg, _ = _reader(ds, label).read_seg(str(label))
    return {int(v) for v in np.unique(seg)}


def verify_raw_dataset(raw_dataset: Path, num_processes: int = 2, run_nnunet_check: bool = True) -> None:
    """Check the whole dataset; raise :class:`UserInputErrors` listing every problem."""
    raw_dataset = Path(raw_dataset)
    ds = load_dataset_json(raw_dataset)
    problems, cases = collect_file_problems(raw_dataset, ds)
    label_counts: Counter[int] = Counter()
    expect_dim = None
    for case, files in _progress(sorted(cases.items()), "Verifying"):
        case_problems = check_case(case, files["images"], files["label"], ds, expect_dim)
        problems += case_problems
        if not case_problems:
            label_counts.update(present_labels(files["label"], ds))
            if expect_dim is None:
                g = _geometry(files["images"][0])
                expect_dim = g[0] if g is not None else None
    if cases and not problems:
        for name, v in ds["labels"].items():
            values = v if isinstance(v, (list, tuple)) else [v]
            if name == "background" or name == "ignore":
                continue
            if not any(label_counts[int(x)] for x in values):
                problems.append(
                    UserInputError(
                        f"label '{name}' ({values}) is empty in every training case",
                        raw_dataset / "labelsTr",
                        "remove the class from dataset.json or add cases that contain it",
                    )
                )
    if problems:
        raise UserInputErrors(problems)
    if run_nnunet_check:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        try:
            verify_dataset_integrity(str(raw_dataset), num_processes)
        except (AssertionError, RuntimeError, ValueError, FileNotFoundError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            raise UserInputError(
                f"nnU-Net's dataset check failed: {msg[:300]}", raw_dataset, "fix the files it names"
            ) from e
    log.info("Verified %d case(s) in %s: no problems found.", len(cases), raw_dataset)


def _progress(items: Iterable, desc: str):
    from tqdm import tqdm

    items = list(items)
    return tqdm(items, desc=desc, disable=len(items) < 2 or not show_progress())
