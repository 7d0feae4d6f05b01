"""``install-model``: a ``MODEL.zip`` of ``export-model`` into this workdir's results, checked first.

Refused with one line (exit 2), before anything is written: entries with an absolute path,
``..``, a link or another non-regular type; a missing or malformed manifest; files in the
archive the manifest does not list (or listed files missing), names outside the allowed set
(:mod:`.model_archive`), archives larger than ``MAX_UNPACKED_BYTES`` once unpacked or members
inflating more than ``MAX_COMPRESSION_RATIO`` times. Then every file is unpacked into a
scratch folder next to the destination, counting bytes and hashing as it goes (a sha256
mismatch stops it), and the unpacked model is checked as ``predict`` will use it: plans on
the allow-list (the network class must be a registered one), dataset.json names and file
ending, every checkpoint loaded with ``weights_only=True`` and into the network the plans
build. Only then is the scratch folder renamed onto the model folder (or onto an existing
one with ``overwrite``); any failure or kill before leaves no model folder behind.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.errors import UserInputError
from umamba_seg.interop import model_archive as ma
from umamba_seg.interop.import_model import _build_network, _check_local_dataset, _scratch_folder
from umamba_seg.safe_paths import check_file_ending, check_name
from umamba_seg.training.checkpoint_io import load_checkpoint_safe
from umamba_seg.workspace import Workspace

_FIX = "install only archives written by `umamba-seg export-model`, or ask its author for a new export"


@dataclass
class InstallResult:
    destination: Path
    manifest: dict
    files: int
    bytes: int
    seconds: float


def _read_manifest(zf: zipfile.ZipFile, archive: Path) -> dict:
    try:
        info = zf.getinfo(ma.MANIFEST)
    except KeyError:
        raise UserInputError(f"archive has no {ma.MANIFEST}", archive, _FIX) from None
    if info.file_size > ma.MAX_MANIFEST_BYTES:
        raise UserInputError(f"{ma.MANIFEST} is larger than {ma.MAX_MANIFEST_BYTES} bytes", archive, _FIX)
    try:
        manifest = json.loads(zf.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise UserInputError(f"{ma.MANIFEST} is not valid JSON ({e})", archive, _FIX) from None
    if not isinstance(manifest, dict) or manifest.get("format") != ma.FORMAT:
        raise UserInputError(f"{ma.MANIFEST} is not an umamba-seg model manifest", archive, _FIX)
    if manifest.get("format_version") != ma.FORMAT_VERSION:
        raise UserInputError(
            f"model archive format {manifest.get('format_version')!r} is not supported "
            f"(this umamba-seg reads {ma.FORMAT_VERSION})",
            archive,
            "upgrade umamba-seg",
        )
    for key in ("dataset_name", "model_folder", "configuration", "arch"):
        check_name(manifest.get(key), f"manifest key '{key}'", archive, _FIX)
    if not ma.DATASET_RE.match(manifest["dataset_name"]):
        raise UserInputError(
            f"manifest dataset_name {manifest['dataset_name']!r} is not a DatasetXXX_Name", archive, _FIX
        )
    if not ma.MODEL_FOLDER_RE.match(manifest["model_folder"]) or not manifest["model_folder"].endswith(
        f"__{manifest['configuration']}"
    ):
        raise UserInputError(
            f"manifest model_folder {manifest['model_folder']!r} is not a <Trainer>__<Plans>__<configuration> name",
            archive,
            _FIX,
        )
    files = manifest.get("files")
    if (
        not isinstance(files, dict)
        or not files
        or not all(
            isinstance(v, dict)
            and isinstance(v.get("sha256"), str)
            and isinstance(v.get("size"), int)
            and v["size"] >= 0
            for v in files.values()
        )
    ):
        raise UserInputError(f"{ma.MANIFEST} has no valid 'files' list (size and sha256 per file)", archive, _FIX)
    return manifest


def _check_members(zf: zipfile.ZipFile, manifest: dict, archive: Path) -> list[zipfile.ZipInfo]:
    """The archive's file entries, each listed, allowed and within the limits; in manifest order."""
    prefix = f"{manifest['dataset_name']}/{manifest['model_folder']}/"
    listed = manifest["files"]
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        ma.check_member(info, archive)
        if info.is_dir() or info.filename == ma.MANIFEST:
            continue
        if info.filename in entries:
            raise UserInputError(f"archive entry {info.filename!r} appears twice", archive, _FIX)
        if info.filename not in listed:
            raise UserInputError(f"archive entry {info.filename!r} is not listed in {ma.MANIFEST}", archive, _FIX)
        entries[info.filename] = info
    total = 0
    for name, meta in listed.items():
        if not name.startswith(prefix) or not ma.allowed_model_file(name[len(prefix) :]):
            raise UserInputError(f"manifest file {name!r} is not a model file this version installs", archive, _FIX)
        if name not in entries:
            raise UserInputError(f"manifest file {name!r} is missing from the archive", archive, _FIX)
        info = entries[name]
        if info.file_size != meta["size"]:
            raise UserInputError(
                f"archive entry {name!r} has {info.file_size} bytes, the manifest says {meta['size']}", archive, _FIX
            )
        if info.file_size > ma.RATIO_CHECK_MIN_BYTES and info.file_size > ma.MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise UserInputError(
                f"archive entry {name!r} inflates {info.file_size / max(info.compress_size, 1):.0f} "
                f"times (limit {ma.MAX_COMPRESSION_RATIO}): a zip bomb?",
                archive,
                _FIX,
            )
        total += info.file_size
        if total > ma.MAX_UNPACKED_BYTES:
            raise UserInputError(
                f"archive unpacks to more than {ma.MAX_UNPACKED_BYTES} bytes (MAX_UNPACKED_BYTES)", archive, _FIX
            )
    for required in ("plans.json", "dataset.json"):
        if prefix + required not in entries:
            raise UserInputError(f"archive has no {required} for the model", archive, _FIX)
    if not any(n.endswith(".pth") for n in entries):
        raise UserInputError("archive holds no checkpoint", archive, _FIX)
    return [entries[n] for n in listed]


