"""``umambaTrainer``: nnunetv2's trainer with the schedule as parameters.

Same training code path as ``nnUNetTrainer`` (losses, augmentation, poly LR, deep
supervision, validation, ``progress.png``) for every architecture. It adds: epochs /
iterations / validation iterations settable per run (nnU-Net's 1000 x 250 + 50 cannot run on
a CPU), a progress bar per epoch, a checkpoint every epoch so ``--continue`` loses at most one
epoch, checkpoints that load with ``weights_only=True``, written atomically, and the wall time of
every training step of a run in ``train_step_times.json`` next to them (``benchmark`` reads it).
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
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from tqdm import tqdm

from umamba_seg.architectures.plans_allowlist import check_architecture, check_plans
from umamba_seg.atomic import write_json_atomic
from umamba_seg.devices import synchronize
from umamba_seg.errors import UserInputError
from umamba_seg.training.checkpoint_io import load_checkpoint_safe, require_training_state, save_checkpoint_safe
from umamba_seg.training.optimizer_recipe import RECIPE_KEY, OptimizerRecipe
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

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        check_plans(plans, _plans_file(plans))  # before nnunetv2 resolves any name or path in them
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1
        self.show_progress = True
        self.train_step_seconds: list[float] = []  # this run's steps, in order

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """nnunetv2's network from the plans, once its ``architecture`` block passed the allow-list."""
        check_architecture(configuration_manager.configuration.get("architecture"), _plans_file(plans_manager.plans))
        return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)

    def configure_schedule(self, epochs: int | None = None, iters_per_epoch: int | None = None,
                           val_iters: int | None = None) -> None:
        """Override nnU-Net's 1000 epochs x 250 iterations (+ 50 validation iterations)."""
        if epochs is not None:
            self.num_epochs = int(epochs)
        if iters_per_epoch is not None:
            self.num_iterations_per_epoch = int(iters_per_epoch)
        if val_iters is not None:
            self.num_val_iterations_per_epoch = int(val_iters)

    def configure_optimizers(self):
        """The optimizer the plans' architecture states (``optimizer_recipe``), nnU-Net's poly schedule.

        Plans without one, and SGD recipes (with their lr and weight decay), use nnU-Net's own SGD."""
        architecture = self.configuration_manager.configuration["architecture"]
        if RECIPE_KEY not in architecture:
            return super().configure_optimizers()
        recipe = OptimizerRecipe.from_architecture(architecture)
        self.initial_lr, self.weight_decay = recipe.lr, recipe.weight_decay
        self.print_to_log_file(f"optimizer from the plans: {recipe.name}, lr {recipe.lr}, "
                               f"weight decay {recipe.weight_decay}")
        if recipe.name == "sgd":
            return super().configure_optimizers()
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

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
        self._stop_dataloaders()
        raise UserInputError(
            f"training loss became {value} at epoch {epoch}, iteration {iteration} (no checkpoint_final.pth written)",
            self.output_folder, "check the images' intensities with `plan-and-preprocess --verify`, or lower the "
                                "learning rate; --continue resumes from checkpoint_latest.pth")

    def _timed_train_step(self) -> dict:
        """One ``train_step`` (forward, backward, optimizer step; loading the batch excluded), timed."""
        batch = next(self.dataloader_train)
        synchronize(self.device)
        t0 = time.perf_counter()
        out = self.train_step(batch)
        synchronize(self.device)
        self.train_step_seconds.append(time.perf_counter() - t0)
        return out

    def _write_step_times(self, first_epoch: int) -> None:
        if self.local_rank != 0:
            return
        write_json_atomic({"seconds": self.train_step_seconds, "first_epoch": first_epoch,
                           "num_epochs": self.num_epochs, "iterations_per_epoch": self.num_iterations_per_epoch,
                           "device": str(self.device)}, Path(self.output_folder) / STEP_TIMES_FILE)

    def run_training(self) -> None:
        """nnunetv2's loop, with progress bars and timed training steps."""
        self.on_train_start()
        first_epoch = self.current_epoch
        self.train_step_seconds = []
        for epoch in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            bar = tqdm(range(self.num_iterations_per_epoch), desc=f"epoch {epoch + 1}/{self.num_epochs} train",
                       disable=not self.show_progress or self.local_rank != 0, leave=False)
            train_outputs = []
            for iteration in bar:
                out = self._timed_train_step()
                self._check_loss(out["loss"], epoch + 1, iteration + 1)
                train_outputs.append(out)
                bar.set_postfix(loss=f"{float(out['loss']):.3f}")
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in tqdm(range(self.num_val_iterations_per_epoch), leave=False,
                                             desc=f"epoch {epoch + 1}/{self.num_epochs} val",
                                             disable=not self.show_progress or self.local_rank != 0)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self._write_step_times(first_epoch)
        self.on_train_end()

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        mod = self.network.module if self.is_ddp else self.network
        mod = getattr(mod, "_orig_mod", mod)
        checkpoint = {
            "network_weights": mod.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "dataset_name": self.plans_manager.dataset_name,
        }
        save_checkpoint_safe(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore weights, optimizer, logger and epoch (nnunetv2's logic; its dict path is broken)."""
        if not self.was_initialized:
            self.initialize()
        if isinstance(filename_or_checkpoint, (str, os.PathLike)):
            ckpt = load_checkpoint_safe(Path(filename_or_checkpoint), map_location=self.device,
                                        trust=self.trust_checkpoints)
        else:
            ckpt = filename_or_checkpoint
        require_training_state(ckpt, filename_or_checkpoint if isinstance(filename_or_checkpoint, (str, os.PathLike))
                               else None)
        mod = self.network.module if self.is_ddp else self.network
        mod = getattr(mod, "_orig_mod", mod)
        own = mod.state_dict().keys()
        weights = {(k[7:] if k not in own and k.startswith("module.") else k): v
                   for k, v in ckpt["network_weights"].items()}
        init_args = dict(ckpt["init_args"])
        if isinstance(init_args.get("device"), str):
            init_args["device"] = torch.device(init_args["device"])
        self.my_init_kwargs = init_args
        self.current_epoch = ckpt["current_epoch"]
        self.logger.load_checkpoint(ckpt["logging"])
        self._best_ema = ckpt["_best_ema"]
        self.inference_allowed_mirroring_axes = ckpt.get("inference_allowed_mirroring_axes",
                                                         self.inference_allowed_mirroring_axes)
        mod.load_state_dict(weights)
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.grad_scaler is not None and ckpt.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
