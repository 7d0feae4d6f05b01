"""``import-model``: a model the U-Mamba or xLSTM-UNet authors' forks trained, in our layout.

Input: a results folder as their nnunetv2 forks write it,
``<Trainer>__<Plans>__<configuration>/`` with ``plans.json``, ``dataset.json`` and
``fold_<f>/checkpoint_final.pth`` (a fold's ``checkpoint_best.pth`` is imported too). Output:
``<results>/DatasetXXX_Name/umambaTrainer__umambaPlans_<arch>__<configuration>/`` with our
plans (:mod:`.fork_plans`), their ``dataset.json``, an ``import_info.json`` (where it came
from, what was dropped) and per fold checkpoints that load with ``weights_only=True``
(:mod:`.fork_checkpoint`), which is what
``train`` writes and what ``predict``/``ensemble``/``evaluate`` read: they run on it unchanged,
on CPU or GPU, without mamba-ssm. Preprocessed plans are not written: prediction reads the
model folder's ``plans.json`` only, and a dataset's own ``umambaPlans_<arch>.json`` stays the
user's.

Everything is checked before the model counts as imported: trainer known, plans complete,
every weight present with our network's shape, no weight left over (bar the xLSTM wrapper's
unused LayerNorm), and the result loaded into our network built from the written plans, as
``predict`` will. All files go to a scratch folder next to the destination, renamed into
place at the end; a failure removes it, so nothing is half-written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names
from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.interop.fork_checkpoint import authors_to_ours, load_fork_checkpoint, shared_keys
from umamba_seg.interop.fork_plans import arch_for_trainer, our_plans
from umamba_seg.json_files import read_json
from umamba_seg.planning.naming import plans_identifier
from umamba_seg.safe_paths import check_file_ending, check_name
from umamba_seg.training.checkpoint_io import save_checkpoint_safe
from umamba_seg.training.run import TRAINER_NAME, output_folder
from umamba_seg.workspace import Workspace

CHECKPOINT = "checkpoint_final.pth"
BEST_CHECKPOINT = "checkpoint_best.pth"  # imported too where the fork wrote one (predict --checkpoint)
IMPORT_INFO = "import_info.json"
_FOLDER_RE = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+)__(?P<config>[^_].*)$")
_DATASET_RE = re.compile(r"^Dataset\d{3}_(?P<name>.+)$")


@dataclass
class ImportResult:
    destination: Path
    arch: str
    dataset_name: str
    configuration: str
    trainer_name: str
    folds: list[str]
    dropped: list[str] = field(default_factory=list)
    n_parameters: int = 0
    seconds: float = 0.0


def parse_model_folder(folder: Path) -> tuple[str, str, str]:
    """``(trainer, plans, configuration)`` from ``<Trainer>__<Plans>__<configuration>``."""
    m = _FOLDER_RE.match(folder.name)
    if not m:
        raise UserInputError(
            f"'{folder.name}' is not a <Trainer>__<Plans>__<configuration> folder",
            folder,
            "pass the trained model's folder, e.g. nnUNetTrainerUMambaBot__nnUNetPlans__3d_fullres",
        )
    return m.group("trainer"), m.group("plans"), m.group("config")


def _load_json(path: Path) -> dict:

    if not path.is_file():
        raise UserInputError(f"model folder has no {path.name}", path, "pass the complete folder the fork wrote")
    data = read_json(path, "restore the file the fork wrote")
    if not isinstance(data, dict):
        raise UserInputError(f"{path.name} is not a JSON object", path, "restore the file the fork wrote")
    return data


def _check_dataset_json(ds: dict, path: Path) -> None:
    for key in ("labels", "file_ending"):
        if key not in ds:
            raise UserInputError(f"dataset.json lacks '{key}'", path, "restore the dataset.json the fork wrote")
    if "channel_names" not in ds and "modality" not in ds:
        raise UserInputError("dataset.json lacks 'channel_names'", path, "restore the dataset.json the fork wrote")


def target_dataset_name(ws: Workspace, dataset: str | int, fork_dataset_name: str) -> str:
    """The ``DatasetXXX_Name`` to import into: an existing local dataset of that id, a full
    name as given, else the id with the fork's dataset name (``703`` + ``Dataset703_Cells``
    -> ``Dataset703_Cells``; ``5`` -> ``Dataset005_Cells``)."""
    text = str(dataset).strip()
    if _DATASET_RE.match(text):
        return check_name(text, "dataset name", "-d", "pass -d ID or a plain DatasetXXX_Name")
    if not text.isdigit():
        raise UserInputError(
            f"dataset '{text}' is neither an id nor a DatasetXXX_Name",
            "-d",
            "pass the numeric id (e.g. -d 4) or the folder name (e.g. -d Dataset004_Liver)",
        )
    try:
        return ws.dataset_name(text)
    except UserInputError:
        if any(
            p.name.startswith(f"Dataset{int(text):03d}_")
            for base in (ws.raw, ws.preprocessed, ws.results)
            if base.is_dir()
            for p in base.iterdir()
        ):
            raise  # ambiguous id: the workspace's own message
    m = _DATASET_RE.match(str(fork_dataset_name))
    suffix = m.group("name") if m else re.sub(r"[^A-Za-z0-9_-]+", "_", str(fork_dataset_name)) or "Imported"
    return f"Dataset{int(text):03d}_{suffix}"


def _n_channels(dataset_json: dict) -> int:
    return len(dataset_json.get("channel_names", dataset_json.get("modality", {})))


def _check_local_dataset(ws: Workspace, name: str, ds: dict, ds_file: Path) -> None:
    """If the workspace already holds the dataset, its labels and channels must be the model's."""
    for base in (ws.raw_dataset(name), ws.preprocessed_dataset(name)):
        local_file = base / "dataset.json"
        if local_file.is_file():
            local = _load_json(local_file)
            if local.get("labels") != ds.get("labels") or _n_channels(local) != _n_channels(ds):
                raise UserInputError(
                    f"the model's labels/channels differ from those of {name}",
                    local_file,
                    f"import into another id (-d), or compare with {ds_file}",
                )
            return


