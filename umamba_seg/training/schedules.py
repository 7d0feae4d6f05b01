"""Learning-rate schedules that take the epoch, as nnunetv2's trainer steps them.

nnunetv2 calls ``lr_scheduler.step(self.current_epoch)`` at every epoch start, so a resumed run
(``--continue`` at epoch k) sets the same lr as an uninterrupted one. nnunetv2's own
``PolyLRScheduler`` works that way; PyTorch's ``CosineAnnealingLR`` takes an epoch only through
a deprecated path. :class:`EpochCosineAnnealingLR` is PyTorch's scheduler with the epoch
accepted: its closed form (the same values as its recursive steps, restarts after ``T_max``
included), no deprecation warning.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import CosineAnnealingLR


class EpochCosineAnnealingLR(CosineAnnealingLR):
    """``CosineAnnealingLR`` whose ``step(epoch)`` sets the lr of ``epoch`` directly."""

    def step(self, epoch: int | None = None) -> None:  # noqa: D401 - PyTorch's signature
        if epoch is None:
            super().step()
            return
        self.last_epoch = int(epoch)
        for group, lr in zip(self.optimizer.param_groups, self._get_closed_form_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def cosine_lr(base_lr: float, epoch: int, t_max: int, eta_min: float) -> float:
    """The lr ``CosineAnnealingLR`` gives at ``epoch`` (for tests and logs)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
