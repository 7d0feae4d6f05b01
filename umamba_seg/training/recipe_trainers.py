"""The authors' recipes as nnU-Net trainer classes (``-tr <class>``), one per recipe.

nnU-Net's way of changing a training: a subclass of the trainer that sets its values once
nnunetv2's ``__init__`` has run (here in :meth:`umambaTrainer._after_init`) and overrides nnunetv2's
extension points (``configure_optimizers``, ``_build_loss``, ``_set_batch_size_and_oversample``).
The class name is the results folder's trainer name, so a fold folder says which recipe trained
it, and stock ``nnUNetv2_train -tr <class>`` (with ``nnUNet_extTrainer`` pointing at
:mod:`umamba_seg.training.nnunet_trainers`) trains exactly what ``umamba-seg train --recipe authors`` trains. :class:`umambaTrainer` itself
is the ``nnunet`` recipe. ``train --epochs/--iters-per-epoch/--val-iters`` still override a
recipe's schedule (``configure_schedule``).

SegMamba's gradient-norm clip (12, ``light_training/trainer.py``) is nnunetv2's
(``nnUNetTrainer.train_step`` clips at 12), so no class changes the step.
"""

from __future__ import annotations

import math

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from umamba_seg.training.losses import ce_dice_loss, cross_entropy_loss, is_binary
from umamba_seg.training.param_groups import decay_groups
from umamba_seg.training.recipes import (
    SEGMAMBA_AUTHORS,
    UMAMBA_AUTHORS,
    VMUNET_AUTHORS,
    XLSTM_BOT_AUTHORS,
    XLSTM_ENC_AUTHORS,
    Recipe,
)
from umamba_seg.training.schedules import EpochCosineAnnealingLR
from umamba_seg.training.trainer import _plans_file, umambaTrainer

ADAMW_BETAS = (0.9, 0.999)  # PyTorch's defaults, as VM-UNet's config states them
ADAMW_EPS = 1e-8


class RecipeTrainer(umambaTrainer):  # noqa: N801 - nnU-Net's trainer naming convention
    """:class:`umambaTrainer` with the values of :attr:`recipe` (subclasses set it)."""

    recipe: Recipe

    def _after_init(self, device: torch.device) -> None:
        """The recipe's optimizer values, schedule and deep supervision over nnunetv2's."""
        super()._after_init(device)
        r = self.recipe
        self.initial_lr = r.lr
        self.weight_decay = r.weight_decay
        self.num_epochs = r.epochs
        self.enable_deep_supervision = r.deep_supervision
        self._iterations_from_cases = r.iterations_per_epoch is None
        if r.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = r.iterations_per_epoch

    # schedule

    def configure_schedule(
        self, epochs: int | None = None, iters_per_epoch: int | None = None, val_iters: int | None = None
    ) -> None:
        """As :class:`umambaTrainer`'s; an explicit ``iters_per_epoch`` also replaces "one pass"."""
        if iters_per_epoch is not None:
            self._iterations_from_cases = False
        super().configure_schedule(epochs, iters_per_epoch, val_iters)

    def recipe_batch_size(self) -> int | None:
        """The recipe's (global) batch for this configuration; None: the plan's."""
        return self.recipe.batch_size(len(self.configuration_manager.patch_size))

    def _set_batch_size_and_oversample(self) -> None:
        """nnunetv2's split of the batch (over DDP ranks too), from the recipe's batch if it has one."""
        batch = self.recipe_batch_size()
        if batch is None:
            return super()._set_batch_size_and_oversample()
        conf = self.configuration_manager.configuration
        planned = conf.get("batch_size")
        conf["batch_size"] = batch
        try:
            super()._set_batch_size_and_oversample()
        finally:
            conf["batch_size"] = planned

    def one_pass_iterations(self) -> int:
        """Iterations of one pass over the fold's training cases at the (global) batch."""
        train_keys, _ = self.do_split()
        batch = self.recipe_batch_size() or self.configuration_manager.batch_size
        return max(1, math.ceil(len(train_keys) / batch))

    def get_dataloaders(self):
        """nnunetv2's loaders (single process and DDP alike); then the training cases are known, so
        "one pass over them" becomes a number of iterations, and the recipe goes into the log."""
        loaders = super().get_dataloaders()
        if self._iterations_from_cases:  # VM-UNet's epoch: one pass over the training cases
            self.num_iterations_per_epoch = self.one_pass_iterations()
        r = self.recipe
        self.print_to_log_file(
            f"recipe {self.__class__.__name__}: {r.optimizer} lr {self.initial_lr:g} weight decay "
            f"{self.weight_decay:g}, {r.schedule} schedule, {self.num_epochs} epochs x "
            f"{self.num_iterations_per_epoch} iterations, batch {self.batch_size}, loss {r.loss}, deep supervision "
            f"{'on' if self.enable_deep_supervision else 'off'}",
            add_timestamp=False,
        )
        return loaders

    # optimizer and learning rate

    def cosine_t_max(self) -> int:
        """VM-UNet's cosine period: its binary (ISIC) config's, or its multi-class (Synapse) config's."""
        p = self.recipe.schedule_params
        return int(p["t_max_binary"] if is_binary(self.label_manager) else p["t_max_multiclass"])

    def configure_optimizers(self):
        r = self.recipe
        if r.optimizer == "sgd":
            return super().configure_optimizers()  # nnU-Net's SGD and poly at this recipe's lr and decay
        optimizer = torch.optim.AdamW(
            decay_groups(self.network, self.weight_decay), lr=self.initial_lr, betas=ADAMW_BETAS, eps=ADAMW_EPS
        )
        if r.schedule == "cosine":
            scheduler = EpochCosineAnnealingLR(
                optimizer, T_max=self.cosine_t_max(), eta_min=float(r.schedule_params["eta_min"])
            )
        else:
            scheduler = PolyLRScheduler(
                optimizer, self.initial_lr, self.num_epochs, float(r.schedule_params["exponent"])
            )
        return optimizer, scheduler

    # loss

    def _build_loss(self):
        r = self.recipe
        if r.loss == "dice_ce":
            return super()._build_loss()  # nnU-Net's, with deep supervision where the recipe keeps it
        where = _plans_file(self.plans_manager.plans)
        if r.loss == "ce":
            return cross_entropy_loss(self.label_manager, where)
        return ce_dice_loss(self.label_manager, self.is_ddp, where)


