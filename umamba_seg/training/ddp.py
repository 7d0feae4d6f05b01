"""``train --ddp``: one fold trained with DistributedDataParallel under ``torchrun``.

Scaling out uses PyTorch's own launcher (``torchrun``, single- or multi-node, c10d
rendezvous); we only make nnunetv2's trainer fit it. nnunetv2 2.8.1 assumes DDP means
"one node, CUDA": it forces ``cuda:<global rank>`` as the device and passes
``device_ids=[<global rank>]`` to DDP, which is wrong on every node but the first and
impossible on CPU; every rank also writes ``plans.json``/``dataset.json`` and the split file.
:class:`umambaTrainerDDP` fixes that:

- device ``cuda:LOCAL_RANK`` with NCCL, or CPU with gloo (no GPU, or ``--device cpu``);
- the plans' global batch is split over the ranks (nnunetv2's own split and oversampling);
- only global rank 0 writes checkpoints, logs, ``progress.png``, the split and the copied
  plans; ``--continue`` is decided and read by rank 0 and broadcast, so nodes need not share
  the results folder to resume (final validation does need a shared one: ranks write their
  share of the validation cases and rank 0 scores them all);
- DDP does not re-broadcast buffers on every forward (ranks run different numbers of
  forwards during final validation; a collective there would deadlock).

A rank that dies makes its peers' next collective fail (gloo) or time out (NCCL, after
``UMAMBA_DDP_TIMEOUT_S``); the survivors stop with one line saying so and pointing at
``--continue``. The class keeps the name ``umambaTrainer`` so results land in the same
folder as a single-process run: the model is the same, only the way it was trained differs.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch.nn.parallel import DistributedDataParallel

from umamba_seg.atomic import atomic_path, write_json_atomic
from umamba_seg.devices import configure_cpu_threads
from umamba_seg.errors import UserInputError
from umamba_seg.planning.arch_plans import load_plans_with
from umamba_seg.training.fold_run import FoldRun
from umamba_seg.training.recipes import trainer_name
from umamba_seg.training.run import (
    finish_fold,
    fold_plans,
    fold_trainer,
    held_fold,
    newest_checkpoint,
    seed_everything,
)
from umamba_seg.training.trainer import umambaTrainer
from umamba_seg.workspace import Workspace

log = logging.getLogger(__name__)
TIMEOUT_ENV = "UMAMBA_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800
PREPARE_TIMEOUT = timedelta(hours=24)  # rank 0 may plan and preprocess a large dataset first
TORCHRUN_HINT = "launch it with `torchrun --nproc-per-node N -m umamba_seg train ... --ddp`"


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job, as torchrun describes it in the environment."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_rank_info() -> RankInfo:
    """Read ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (set by torchrun); a clear error without them."""
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UserInputError(
            f"--ddp needs the torchrun environment ({', '.join(missing)} not set)", "--ddp", TORCHRUN_HINT
        )
    return RankInfo(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def ddp_timeout() -> timedelta:
    """How long a collective waits for a silent peer before the job fails (env ``UMAMBA_DDP_TIMEOUT_S``)."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise UserInputError(
            f"{TIMEOUT_ENV}={raw!r} is not a number of seconds", TIMEOUT_ENV, "set it to e.g. 1800 or unset it"
        ) from None
    return timedelta(seconds=seconds)


