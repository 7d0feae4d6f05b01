"""``train``: one fold of one architecture and configuration through :class:`umambaTrainer`.

Plans are created on demand (``train -a X`` without plans for X plans it from the stored
fingerprint and says so), preprocessed data likewise; ``--continue`` resumes from the newest
of ``checkpoint_latest.pth``/``checkpoint_final.pth``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.devices import configure_cpu_threads, resolve_device
from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import CNN_ARCH, plans_identifier
from umamba_seg.workspace import Workspace

TRAINER_NAME = "umambaTrainer"


def output_folder(ws: Workspace, dataset_name: str, arch: str, configuration: str, fold: int | str,
                  trainer_name: str = TRAINER_NAME, plans_name: str | None = None) -> Path:
    """``<results>/DatasetXXX/<Trainer>__<plans>__<config>/fold_<f>``; ``<plans>`` is
    ``umambaPlans_<arch>`` unless ``plans_name`` names other plans (e.g. the benchmark's)."""
    plans = plans_name or plans_identifier(arch)
    return ws.results_dataset(dataset_name) / f"{trainer_name}__{plans}__{configuration}" / f"fold_{fold}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _newest_checkpoint(folder: Path, trust: bool) -> Path | None:
    from umamba_seg.training.checkpoint_io import load_checkpoint_safe

    best, best_epoch = None, -1
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        p = folder / name
        if p.is_file():
            epoch = load_checkpoint_safe(p, trust=trust).get("current_epoch", 0)
            if epoch > best_epoch:
                best, best_epoch = p, epoch
    return best


def ensure_preprocessed(ws: Workspace, dataset_name: str, configuration: str, num_processes: int = 2) -> None:
    """Preprocess ``configuration`` if its data folder is missing or incomplete."""
    from umamba_seg.planning.arch_plans import plans_file
    from umamba_seg.planning.preprocess import ResumablePreprocessor, case_done, copy_gt_segmentations

    pre = ws.preprocessed_dataset(dataset_name)
    cnn_plans = plans_file(pre, CNN_ARCH)
    plans = load_json(str(cnn_plans))
    if configuration not in plans["configurations"]:
        raise UserInputError(
            f"configuration '{configuration}' is not in the plans", cnn_plans,
            f"choose one of {', '.join(k for k in plans['configurations'] if not k.startswith('3d_cascade'))}",
        )
    raw = ws.raw_dataset(dataset_name)
    ds_json = load_json(str(pre / "dataset.json"))
    data_dir = pre / plans["configurations"][configuration].get("data_identifier", "")
    n_train = ds_json.get("numTraining", 0)
    n_done = sum(1 for p in data_dir.glob("*.pkl") if case_done(data_dir, p.stem)) if data_dir.is_dir() else 0
    if n_done >= n_train and (pre / "gt_segmentations").is_dir():
        return
    if not raw.is_dir():
        raise UserInputError(f"preprocessed data for '{configuration}' is incomplete and the raw dataset is missing",
                             data_dir, "restore the raw dataset and run `umamba-seg plan-and-preprocess`")
    print(f"Preprocessed data for '{configuration}' is missing or incomplete: preprocessing it first.")
    ResumablePreprocessor(verbose=False).run_resumable(dataset_name, configuration, cnn_plans, raw, pre, num_processes)
    copy_gt_segmentations(raw, pre)


def train_fold(ws: Workspace, dataset_name: str, configuration: str, fold: int | str, arch: str = CNN_ARCH,
               epochs: int | None = None, iters_per_epoch: int | None = None, val_iters: int | None = None,
               device: str = "auto", continue_training: bool = False, npz: bool = False, seed: int | None = None,
               trust_checkpoint: bool = False, num_processes: int = 2, plans_name: str | None = None,
               validate: bool = True) -> Path:
    """Train one fold; returns its output folder.

    ``plans_name``: train with ``<preprocessed>/<plans_name>.json`` (which must exist, e.g. written
    by ``benchmark``) instead of ``umambaPlans_<arch>.json``; results go to that plans' folder.
    ``validate=False`` skips the final sliding-window validation of the fold."""
    from umamba_seg.planning.pipeline import ensure_plans
    from umamba_seg.training.trainer import umambaTrainer

    if fold != "all":
        try:
            fold = int(fold)
        except ValueError:
            raise UserInputError(f"fold '{fold}' is not a number or 'all'", "-f", "pass -f 0..4 or -f all") from None
    dev = resolve_device(device)
    configure_cpu_threads(dev)
    if plans_name is None:
        plans_path = ensure_plans(ws, dataset_name, arch, num_processes=num_processes)
    else:
        plans_path = ws.preprocessed_dataset(dataset_name) / f"{plans_name}.json"
        if not plans_path.is_file():
            raise UserInputError(f"no plans named {plans_name}", plans_path,
                                 "write them first (or train without a plans name)")
    ensure_preprocessed(ws, dataset_name, configuration, num_processes)
    plans = load_json(str(plans_path))
    if configuration not in plans["configurations"]:
        raise UserInputError(f"configuration '{configuration}' is not in the plans", plans_path,
                             f"choose one of {', '.join(plans['configurations'])}")
    if seed is not None:
        seed_everything(seed)
    plans["continue_training"] = continue_training
    dataset_json = load_json(str(ws.preprocessed_dataset(dataset_name) / "dataset.json"))
    out = output_folder(ws, dataset_name, arch, configuration, fold, plans_name=plans_name)
    umambaTrainer.trust_checkpoints = trust_checkpoint
    trainer = umambaTrainer(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
                            device=dev)
    assert Path(trainer.output_folder) == out, (trainer.output_folder, out)
    trainer.configure_schedule(epochs, iters_per_epoch, val_iters)
    if continue_training:
        ckpt = _newest_checkpoint(out, trust_checkpoint)
        if ckpt is None:
            print(f"--continue: no checkpoint in {out}, starting a new training.")
        else:
            trainer.load_checkpoint(str(ckpt))
            print(f"--continue: resuming from {ckpt.name} at epoch {trainer.current_epoch}.")
    if trainer.current_epoch < trainer.num_epochs:
        trainer.run_training()
    else:
        print(f"Training already finished ({trainer.current_epoch} epochs); running validation only.")
        if not trainer.was_initialized:
            trainer.initialize()
    if validate:
        trainer.perform_actual_validation(npz)
    return out