class umambaTrainer_UMambaAuthors(RecipeTrainer):  # noqa: N801
    """U-Mamba's authors: nnU-Net's trainer unchanged, on nnU-Net's CNN plan."""

    recipe = UMAMBA_AUTHORS


class umambaTrainer_xLSTMUNetBotAuthors(RecipeTrainer):  # noqa: N801
    """xLSTM-UNet Bot's authors: nnU-Net's SGD at lr 5e-3, 4000 epochs, batch 6 in 2D, CNN plan."""

    recipe = XLSTM_BOT_AUTHORS


class umambaTrainer_xLSTMUNetEncAuthors(RecipeTrainer):  # noqa: N801
    """xLSTM-UNet Enc's authors: nnU-Net's SGD at lr 5e-3, 4000 epochs, batch 1 in 2D, CNN plan."""

    recipe = XLSTM_ENC_AUTHORS


class umambaTrainer_SegMambaAuthors(RecipeTrainer):  # noqa: N801
    """SegMamba's authors: nnU-Net's SGD and poly, batch 2 in 3D, cross-entropy only, one output."""

    recipe = SEGMAMBA_AUTHORS


class umambaTrainer_VMUNetAuthors(RecipeTrainer):  # noqa: N801
    """VM-UNet's authors: AdamW (A_logs/Ds not decayed), cosine annealing per epoch, 300 epochs of one
    pass over the training cases, batch 32 in 2D, CE (= BCE) + Dice, one output.

    Their own ``train.py`` hands ``model.parameters()`` to AdamW, so their runs decay A_logs and Ds
    despite the marks; here the marks are honoured (parameter groups, :mod:`.param_groups`)."""

    recipe = VMUNET_AUTHORS


RECIPE_TRAINERS: tuple[type[umambaTrainer], ...] = (
    umambaTrainer,
    umambaTrainer_UMambaAuthors,
    umambaTrainer_xLSTMUNetBotAuthors,
    umambaTrainer_xLSTMUNetEncAuthors,
    umambaTrainer_SegMambaAuthors,
    umambaTrainer_VMUNetAuthors,
)


def trainer_class(name: str) -> type[umambaTrainer]:
    """The trainer class named ``name`` (one of :data:`RECIPE_TRAINERS`)."""
    for cls in RECIPE_TRAINERS:
        if cls.__name__ == name:
            return cls
    raise KeyError(name)