def _unpack(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, sha256: str, archive: Path) -> None:
    """One member to ``target``, never more bytes than it declares, its sha256 checked."""
    import hashlib

    h = hashlib.sha256()
    written = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(1024 * 1024):
            written += len(chunk)
            if written > info.file_size:
                raise UserInputError(
                    f"archive entry {info.filename!r} holds more than its declared size", archive, _FIX
                )
            h.update(chunk)
            dst.write(chunk)
    if h.hexdigest() != sha256:
        raise UserInputError(
            f"archive entry {info.filename!r} does not match its sha256 in {ma.MANIFEST} (changed or damaged)",
            archive,
            _FIX,
        )


def _check_unpacked(folder: Path, manifest: dict, archive: Path) -> None:
    """The unpacked model as ``predict`` will read it, named after the archive for the user."""
    where = f"{archive}: {manifest['dataset_name']}/{manifest['model_folder']}"
    try:
        plans = json.loads((folder / "plans.json").read_text())
        ds = json.loads((folder / "dataset.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserInputError(f"plans.json or dataset.json is not valid JSON ({e})", where, _FIX) from None
    check_plans(plans, f"{where}/plans.json")
    check_dataset_json_names(ds, f"{where}/dataset.json")
    check_file_ending(ds.get("file_ending"), f"{where}/dataset.json")
    plans_manager = PlansManager(plans)
    plans_dataset = plans_manager.dataset_name if "dataset_name" in plans else None
    if plans_dataset != manifest["dataset_name"]:
        raise UserInputError(
            f"plans.json is of {plans_dataset!r}, the manifest says {manifest['dataset_name']!r}", where, _FIX
        )
    configuration = manifest["configuration"]
    if configuration not in plans_manager.available_configurations:
        raise UserInputError(f"plans.json has no configuration '{configuration}'", where, _FIX)
    try:
        network = _build_network(plans, configuration, ds)
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 - plans that pass the allow-list but build no network
        raise UserInputError(
            f"the network cannot be built from plans.json ({type(e).__name__}: {e})", where, _FIX
        ) from e
    for ckpt_path in sorted(folder.glob("fold_*/*.pth")):
        rel = ckpt_path.relative_to(folder)
        try:
            ckpt = load_checkpoint_safe(ckpt_path, trust=False)
        except UserInputError as e:
            raise UserInputError(e.what, f"{where}/{rel}", _FIX) from None
        if (
            not isinstance(ckpt, dict)
            or not isinstance(ckpt.get("network_weights"), dict)
            or not isinstance(ckpt.get("init_args"), dict)
        ):
            raise UserInputError("checkpoint lacks network_weights/init_args", f"{where}/{rel}", _FIX)
        ckpt_plans = ckpt["init_args"].get("plans")  # nnunetv2's checkpoints name the dataset only there
        ckpt_dataset = ckpt.get("dataset_name") or (
            ckpt_plans.get("dataset_name") if isinstance(ckpt_plans, dict) else None
        )
        if (
            ckpt_dataset not in (None, manifest["dataset_name"])
            or ckpt["init_args"].get("configuration") != configuration
        ):
            raise UserInputError("checkpoint belongs to another dataset or configuration", f"{where}/{rel}", _FIX)
        try:
            network.load_state_dict(ckpt["network_weights"], strict=True)
        except RuntimeError as e:
            raise UserInputError(
                f"checkpoint does not fit the network of plans.json ({str(e).splitlines()[0]})", f"{where}/{rel}", _FIX
            ) from None
        del ckpt


def _check_dataset_id(ws: Workspace, name: str, archive: Path) -> None:
    """Another local dataset with the same id would make ``-d ID`` ambiguous."""
    prefix = name[:11]
    for base in (ws.raw, ws.preprocessed, ws.results):
        if base.is_dir():
            for p in base.iterdir():
                if p.name.startswith(prefix) and p.name != name:
                    raise UserInputError(
                        f"this workdir already has {p.name} with the id of the model's {name}",
                        p,
                        f"rename one of them, or install with another --workdir ({archive})",
                    )


def install_model(ws: Workspace, archive: str | Path, overwrite: bool = False) -> InstallResult:
    """Install ``archive`` into ``ws.results``; returns where it went."""
    t0 = time.perf_counter()
    archive = Path(archive).expanduser().resolve()
    if not archive.is_file():
        raise UserInputError("model archive not found", archive, "pass the MODEL.zip written by export-model")
    if not zipfile.is_zipfile(archive):
        raise UserInputError("not a zip archive", archive, _FIX)
    with zipfile.ZipFile(archive) as zf:
        manifest = _read_manifest(zf, archive)
        members = _check_members(zf, manifest, archive)
        name, folder = manifest["dataset_name"], manifest["model_folder"]
        destination = ws.results_dataset(name) / folder
        if destination.exists() and not overwrite:
            raise UserInputError("the model is already installed", destination, "pass --overwrite to replace it")
        _check_dataset_id(ws, name, archive)
        prefix = f"{name}/{folder}/"
        total = 0
        with _scratch_folder(destination, overwrite) as scratch:
            for info in members:
                _unpack(
                    zf,
                    info,
                    scratch / info.filename[len(prefix) :],
                    manifest["files"][info.filename]["sha256"],
                    archive,
                )
                total += info.file_size
            ds = json.loads((scratch / "dataset.json").read_text())
            _check_local_dataset(ws, name, ds, archive)
            _check_unpacked(scratch, manifest, archive)
    return InstallResult(destination, manifest, len(members), total, time.perf_counter() - t0)
