"""``FoldRun``: the settings of one fold's training, as ``umamba-seg train`` takes them.

Single-process training (:func:`umamba_seg.training.run.train_fold`) and DDP training
(:func:`umamba_seg.training.ddp.train_fold_ddp`) take this one value, so the two cannot drift
apart in what they accept; the CLI builds it from ``train``'s flags, the benchmark from its budget.
What only one of them takes (the benchmark's plans name, pretrained weights, a DDP test's trainer
class) stays an argument of that function.
"""

from __future__ import annotations

from dataclasses import dataclass

from umamba_seg.planning.naming import CNN_ARCH
from umamba_seg.training.recipes import DEFAULT_RECIPE


@dataclass(frozen=True)
class FoldRun:
    """One fold of ``arch`` in ``configuration``, trained with ``recipe``.

    ``epochs``/``iters_per_epoch``/``val_iters``: None keeps the recipe's schedule.
    ``device``: ``auto``, ``cpu``, ``cuda`` or ``mps``. ``continue_training``: resume from the fold's
    newest checkpoint. ``npz``: the final validation also saves probabilities. ``seed``: None leaves
    the generators unseeded. ``trust_checkpoint``: allow checkpoints that need full unpickling.
    ``num_processes``: for planning and preprocessing on demand. ``validate``: run the final
    sliding-window validation. ``plan_source``: ``ssm`` or ``cnn`` plans; None, the recipe's.
    """

    configuration: str
    fold: int | str
    arch: str = CNN_ARCH
    epochs: int | None = None
    iters_per_epoch: int | None = None
    val_iters: int | None = None
    device: str = "auto"
    continue_training: bool = False
    npz: bool = False
    seed: int | None = None
    trust_checkpoint: bool = False
    num_processes: int = 2
    validate: bool = True
    plan_source: str | None = None
    recipe: str = DEFAULT_RECIPE
