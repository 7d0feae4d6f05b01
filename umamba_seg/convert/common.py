"""Shared pieces of the dataset converters: the nnU-Net raw layout, atomic writes, the CLI.

Every converter writes ``<out_raw>/DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}`` and a
``dataset.json`` made by nnunetv2's own ``generate_dataset_json``. Each file is written to a
temporary name and renamed, so an interrupted run leaves only whole files; a re-run skips cases
whose outputs already exist (``--overwrite`` redoes them) and removes temporary leftovers, which
nnU-Net would otherwise mistake for cases.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError
from umamba_seg.log import add_verbosity_flags, command_logging, show_progress
from umamba_seg.workspace import DEFAULT_WORKDIR, Workspace

log = logging.getLogger(__name__)

#: A folder argument: a path or its string.
StrPath = str | os.PathLike
#: ``channel_names`` of an RGB dataset stored as one colour PNG per case (nnU-Net's natural-image reader).
RGB_CHANNELS: dict[int, str] = {0: "R", 1: "G", 2: "B"}
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")

#: The case folders of a raw dataset, each as ``<kind>Tr`` and ``<kind>Ts`` (nnU-Net ignores instances).
FOLDER_KINDS: tuple[str, ...] = ("images", "labels", "instances")


@dataclass(frozen=True)
class RawDataset:
    """Paths of one nnU-Net raw dataset folder."""

    root: Path
    file_ending: str

    def folder(self, kind: str, test: bool = False) -> Path:
        """``<kind>Tr``, or ``<kind>Ts`` for held-out cases; ``kind`` is one of :data:`FOLDER_KINDS`."""
        return self.root / f"{kind}{'Ts' if test else 'Tr'}"

    def image(self, case: str, channel: int, test: bool = False) -> Path:
        return self.folder("images", test) / f"{case}_{channel:04d}{self.file_ending}"

    def label(self, case: str, test: bool = False) -> Path:
        return self.folder("labels", test) / f"{case}{self.file_ending}"

    def instances(self, case: str, test: bool = False) -> Path:
        """Instance map of a cell dataset (``instancesTr``/``instancesTs``; nnU-Net ignores these folders)."""
        return self.folder("instances", test) / f"{case}{self.file_ending}"

    def case_files(
        self, case: str, test: bool, channels: int = 1, labelled: bool = True, instances: bool = False
    ) -> list[Path]:
        """The files that make one converted case: its channels and, when ``labelled``, its label (and
        its instance map when the dataset has ``instances``)."""
        files = [self.image(case, channel, test) for channel in range(channels)]
        if labelled:
            files += [self.instances(case, test)] if instances else []
            files.append(self.label(case, test))
        return files


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset%03d_Name`` as nnU-Net names dataset folders."""
    if not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise UserInputError(
            f"dataset id {dataset_id!r} is not an integer from 1 to 999", "--id", "pick a free id such as 703"
        )
    return f"Dataset{int(dataset_id):03d}_{name}"


def require_dir(src: str | os.PathLike, what: str) -> Path:
    """``src`` as a Path; a clear error if it is not a folder."""
    path = Path(src).expanduser()
    if not path.is_dir():
        raise UserInputError(
            f"the {what} folder does not exist", path, "pass the folder that you extracted from the download"
        )
    return path


def prepare_dataset(out_raw: str | os.PathLike, dataset_id: int, name: str, file_ending: str) -> RawDataset:
    """Create the dataset folder and its subfolders; refuse an id already taken by another name."""
    folder_name = dataset_folder_name(dataset_id, name)
    out_raw = Path(out_raw).expanduser()
    if out_raw.is_dir():
        prefix = f"Dataset{int(dataset_id):03d}_"
        clash = sorted(
            p.name for p in out_raw.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != folder_name
        )
        if clash:
            raise UserInputError(
                f"dataset id {dataset_id} is already used by {clash[0]}",
                out_raw / clash[0],
                "pass another --id or remove that folder",
            )
    ds = RawDataset(out_raw / folder_name, file_ending)
    for kind in ("images", "labels"):
        ds.folder(kind).mkdir(parents=True, exist_ok=True)
    for kind in FOLDER_KINDS:
        for test in (False, True):
            remove_temporary_leftovers(ds.folder(kind, test))
    return ds