def ddp_device(name: str, info: RankInfo) -> torch.device:
    """``cuda:LOCAL_RANK`` when a GPU is asked for (or ``auto`` finds one), else CPU."""
    if name == "mps":
        raise UserInputError(
            "--ddp does not support MPS (PyTorch has no MPS process-group backend)",
            "--device",
            "use --device cpu or cuda, or train without --ddp",
        )
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        n_gpu = torch.cuda.device_count()
        if n_gpu == 0:
            raise UserInputError(
                "--device cuda requested but no CUDA GPU is visible",
                "--device",
                "use --device cpu (gloo), or check CUDA_VISIBLE_DEVICES and the driver",
            )
        if info.local_rank >= n_gpu:
            raise UserInputError(
                f"local rank {info.local_rank} has no GPU (only {n_gpu} visible on this node)",
                "--nproc-per-node",
                f"start at most {n_gpu} processes per node",
            )
        return torch.device("cuda", info.local_rank)
    if name not in ("auto", "cpu"):
        raise UserInputError(f"unknown device '{name}'", "--device", "choose one of auto, cpu, cuda")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> None:
    """Join the torchrun job: NCCL on CUDA, gloo on CPU, with a timeout so a dead peer cannot hang us."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        # a failed NCCL collective tears the process down instead of leaving it waiting forever
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=ddp_timeout(), device_id=device)
    else:
        dist.init_process_group("gloo", timeout=ddp_timeout())


_PEER_LOSS_MARKERS = (
    "gloo",
    "nccl",
    "connection reset",
    "connection closed",
    "broken pipe",
    "timed out",
    "timeout",
    "socket",
)


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank died or went silent."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in text for m in _PEER_LOSS_MARKERS)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class umambaTrainerDDP(umambaTrainer):  # noqa: N801 - nnU-Net's trainer naming convention
    """:class:`umambaTrainer` that runs under DDP on CUDA (NCCL) or CPU (gloo), any number of nodes.

    Without an initialised process group it behaves exactly like :class:`umambaTrainer`.
    """

    def _after_init(self, device: torch.device) -> None:
        """Under DDP, the device asked for: nnunetv2 forced ``cuda:<global rank>``, the right one is the
        node-local GPU (or the CPU, without a grad scaler)."""
        super()._after_init(device)
        if self.is_ddp:
            self.device = device
            self.grad_scaler = self.grad_scaler if device.type == "cuda" else None

    @property
    def is_main(self) -> bool:
        """Global rank 0 (nnunetv2 stores the *global* rank in ``self.local_rank``)."""
        return self.local_rank == 0

    def initialize(self) -> None:
        if not self.is_ddp:
            return super().initialize()
        # build network/optimizer as in a single process, then wrap for this rank's device
        self.is_ddp = False
        try:
            super().initialize()
        finally:
            self.is_ddp = True
        self._set_batch_size_and_oversample()  # this rank's share of the plans' global batch
        net = self.network
        if self.device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.network = DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None, broadcast_buffers=False
        )
        self.loss = self._build_loss()  # Dice over the global batch, every deep-supervision output used

    def do_split(self):
        """Rank 0 creates ``splits_final.json`` if missing; the others read it afterwards."""
        if not self.is_ddp:
            return super().do_split()
        if self.is_main:
            keys = super().do_split()
            dist.barrier()
            return keys
        dist.barrier()
        return super().do_split()

    def on_train_start(self) -> None:
        """nnunetv2's start, with every file write on rank 0 only (atomic) and a barrier after."""
        if not self.is_ddp:
            return super().on_train_start()
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
        from nnunetv2.utilities.helpers import empty_cache

        if not self.was_initialized:
            self.initialize()
        self.dataloader_train, self.dataloader_val = self.get_dataloaders()
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        self.print_plans()
        empty_cache(self.device)
        if self.is_main:
            self.dataset_class.unpack_dataset(
                self.preprocessed_dataset_folder,
                overwrite_existing=False,
                num_processes=max(1, round(get_allowed_n_proc_DA() // 2)),
                verify=True,
            )
            base = Path(self.output_folder_base)
            Path(self.output_folder).mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.plans_manager.plans, base / "plans.json")
            write_json_atomic(self.dataset_json, base / "dataset.json")
            with atomic_path(base / "dataset_fingerprint.json") as tmp:
                shutil.copyfile(Path(self.preprocessed_dataset_folder_base) / "dataset_fingerprint.json", tmp)
            self.plot_network_architecture()
            self._save_debug_information()
        dist.barrier()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Under DDP rank 0 reads the file and broadcasts it: other nodes need no copy of it."""
        if not self.is_ddp:
            return super().load_checkpoint(filename_or_checkpoint)
        from umamba_seg.training.checkpoint_io import load_checkpoint_safe

        box = [None]
        if self.is_main:
            ckpt = filename_or_checkpoint
            if isinstance(ckpt, (str, os.PathLike)):
                ckpt = load_checkpoint_safe(Path(ckpt), map_location="cpu", trust=self.trust_checkpoints)
            box[0] = ckpt
        dist.broadcast_object_list(box, src=0)
        super().load_checkpoint(box[0])


# the model and its folder are those of a single-process run: results/<umambaTrainer__...>/fold_X
umambaTrainerDDP.__name__ = umambaTrainer.__name__


def recipe_ddp_class(name: str) -> type[umambaTrainerDDP]:
    """The DDP trainer of the recipe class ``name`` (:mod:`.recipe_trainers`): this module's process
    handling over the recipe's values, named as the recipe's class (so its results folder too)."""
    from umamba_seg.training.recipe_trainers import trainer_class

    base = trainer_class(name)
    if base is umambaTrainer:
        return umambaTrainerDDP
    return type(name, (umambaTrainerDDP, base), {"__module__": __name__, "__doc__": base.__doc__})


def _broadcast_from_main(value, group=None):
    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _prepare_on_main(ws: Workspace, dataset_name: str, run: FoldRun) -> Path:
    """Rank 0 plans/preprocesses what is missing; everyone waits (long timeout) and gets rank 0's verdict."""
    from umamba_seg.planning.arch_plans import plans_file

    waiting = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    problem = None
    if _rank() == 0:
        try:
            fold_plans(ws, dataset_name, run)
        except UserInputError as e:
            problem = e
    problem = _broadcast_from_main(problem, waiting)
    dist.destroy_process_group(waiting)
    if problem is not None:
        raise problem
    path = plans_file(ws.preprocessed_dataset(dataset_name), run.arch, run.plan_source)
    if not path.is_file():
        raise UserInputError(
            f"rank {_rank()} cannot see the plans that rank 0 wrote",
            path,
            "put the workdir on a filesystem all nodes share, or run `umamba-seg "
            "plan-and-preprocess` on every node before torchrun",
        )
    return path


def _newest_on_main(folder: Path, trust: bool) -> Path | None:
    """Rank 0's newest checkpoint of ``folder`` (or its reason to refuse one), the same on every rank."""
    newest = None
    if _rank() == 0:
        try:
            newest = newest_checkpoint(folder, trust)
        except UserInputError as e:  # every rank stops with rank 0's reason (e.g. an untrusted checkpoint)
            newest = e
    newest = _broadcast_from_main(newest)
    if isinstance(newest, UserInputError):
        raise newest
    return newest


def train_fold_ddp(
    ws: Workspace, dataset_name: str, run: FoldRun, trainer_class: type[umambaTrainerDDP] | None = None
) -> Path:
    """Train one fold on every rank of a torchrun job; returns the fold's output folder.

    ``run`` as :func:`umamba_seg.training.run.train_fold` takes it; global rank 0, which writes the
    fold folder, holds its lock. ``trainer_class``: default, ``run.recipe``'s (DDP) class.
    """
    main_process = os.environ.get("RANK", "0") == "0"
    with held_fold(ws, dataset_name, run, hold=main_process) as (run, _):
        return _train_held_fold(ws, dataset_name, run, trainer_class)


def _train_held_fold(
    ws: Workspace, dataset_name: str, run: FoldRun, trainer_class: type[umambaTrainerDDP] | None
) -> Path:
    info = torchrun_rank_info()
    dev = ddp_device(run.device, info)
    configure_cpu_threads(dev)
    init_distributed(dev)
    try:
        if trainer_class is None:
            trainer_class = recipe_ddp_class(trainer_name(run.arch, run.recipe))
        plans_path = _prepare_on_main(ws, dataset_name, run)
        plans = load_plans_with(plans_path, run.configuration)
        global_batch = PlansManager(plans).get_configuration(run.configuration).batch_size
        if global_batch < info.world_size:
            raise UserInputError(
                f"the plans' batch size {global_batch} is smaller than the {info.world_size} "
                "processes it is split over",
                plans_path,
                "start fewer processes, or raise batch_size in the plans",
            )
        if run.seed is not None:
            seed_everything(run.seed, info.rank)
        trainer = fold_trainer(trainer_class, plans, ws, dataset_name, run, dev)
        out = Path(trainer.output_folder)
        finish_fold(trainer, run, out, newest=_newest_on_main, main=info.is_main)
        dist.barrier()
        return out
    except RuntimeError as e:
        if not lost_peer(e):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"rank {info.rank} lost contact with the other training processes ({first})",
            "torchrun",
            "see which rank failed first in torchrun's report, fix it, then rerun the same command with --continue",
        ) from e
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
