"""``train``: one fold of one architecture and configuration through its recipe's trainer class.

``--recipe nnunet`` (default) trains with :class:`umambaTrainer`, nnU-Net's recipe for every
network; ``--recipe authors`` with the network's authors' class (:mod:`.recipes`), on the plans
source that recipe names unless ``--plan-source`` says otherwise. The class name is the results
folder's ``<Trainer>`` part.

Plans are created on demand (``train -a X`` without plans for X plans it from the stored
fingerprint and says so), from the SSM-aware planner or the CNN's plan (``--plan-source``),
preprocessed data likewise; ``--continue`` resumes from the newest
of ``checkpoint_latest.pth``/``checkpoint_final.pth``. Before anything is written the fold must
be one of the split's (``splits_final.json``, else nnU-Net's 0..4) or ``all`` and the schedule
positive; one run at a time holds the fold folder (a lock; a second run gets one line naming
the holder, a lock left by a killed run is taken over).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.devices import configure_cpu_threads, resolve_device
from umamba_seg.errors import UserInputError
from umamba_seg.json_files import read_json
from umamba_seg.locking import exclusive_lock
from umamba_seg.planning.arch_plans import load_plans_with
from umamba_seg.planning.naming import CNN_ARCH, DEFAULT_PLAN_SOURCE, check_plan_source, plans_identifier
from umamba_seg.training.fold_run import FoldRun
from umamba_seg.training.recipes import DEFAULT_RECIPE, NNUNET_TRAINER, check_recipe, recipe_for, trainer_name
from umamba_seg.workspace import Workspace

if TYPE_CHECKING:
    from umamba_seg.training.trainer import umambaTrainer

log = logging.getLogger(__name__)
TRAINER_NAME = NNUNET_TRAINER  # the nnunet recipe's class; every recipe's: recipes.trainer_name(arch, recipe)
LOCK = ".umamba_train.lock"
DEFAULT_NUM_FOLDS = 5


def output_folder(
    ws: Workspace,
    dataset_name: str,
    arch: str,
    configuration: str,
    fold: int | str,
    trainer_name: str = TRAINER_NAME,
    plans_name: str | None = None,
    plan_source: str = DEFAULT_PLAN_SOURCE,
) -> Path:
    """``<results>/DatasetXXX/<Trainer>__<plans>__<config>/fold_<f>``; ``<plans>`` is
    ``arch``'s plans of ``plan_source`` (:func:`plans_identifier`) unless ``plans_name`` names
    other plans (e.g. the benchmark's)."""
    plans = plans_name or plans_identifier(arch, plan_source)
    return ws.results_dataset(dataset_name) / f"{trainer_name}__{plans}__{configuration}" / f"fold_{fold}"


def check_fold(ws: Workspace, dataset_name: str, fold: int | str) -> int | str:
    """``fold`` as an int of the split (``splits_final.json`` if present, else 0..4) or ``"all"``."""
    if str(fold) == "all":
        return "all"
    splits_file = ws.preprocessed_dataset(dataset_name) / "splits_final.json"
    n, where = DEFAULT_NUM_FOLDS, "-f"
    if splits_file.is_file():
        splits = read_json(splits_file, "fix it, or delete it to get nnU-Net's 5-fold split")
        if not isinstance(splits, list) or not splits:
            raise UserInputError(
                "splits_final.json is not a list of folds",
                splits_file,
                "fix it, or delete it to get nnU-Net's 5-fold split",
            )
        n, where = len(splits), splits_file
    text = str(fold)
    if not text.isdigit() or int(text) >= n:
        raise UserInputError(
            f"fold '{fold}' is not one of the split's folds 0..{n - 1} or 'all'", where, f"pass -f 0..{n - 1} or -f all"
        )
    return int(text)


def check_schedule(epochs: int | None, iters_per_epoch: int | None, val_iters: int | None) -> None:
    """Epochs and iterations per epoch must be at least 1 (validation iterations too)."""
    for flag, value in (("--epochs", epochs), ("--iters-per-epoch", iters_per_epoch), ("--val-iters", val_iters)):
        if value is not None and value < 1:
            raise UserInputError(f"{flag} {value} is not at least 1", flag, f"pass {flag} 1 or more")


@contextlib.contextmanager
def fold_lock(folder: Path) -> Iterator[None]:
    """Hold the fold folder for one training run; folders created here and left empty are removed."""
    created = [p for p in (*reversed(folder.parents), folder) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(
            f"cannot create the fold folder ({e.strerror})",
            folder,
            "make the results folder writable (or choose another --workdir)",
        ) from None
    try:
        with exclusive_lock(folder, LOCK, "the fold folder"):
            yield
    finally:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch with ``seed`` (the same initial weights on every DDP rank) and Python's and numpy's
    generators with ``seed + rank`` (each rank samples its own data)."""
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed(seed + rank)


def newest_checkpoint(folder: Path, trust: bool) -> Path | None:
    """The newer (by epoch) of ``folder``'s ``checkpoint_final.pth`` and ``checkpoint_latest.pth``; None: neither."""
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
    from umamba_seg.planning.arch_plans import plans_file, require_configuration
    from umamba_seg.planning.preprocess import ResumablePreprocessor, case_done, copy_gt_segmentations

    pre = ws.preprocessed_dataset(dataset_name)
    cnn_plans = plans_file(pre, CNN_ARCH)
    plans = PlansManager(str(cnn_plans))
    planned = plans.available_configurations
    require_configuration(configuration, planned, cnn_plans, [c for c in planned if not c.startswith("3d_cascade")])
    raw = ws.raw_dataset(dataset_name)
    ds_json = load_json(str(pre / "dataset.json"))
    data_dir = pre / plans.get_configuration(configuration).data_identifier
    n_train = ds_json.get("numTraining", 0)
    n_done = sum(1 for p in data_dir.glob("*.pkl") if case_done(data_dir, p.stem)) if data_dir.is_dir() else 0
    if n_done >= n_train and (pre / "gt_segmentations").is_dir():
        return
    if not raw.is_dir():
        raise UserInputError(
            f"preprocessed data for '{configuration}' is incomplete and the raw dataset is missing",
            data_dir,
            "restore the raw dataset and run `umamba-seg plan-and-preprocess`",
        )
    from umamba_seg.planning.pipeline import explain_failures

    log.info("Preprocessed data for '%s' is missing or incomplete: preprocessing it first.", configuration)
    with explain_failures(raw):
        ResumablePreprocessor(verbose=False).run_resumable(
            dataset_name, configuration, cnn_plans, raw, pre, num_processes
        )
    copy_gt_segmentations(raw, pre)


def training_plan_source(plan_source: str | None = None, arch: str = CNN_ARCH, recipe: str = DEFAULT_RECIPE) -> str:
    """The plans source a training uses: ``plan_source`` if given, else the recipe's (``authors`` of
    U-Mamba and xLSTM-UNet: ``cnn``, as published; otherwise the default, ``ssm``)."""
    return check_plan_source(plan_source or recipe_for(arch, recipe).plan_source)


def checked_run(ws: Workspace, dataset_name: str, run: FoldRun) -> FoldRun:
    """``run`` with its fold checked against the split, its schedule and recipe checked, and its plans
    source resolved (:func:`training_plan_source`); nothing is written."""
    fold = check_fold(ws, dataset_name, run.fold)
    check_schedule(run.epochs, run.iters_per_epoch, run.val_iters)
    plan_source = training_plan_source(run.plan_source, run.arch, check_recipe(run.recipe))
    return replace(run, fold=fold, plan_source=plan_source)


@contextlib.contextmanager
def held_fold(
    ws: Workspace, dataset_name: str, run: FoldRun, plans_name: str | None = None, hold: bool = True
) -> Iterator[tuple[FoldRun, Path]]:
    """``run`` checked (:func:`checked_run`) and its output folder, locked (:func:`fold_lock`) while the
    block runs unless ``hold`` is False (the DDP ranks that write nothing)."""
    run = checked_run(ws, dataset_name, run)
    out = output_folder(
        ws,
        dataset_name,
        run.arch,
        run.configuration,
        run.fold,
        trainer_name=trainer_name(run.arch, run.recipe),
        plans_name=plans_name,
        plan_source=run.plan_source,
    )
    with fold_lock(out) if hold else contextlib.nullcontext():
        yield run, out


def fold_plans(ws: Workspace, dataset_name: str, run: FoldRun, plans_name: str | None = None) -> Path:
    """The plans file ``run`` trains with, its configuration preprocessed on demand: ``<plans_name>.json``
    (which must exist) or ``run.arch``'s plans of ``run.plan_source``, planned on demand."""
    from umamba_seg.planning.pipeline import ensure_plans

    if plans_name is None:
        path = ensure_plans(ws, dataset_name, run.arch, num_processes=run.num_processes, plan_source=run.plan_source)
    else:
        path = ws.preprocessed_dataset(dataset_name) / f"{plans_name}.json"
        if not path.is_file():
            raise UserInputError(
                f"no plans named {plans_name}", path, "write them first (or train without a plans name)"
            )
    ensure_preprocessed(ws, dataset_name, run.configuration, run.num_processes)
    return path


def fold_trainer(
    cls: type[umambaTrainer], plans: dict, ws: Workspace, dataset_name: str, run: FoldRun, device: torch.device
) -> umambaTrainer:
    """``cls`` (a :class:`umambaTrainer`) built for ``run``'s fold on ``plans``, its schedule set."""
    plans["continue_training"] = run.continue_training
    dataset_json = load_json(str(ws.preprocessed_dataset(dataset_name) / "dataset.json"))
    trainer = cls(plans=plans, configuration=run.configuration, fold=run.fold, dataset_json=dataset_json, device=device)
    trainer.trust_checkpoints = run.trust_checkpoint  # this trainer's only, not every later one of its class
    trainer.configure_schedule(run.epochs, run.iters_per_epoch, run.val_iters)
    return trainer


def finish_fold(
    trainer: umambaTrainer,
    run: FoldRun,
    out: Path,
    newest: Callable[[Path, bool], Path | None] = newest_checkpoint,
    main: bool = True,
) -> None:
    """Resume (``--continue``: from ``newest``'s checkpoint), train to the last epoch, validate.

    ``newest`` finds the checkpoint to resume from (DDP: rank 0's, broadcast); only ``main`` logs."""
    if run.continue_training:
        ckpt = newest(out, run.trust_checkpoint)
        if ckpt is None:
            if main:
                log.warning("--continue: no checkpoint in %s, starting a new training.", out)
        else:
            trainer.load_checkpoint(str(ckpt))
            if main:
                log.info("--continue: resuming from %s at epoch %d.", Path(ckpt).name, trainer.current_epoch)
    if trainer.current_epoch < trainer.num_epochs:
        trainer.run_training()
    else:
        if main:
            log.info("Training already finished (%d epochs); running validation only.", trainer.current_epoch)
        if not trainer.was_initialized:
            trainer.initialize()
    if run.validate:
        trainer.perform_actual_validation(run.npz)


def train_fold(
    ws: Workspace,
    dataset_name: str,
    run: FoldRun,
    plans_name: str | None = None,
    pretrained_weights: str | os.PathLike | None = None,
) -> Path:
    """Train one fold (holding its folder's lock) with ``run.recipe``'s trainer class; returns its output folder.

    ``plans_name``: train with ``<preprocessed>/<plans_name>.json`` (which must exist, e.g. written
    by ``benchmark``) instead of ``run.arch``'s plans of ``run.plan_source`` (``ssm``:
    ``umambaPlans_<arch>``, ``cnn``: ``umambaCNNPlans_<arch>``, planned on demand; None:
    :func:`training_plan_source`); results go to that plans' folder. ``pretrained_weights``: a
    checkpoint whose matching tensors initialise the network (:mod:`.pretrained`)."""
    from umamba_seg.training.recipe_trainers import trainer_class

    if pretrained_weights is not None and run.continue_training:
        raise UserInputError(
            "--pretrained-weights and --continue exclude each other (--continue restores the fold's own checkpoint)",
            str(pretrained_weights),
            "drop one of them",
        )
    with held_fold(ws, dataset_name, run, plans_name) as (run, out):
        dev = resolve_device(run.device)
        configure_cpu_threads(dev)
        plans = load_plans_with(fold_plans(ws, dataset_name, run, plans_name), run.configuration)
        if run.seed is not None:
            seed_everything(run.seed)
        cls = trainer_class(trainer_name(run.arch, run.recipe))
        trainer = fold_trainer(cls, plans, ws, dataset_name, run, dev)
        assert Path(trainer.output_folder) == out, (trainer.output_folder, out)
        if pretrained_weights is not None:  # after the network is built, before the first step
            from umamba_seg.training.pretrained import load_pretrained_weights

            if not trainer.was_initialized:
                trainer.initialize()
            load_pretrained_weights(
                trainer.network,
                pretrained_weights,
                run.trust_checkpoint,
                log=lambda line: trainer.print_to_log_file(line, add_timestamp=False),
            )
        finish_fold(trainer, run, out)
        return out
