"""The authors' losses where they differ from nnU-Net's, assembled from nnunetv2's parts.

* ``ce`` (SegMamba: ``nn.CrossEntropyLoss`` alone): nnunetv2's ``RobustCrossEntropyLoss``, as its
  ``nnUNetTrainerCELoss`` builds it.
* ``bce_dice`` (VM-UNet): cross-entropy + soft Dice, weights 1:1, nnunetv2's ``DC_and_CE_loss``.
  Multi-class (their Synapse ``CeDiceLoss``): Dice over all classes, background included, pooled
  over the batch. Binary (their ISIC ``BceDiceLoss``): our networks give two softmax channels,
  and cross-entropy over two softmax channels equals BCE on the sigmoid of their logit difference,
  so CE here is their BCE; Dice on the foreground only, per sample, smooth 1, as theirs.

Deep supervision, where a recipe keeps it, wraps the loss as nnU-Net does
(``nnUNetTrainer._build_loss``); the authors' recipes using these losses have none.
"""

from __future__ import annotations

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from torch import nn

from umamba_seg.errors import UserInputError

LOSSES: tuple[str, ...] = ("dice_ce", "ce", "bce_dice")


def _softmax_labels_only(label_manager: LabelManager, loss: str, where: str | None) -> None:
    if label_manager.has_regions:
        raise UserInputError(
            f"the '{loss}' loss of this recipe needs one label per voxel, and this dataset trains on regions",
            where,
            "train it with --recipe nnunet",
        )


def cross_entropy_loss(label_manager: LabelManager, where: str | None = None) -> nn.Module:
    """Cross-entropy only (ignore label honoured)."""
    _softmax_labels_only(label_manager, "ce", where)
    ignore = label_manager.ignore_label if label_manager.has_ignore_label else -100
    return RobustCrossEntropyLoss(weight=None, ignore_index=ignore)


def is_binary(label_manager: LabelManager) -> bool:
    """One foreground label (VM-UNet's binary setting: sigmoid output, BCE + Dice)."""
    return len(label_manager.foreground_labels) == 1


def ce_dice_loss(label_manager: LabelManager, is_ddp: bool = False, where: str | None = None) -> nn.Module:
    """VM-UNet's BCE + Dice (binary) or CE + Dice (multi-class), weights 1:1."""
    _softmax_labels_only(label_manager, "bce_dice", where)
    binary = is_binary(label_manager)
    dice = {"batch_dice": not binary, "do_bg": not binary, "smooth": 1.0 if binary else 1e-5, "ddp": is_ddp}
    return DC_and_CE_loss(
        dice,
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=label_manager.ignore_label,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