def _fold_checkpoints(folder: Path) -> dict[str, Path]:
    folds = {p.parent.name.removeprefix("fold_"): p for p in sorted(folder.glob(f"fold_*/{CHECKPOINT}"))}
    if not folds:
        raise UserInputError(
            f"model folder has no fold_*/{CHECKPOINT}",
            folder,
            "pass a folder whose training finished (the fork writes checkpoint_final.pth at the end)",
        )
    return folds


def _build_network(plans: dict, configuration: str, dataset_json: dict) -> torch.nn.Module:
    """Our network from the written plans, exactly as ``predict`` builds it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, enable_deep_supervision=False)


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t`` alone in its storage (a view would save its whole storage)."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.detach().clone().contiguous()


@contextlib.contextmanager
def _scratch_folder(destination: Path, overwrite: bool):
    """A scratch folder next to ``destination``, renamed onto it when the block succeeds."""
    parent = destination.parent
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.importing-", dir=parent))
    try:
        yield scratch
        if destination.exists():
            if not overwrite:  # appeared while we worked
                raise UserInputError("the destination already exists", destination, "pass --overwrite to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.replaced-", dir=parent))
            os.replace(destination, old / destination.name)
            try:
                os.replace(scratch, destination)
            except BaseException:
                os.replace(old / destination.name, destination)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(scratch, destination)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if nothing else landed there
        raise


def _our_checkpoint(
    path: Path,
    trainer: str,
    configuration: str,
    arch: str,
    network: torch.nn.Module,
    expected: dict,
    shared: list,
    init_args: dict,
    dataset_name: str,
    origin: dict,
) -> dict:
    """One fork checkpoint as ours (what ``train`` writes, minus the optimizer state)."""
    ckpt = load_fork_checkpoint(path)
    if ckpt.get("trainer_name", trainer) != trainer:
        raise UserInputError(
            f"checkpoint was written by trainer '{ckpt['trainer_name']}', the folder name says '{trainer}'",
            path,
            "keep each checkpoint in its own model folder",
        )
    ckpt_conf = (ckpt.get("init_args") or {}).get("configuration", configuration)
    if ckpt_conf != configuration:
        raise UserInputError(
            f"checkpoint is of configuration '{ckpt_conf}', the folder name says '{configuration}'",
            path,
            "keep each checkpoint in its own model folder",
        )
    weights, dropped = authors_to_ours(arch, ckpt["network_weights"], expected, path, shared)
    network.load_state_dict(weights, strict=True)  # what predict does; shapes were checked above
    epoch = ckpt.get("current_epoch")
    mirror = ckpt.get("inference_allowed_mirroring_axes")
    return {
        "network_weights": {k: _own_storage(v) for k, v in weights.items()},
        "init_args": init_args,
        "trainer_name": TRAINER_NAME,
        "inference_allowed_mirroring_axes": None if mirror is None else tuple(int(a) for a in mirror),
        "current_epoch": int(epoch) if epoch is not None else None,
        "dataset_name": dataset_name,
        "imported_from": {**origin, "checkpoint": str(path), "dropped_weights": dropped},
    }


def import_model(
    ws: Workspace, source: str, model_folder: str | os.PathLike, dataset: str | int, overwrite: bool = False
) -> ImportResult:
    """Import ``model_folder`` (written by the ``source`` fork) as dataset ``dataset``."""
    t0 = time.perf_counter()
    folder = Path(model_folder).expanduser().resolve()
    if not folder.is_dir():
        raise UserInputError("model folder not found", folder, "pass -i <Trainer>__<Plans>__<configuration> folder")
    trainer, fork_plans_name, configuration = parse_model_folder(folder)
    arch = arch_for_trainer(source, trainer, folder)
    plans_file, ds_file = folder / "plans.json", folder / "dataset.json"
    fork_plans, ds = _load_json(plans_file), _load_json(ds_file)
    _check_dataset_json(ds, ds_file)
    check_dataset_json_names(ds, ds_file)
    check_file_ending(ds["file_ending"], ds_file)
    name = target_dataset_name(ws, dataset, fork_plans.get("dataset_name", ""))
    destination = output_folder(ws, name, arch, configuration, 0).parent
    if destination.exists() and not overwrite:
        raise UserInputError("the destination already exists", destination, "pass --overwrite to replace it")
    _check_local_dataset(ws, name, ds, ds_file)
    folds = _fold_checkpoints(folder)
    origin = {
        "source": source,
        "model_folder": str(folder),
        "trainer_name": trainer,
        "plans_name": fork_plans_name,
        "dataset_name": fork_plans.get("dataset_name"),
    }
    plans = our_plans(fork_plans, configuration, arch, name, plans_file, origin)
    try:
        network = _build_network(plans, configuration, ds)
    except Exception as e:  # noqa: BLE001 - plans that pass the checks but do not build a network
        raise UserInputError(
            f"our {arch} network cannot be built from the translated plans ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})",
            plans_file,
            "check the plans' kernel sizes, strides and patch size",
        ) from e
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    shared = shared_keys(network)
    result = ImportResult(
        destination,
        arch,
        name,
        configuration,
        trainer,
        list(folds),
        n_parameters=sum(p.numel() for p in network.parameters()),
    )
    info_folds: dict[str, dict] = {}
    with _scratch_folder(destination, overwrite) as scratch:
        for fold, final in folds.items():
            info_folds[fold] = {}
            for path in (final, final.with_name(BEST_CHECKPOINT)):
                if not path.is_file():  # checkpoint_best.pth is optional
                    continue
                ckpt = _our_checkpoint(
                    path,
                    trainer,
                    configuration,
                    arch,
                    network,
                    expected,
                    shared,
                    {
                        "plans": plans,
                        "configuration": configuration,
                        "fold": int(fold) if fold.isdigit() else fold,
                        "dataset_json": ds,
                        "device": "cpu",
                    },
                    name,
                    origin,
                )
                dropped = ckpt["imported_from"]["dropped_weights"]
                result.dropped = sorted(set(result.dropped) | set(dropped))
                save_checkpoint_safe(ckpt, scratch / f"fold_{fold}" / path.name)
                info_folds[fold][path.name] = {
                    "checkpoint": str(path),
                    "epochs_trained": ckpt["current_epoch"],
                    "dropped_weights": dropped,
                }
                del ckpt
        write_json_atomic(plans, scratch / "plans.json")
        write_json_atomic(ds, scratch / "dataset.json")
        write_json_atomic(
            {
                **origin,
                "arch": arch,
                "plans_name": plans_identifier(arch),
                "configuration": configuration,
                "n_parameters": result.n_parameters,
                "folds": info_folds,
            },
            scratch / IMPORT_INFO,
        )
    result.seconds = time.perf_counter() - t0
    return result
