"""Checkpoints that load with ``torch.load(weights_only=True)``.

nnunetv2 pickles numpy scalars and ``torch.device`` objects into its checkpoints, so they
need the full unpickler, which runs arbitrary code from a stranger's file. We store only
tensors and plain Python containers/scalars, write atomically, and refuse to fully unpickle a
checkpoint unless the user says they trust it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError, require_all_in


def to_safe(obj: Any) -> Any:
    """Recursively turn numpy values, devices and tuples into weights_only-loadable objects."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj) if isinstance(obj, tuple) else [to_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.device):
        return str(obj)
    return obj


def save_checkpoint_safe(checkpoint: dict, filename: str | os.PathLike) -> None:
    """``torch.save`` a sanitised checkpoint to a temporary name, then rename it."""
    with atomic_path(filename) as tmp:
        torch.save(to_safe(checkpoint), tmp)


def load_checkpoint_safe(filename: str | os.PathLike, map_location: Any = "cpu", trust: bool = False) -> dict:
    """Load with ``weights_only=True``; fall back to full unpickling only when ``trust``."""
    path = Path(filename)
    if not path.is_file():
        raise UserInputError("checkpoint not found", path, "train this fold first or pick another -f/--checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised as a user error with the reason
        if (
            isinstance(e, (EOFError, RuntimeError))
            and "pickle" not in str(e).lower()
            and "weights" not in str(e).lower()
        ):
            raise UserInputError(
                f"checkpoint is unreadable or truncated ({type(e).__name__}: {e})",
                path,
                "delete it and re-run training with --continue, or restore it",
            ) from e
        if not trust:
            raise UserInputError(
                "checkpoint needs arbitrary code to unpickle (not loadable with weights_only=True)",
                path,
                "only if you trust its author, pass --trust-checkpoint",
            ) from e
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise UserInputError(
            f"checkpoint is unreadable ({type(e).__name__}: {e})", path, "delete it and re-run training"
        ) from e


TRAINING_STATE_KEYS = ("optimizer_state", "logging", "current_epoch")


def require_training_state(checkpoint: dict, where: str | os.PathLike | None = None) -> None:
    """Refuse to resume from a weights-only checkpoint (``import-model`` / ``install-model`` write those)."""
    require_all_in(
        TRAINING_STATE_KEYS,
        checkpoint,
        lambda missing: (
            f"checkpoint holds no training state ({', '.join(missing)} missing), so training cannot resume from it"
        ),
        where,
        "start a new training from its weights with --pretrained-weights instead of --continue",
    )
