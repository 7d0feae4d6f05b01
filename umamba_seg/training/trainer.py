"""``umambaTrainer``: nnunetv2's trainer with the schedule as parameters.

Same training code path as ``nnUNetTrainer`` (losses, augmentation, poly LR, deep
supervision, validation, ``progress.png``) for every architecture. It adds: epochs /
iterations / validation iterations settable per run (nnU-Net's 1000 x 250 + 50 cannot run on
a CPU), progress bars per epoch, a checkpoint every epoch so ``--continue`` loses at most one
epoch, checkpoints that load with ``weights_only=True``, written atomically, and the wall time of
every training step of a run in ``train_step_times.json`` next to them (``benchmark`` reads it).
All of it goes through nnunetv2's extension points (``train_step``, ``validation_step``, the
``on_*`` hooks, ``save_checkpoint``); its ``run_training`` loop runs unchanged.
A non-finite training loss stops the run with one line naming the fold folder (no
``checkpoint_final.pth`` of NaN weights); augmentation workers die with the process.
Its plans pass :mod:`umamba_seg.architectures.plans_allowlist` before nnunetv2 resolves a name in them.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from tqdm import tqdm

from umamba_seg.architectures.plans_allowlist import check_architecture, check_plans
from umamba_seg.atomic import atomic_path, write_json_atomic
from umamba_seg.devices import synchronize
from umamba_seg.errors import UserInputError
from umamba_seg.log import show_progress
from umamba_seg.training.checkpoint_io import load_checkpoint_safe, require_training_state, to_safe
from umamba_seg.training.worker_lifetime import workers_die_with_parent

STEP_TIMES_FILE = "train_step_times.json"
# consecutive non-finite losses tolerated: none without a grad scaler (the step already wrote NaN
# into the weights); a few with one (it skips such steps and lowers its scale)
NONFINITE_STEPS_WITH_SCALER = 5


def _plans_file(plans: dict) -> str:
    """Where these plans come from, for error messages (``<preprocessed>/<dataset>/<plans>.json``)."""
    base = os.environ.get("nnUNet_preprocessed")
    name = f"{plans.get('dataset_name')}/{plans.get('plans_name')}.json" if isinstance(plans, dict) else "plans"
    return os.path.join(base, name) if base else f"plans {name}"


class umambaTrainer(nnUNetTrainer):  # noqa: N801 - nnU-Net's trainer naming convention
    """nnUNetTrainer with a configurable schedule and safe, atomic checkpoints."""

    trust_checkpoints: bool = False

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        check_plans(plans, _plans_file(plans))  # before nnunetv2 resolves any name or path in them
        self.show_progress = show_progress()  # off under --quiet; before nnunetv2's __init__ logs its first lines
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1
        self.train_step_seconds: list[float] = []  # this run's steps, in order
        self._first_timed_epoch: int | None = None  # the epoch this run's first timed step belongs to
        self._iteration = 0  # training step within the epoch, for the non-finite-loss message
        self._bar: tqdm | None = None  # the open progress bar (training or validation)
        self._after_init(device)

    def _after_init(self, device: torch.device) -> None:
        """Where subclasses set their values once nnunetv2's ``__init__`` has set its own.

        Subclasses override this hook, not ``__init__``: nnunetv2 records ``__init__``'s parameters
        (``inspect.signature``) to rebuild the trainer from a checkpoint, and stock
        ``nnUNetv2_train -tr <class>`` calls it with exactly these five. ``device``: the one asked for
        (nnunetv2 may have replaced ``self.device``)."""

    @staticmethod
    def build_network_architecture(
        plans_manager,
        configuration_manager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> torch.nn.Module:
        """nnunetv2's network from the plans, once its ``architecture`` block passed the allow-list."""
        check_architecture(configuration_manager.configuration.get("architecture"), _plans_file(plans_manager.plans))
        return nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        )

    def configure_schedule(
        self, epochs: int | None = None, iters_per_epoch: int | None = None, val_iters: int | None = None
    ) -> None:
        """Override nnU-Net's 1000 epochs x 250 iterations (+ 50 validation iterations)."""
        if epochs is not None:
            self.num_epochs = int(epochs)
        if iters_per_epoch is not None:
            self.num_iterations_per_epoch = int(iters_per_epoch)
        if val_iters is not None:
            self.num_val_iterations_per_epoch = int(val_iters)

    def get_dataloaders(self):
        """nnunetv2's loaders; their worker processes are killed by the kernel if this process dies."""
        with workers_die_with_parent():
            return super().get_dataloaders()

    def _stop_dataloaders(self) -> None:
        for loader in (self.dataloader_train, self.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()

    def _check_loss(self, loss, epoch: int, iteration: int) -> None:
        """Count consecutive non-finite losses; stop training with one clear line when too many."""
        value = float(loss)
        if math.isfinite(value):
            self._nonfinite_steps = 0
            return
        self._nonfinite_steps = getattr(self, "_nonfinite_steps", 0) + 1
        if self._nonfinite_steps <= (NONFINITE_STEPS_WITH_SCALER if self.grad_scaler is not None else 0):
            return
        self.print_to_log_file(f"training loss is {value} at epoch {epoch}, iteration {iteration}: stopping")
        self._close_bar()
        self._stop_dataloaders()
        raise UserInputError(
            f"training loss became {value} at epoch {epoch}, iteration {iteration} (no checkpoint_final.pth written)",
            self.output_folder,
            "check the images' intensities with `plan-and-preprocess --verify`, or lower the "
            "learning rate; --continue resumes from checkpoint_latest.pth",
        )

    def print_to_log_file(self, *args, also_print_to_console: bool = True, add_timestamp: bool = True) -> None:
        """nnU-Net's training log, written to ``training_log_*.txt`` as always; ``--quiet`` only
        keeps its lines off the console."""
        super().print_to_log_file(
            *args, also_print_to_console=also_print_to_console and self.show_progress, add_timestamp=add_timestamp
        )

    # progress bars: opened by the epoch-start hooks, advanced by the steps, closed by the epoch-end hooks

    def _open_bar(self, phase: str, total: int) -> None:
        self._close_bar()
        self._bar = tqdm(
            total=total,
            desc=f"epoch {self.current_epoch + 1}/{self.num_epochs} {phase}",
            leave=False,
            disable=not self.show_progress or self.local_rank != 0,
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None

    def _advance_bar(self, step_outputs: dict) -> dict:
        """One step more on the open bar, showing the step's loss; returns ``step_outputs``."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{float(step_outputs['loss']):.3f}")
        return step_outputs

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self._first_timed_epoch is None:
            self._first_timed_epoch = self.current_epoch  # where this run (a fresh one or --continue) started
        self._iteration = 0
        self._open_bar("train", self.num_iterations_per_epoch)

    def run_training(self) -> None:
        """nnunetv2's loop; an open progress bar is closed however the loop ends, so an error line
        printed after it (a lost DDP peer, a non-finite loss) starts a line of its own."""
        try:
            super().run_training()
        finally:
            self._close_bar()

    def train_step(self, batch: dict) -> dict:
        """nnunetv2's step (forward, backward, optimizer step; loading the batch excluded), timed with the
        device synchronised before and after, and its loss checked for NaN/Inf."""
        synchronize(self.device)
        t0 = time.perf_counter()
        out = super().train_step(batch)
        synchronize(self.device)
        self.train_step_seconds.append(time.perf_counter() - t0)
        self._iteration += 1
        self._check_loss(out["loss"], self.current_epoch + 1, self._iteration)
        return self._advance_bar(out)

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        self._close_bar()
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._open_bar("val", self.num_val_iterations_per_epoch)

    def validation_step(self, batch: dict) -> dict:
        return self._advance_bar(super().validation_step(batch))

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        self._close_bar()
        super().on_validation_epoch_end(val_outputs)

    def _write_step_times(self) -> None:
        if self.local_rank != 0:
            return
        first = self.current_epoch if self._first_timed_epoch is None else self._first_timed_epoch
        write_json_atomic(
            {
                "seconds": self.train_step_seconds,
                "first_epoch": first,
                "num_epochs": self.num_epochs,
                "iterations_per_epoch": self.num_iterations_per_epoch,
                "device": str(self.device),
            },
            Path(self.output_folder) / STEP_TIMES_FILE,
        )

    def on_train_end(self) -> None:
        """This run's step times (``train_step_times.json``), then nnunetv2's final checkpoint and shutdown."""
        self._write_step_times()
        super().on_train_end()

    def save_checkpoint(self, filename: str) -> None:
        """nnunetv2's checkpoint, written to a temporary name and renamed.

        The logger's numpy scalars become Python floats first, so the file loads with
        ``torch.load(weights_only=True)`` (nnunetv2 stores nothing else a weights-only load refuses)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)  # writes nothing (or logs that checkpointing is off)
        self.logger.load_checkpoint(to_safe(self.logger.get_checkpoint()))
        self._best_ema = to_safe(self._best_ema)
        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore weights, optimizer, logger and epoch from a path or an already loaded checkpoint.

        The one copy of nnunetv2 left here: 2.8.1's ``load_checkpoint`` unpickles a path with
        ``weights_only=False`` (runs code from the file) and fails on a dict (``checkpoint`` is unbound;
        fixed upstream after 2.8.1 in MIC-DKFZ/nnUNet#3047), so the restore is repeated after our
        weights-only load. It also accepts checkpoints whose ``init_args`` store the device as a string."""
        if not self.was_initialized:
            self.initialize()
        if isinstance(filename_or_checkpoint, (str, os.PathLike)):
            ckpt = load_checkpoint_safe(
                Path(filename_or_checkpoint), map_location=self.device, trust=self.trust_checkpoints
            )
        else:
            ckpt = filename_or_checkpoint
        require_training_state(
            ckpt, filename_or_checkpoint if isinstance(filename_or_checkpoint, (str, os.PathLike)) else None
        )
        mod = self.network.module if self.is_ddp else self.network
        mod = getattr(mod, "_orig_mod", mod)
        own = mod.state_dict().keys()
        weights = {
            (k[7:] if k not in own and k.startswith("module.") else k): v for k, v in ckpt["network_weights"].items()
        }
        init_args = dict(ckpt["init_args"])
        if isinstance(init_args.get("device"), str):
            init_args["device"] = torch.device(init_args["device"])
        self.my_init_kwargs = init_args
        self.current_epoch = ckpt["current_epoch"]
        self.logger.load_checkpoint(ckpt["logging"])
        self._best_ema = ckpt["_best_ema"]
        self.inference_allowed_mirroring_axes = ckpt.get(
            "inference_allowed_mirroring_axes", self.inference_allowed_mirroring_axes
        )
        mod.load_state_dict(weights)
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