def remove_temporary_leftovers(folder: Path) -> None:
    """Delete ``.<name>.<random>.tmp<ending>`` files that a killed run of :func:`atomic_path` left."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                p.unlink()


def outputs_exist(paths: Iterable[Path], overwrite: bool) -> bool:
    """True when every output is there and the caller may skip the case."""
    return not overwrite and all(p.is_file() for p in paths)


def copy_file(src: Path, dst: Path) -> None:
    """Copy bytes atomically (keeps NIfTI headers exactly as downloaded)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_sitk(image, dst: Path) -> None:
    """Write a SimpleITK image atomically, compressed."""
    import SimpleITK as sitk

    with atomic_path(dst) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def write_png(array: np.ndarray, dst: Path) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array as a lossless PNG, atomically."""
    from PIL import Image

    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {array.dtype}")
    with atomic_path(dst) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_instance_png(instances: np.ndarray, dst: Path) -> None:
    """Write an instance map (0 background, one integer per cell) as a 16-bit PNG, atomically."""
    from PIL import Image

    inst = np.asarray(instances)
    if inst.size and (inst.min() < 0 or inst.max() > np.iinfo(np.uint16).max):
        raise UserInputError(
            f"instance ids {inst.min()}..{inst.max()} do not fit a 16-bit PNG",
            dst,
            "renumber the cells 1..n (at most 65535 per image)",
        )
    with atomic_path(dst) as tmp:
        Image.fromarray(inst.astype(np.uint16)).save(tmp, format="PNG")


def write_dataset_json(ds: RawDataset, channel_names: dict, labels: dict, num_training: int, **extra) -> Path:
    """``dataset.json`` by nnunetv2's ``generate_dataset_json``, written to a temp folder then renamed."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    final = ds.root / "dataset.json"
    with tempfile.TemporaryDirectory(dir=ds.root, prefix=".dataset_json.") as tmp:
        generate_dataset_json(
            tmp, dict(channel_names), dict(labels), num_training, ds.file_ending, dataset_name=ds.root.name, **extra
        )
        os.replace(Path(tmp) / "dataset.json", final)
    return final


def finish_dataset(
    ds: RawDataset, cases: Sequence, source: Source, channel_names: dict, labels: dict, description: str, **extra
) -> Path:
    """Check that labelsTr holds exactly the training ``cases``, write ``dataset.json`` (the source's
    reference and license, ``description``, ``extra``: more optional keys; ``converted_by``
    umamba-seg) and return the dataset folder."""
    training = [c.case_id for c in training_cases(cases)]
    check_no_foreign_cases(ds, training)
    write_dataset_json(
        ds,
        channel_names,
        labels,
        len(training),
        converted_by="umamba-seg",
        reference=source.reference,
        license=source.license,
        description=description,
        **extra,
    )
    return ds.root


def check_no_foreign_cases(ds: RawDataset, cases: Sequence[str]) -> None:
    """Refuse a labelsTr that holds cases this conversion did not produce (numTraining would be wrong)."""
    n = len(ds.file_ending)
    labels = ds.folder("labels")
    present = {p.name[:-n] for p in labels.iterdir() if p.name.endswith(ds.file_ending)}
    extra = sorted(present - set(cases))
    if extra:
        raise UserInputError(
            f"{labels} holds {len(extra)} case(s) that are not in the source, e.g. {extra[0]}",
            ds.root,
            "remove the dataset folder or pass another --id, then convert again",
        )


@dataclass(frozen=True)
class Hint:
    """The words of the error when a download lacks something: what was looked for, how to fix it."""

    what: str
    fix: str

    def require(self, found: Sequence, where: Path) -> None:
        """Raise ``no <what> found`` (at ``where``, with the fix) when ``found`` is empty."""
        if not found:
            raise UserInputError(f"no {self.what} found", where, self.fix)


@dataclass(frozen=True)
class Source:
    """A public download as one converter reads it.

    ``title`` names it in messages ("the <title> folder does not exist"). ``cases`` says what the
    converter looks for, for the error when it finds nothing; ``training`` what a training case
    needs, for the error when all cases are held out (None: a download of held-out cases alone
    converts). ``reference`` (where to get it) and ``license`` go to ``dataset.json``.
    """

    title: str
    cases: Hint
    training: Hint | None
    reference: str
    license: str

    def read(self, src: StrPath, find_cases: Callable[[Path], Sequence]) -> list:
        """The cases that ``find_cases`` lists below the download folder ``src`` (objects with
        ``case_id`` and ``test``, True for a held-out case); a user error when the folder is missing
        or holds no case, or no training case."""
        folder = require_dir(src, self.title)
        cases = list(find_cases(folder))
        self.cases.require(cases, folder)
        if self.training is not None:
            self.training.require(training_cases(cases), folder)
        return cases


def training_cases(cases: Sequence) -> list:
    """The cases that are not held out (``test`` False): nnU-Net's ``imagesTr``."""
    return [c for c in cases if not c.test]


def held_out(path: Path, src: Path, words: re.Pattern) -> bool:
    """True when the name of a folder below ``src`` that holds ``path`` matches ``words`` (such as
    test or validation): how a download marks its held-out cases."""
    return any(words.search(part) for part in path.relative_to(src).parts[:-1])


@dataclass(frozen=True)
class ImageCase:
    """One case of a 2D download: its image file, its label file (None: unlabelled), held out or not."""

    case_id: str
    image: Path
    label: Path | None
    test: bool


def convert_cases(
    ds: RawDataset,
    cases: Sequence,
    desc: str,
    overwrite: bool,
    case_files: Callable[[Any], Sequence[Path]],
    write_case: Callable[[Any], None],
) -> None:
    """Write each case with ``write_case``, under a progress bar named ``desc``; skip a case whose
    ``case_files`` all exist already (``overwrite``: write every case)."""
    for case in progress(cases, desc):
        if not outputs_exist(case_files(case), overwrite):
            write_case(case)


def progress(items: Sequence, desc: str):
    """A tqdm bar over ``items`` (plain iteration if tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, unit="case", disable=None if show_progress() else True)


def verify_raw_dataset(folder: str | os.PathLike, num_processes: int = 1) -> None:
    """Run nnunetv2's ``verify_dataset_integrity``; turn its failures into one clear error."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(folder), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"nnU-Net's integrity check failed: {first}",
            folder,
            "read the messages above, fix the source and convert again",
        ) from e


# ---- command line ---------------------------------------------------------------------
def default_raw_dir() -> Path:
    """``$nnUNet_raw`` if set, else ``./umamba_workdir/raw`` (the CLI's default workdir)."""
    env = os.environ.get("nnUNet_raw")
    return Path(env) if env else Path.cwd() / DEFAULT_WORKDIR / "raw"


def build_parser(description: str, default_id: int, name: str) -> argparse.ArgumentParser:
    """The arguments every converter takes; ``name`` is the converter's module (``umamba-seg convert NAME``)."""
    p = argparse.ArgumentParser(prog=f"umamba-seg convert {name}", description=description)
    p.add_argument("src", metavar="SRC_DIR", help="the extracted download (see datasets.md)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        metavar="RAW_DIR",
        default=None,
        help="nnU-Net raw folder (default: $nnUNet_raw, else ./umamba_workdir/raw)",
    )
    where.add_argument(
        "--workdir", metavar="W", default=None, help="write to W/raw, the raw folder of umamba-seg's --workdir W"
    )
    p.add_argument("--id", type=int, default=default_id, help=f"dataset id (default {default_id})")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    p.add_argument("--verify", action="store_true", help="run nnU-Net's integrity check afterwards")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_verbosity_flags(p)
    return p


def run_cli(
    parser: argparse.ArgumentParser,
    convert: Callable[..., Path],
    argv: Sequence[str] | None = None,
    options: Callable[[argparse.Namespace], dict] = lambda args: {},
) -> int:
    """Parse, run ``convert(SRC_DIR, raw folder, --id, overwrite=..., **options(args))``, optionally
    verify; user errors (also those ``options`` raises) become one ``error: ...`` line and exit 2."""
    args = parser.parse_args(argv)
    out_raw = (
        Path(args.out) if args.out else Workspace.from_workdir(args.workdir).raw if args.workdir else default_raw_dir()
    )
    with command_logging(args.quiet, args.verbose):
        try:
            folder = convert(args.src, out_raw, args.id, overwrite=args.overwrite, **options(args))
            if args.verify:
                verify_raw_dataset(folder)
        except UserInputError as e:
            if args.debug:
                raise
            print(e.line(), file=sys.stderr)
            return 2
        dataset_id = int(_DATASET_RE.match(folder.name).group(1))
        where = f"--workdir {args.workdir}" if args.workdir else f"(with --workdir W when {out_raw} is W/raw)"
        log.info("wrote %s\nnext: umamba-seg plan-and-preprocess -d %s %s", folder, dataset_id, where)
    return 0
