"""The forks' checkpoints: read without running their code, weights checked against our network.

Their trainers ``torch.save`` a full nnunetv2 2.1 checkpoint: ``network_weights`` (the state
dict), ``optimizer_state``, ``logging`` (lists of numpy floats), ``_best_ema`` (a numpy
float), ``init_args`` (plans, dataset.json, a ``torch.device``), ``trainer_name``,
``current_epoch``, ``inference_allowed_mirroring_axes``. ``torch.load(weights_only=True)``
refuses the numpy values, and the full unpickler would run whatever a stranger's file
names; so we load with ``weights_only=True`` plus numpy's scalar, array and dtype
reconstructors only (both the numpy 1 ``numpy.core`` and numpy 2 ``numpy._core`` names),
and refuse a file that names any other class.

Weight names: our U-Mamba and xLSTM-UNet have the authors' module names and nesting
(:mod:`umamba_seg.architectures.token_mixer_unet`), so every key of theirs is a key of ours
with the same shape, ``decoder.encoder.*`` (their decoder's reference to the encoder)
included, except the ``nn.LayerNorm`` that xLSTM-UNet's ViL wrapper creates and its forward
never calls (``xlstm.norm``, ``encoder.xlstm_layers.<s>.norm`` and its ``decoder.encoder``
copy): :func:`authors_unused_keys` is the one rule, those tensors are dropped and reported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from umamba_seg.architectures.token_mixer_unet import authors_unused_keys
from umamba_seg.errors import UserInputError, require_all_in

# torch.serialization.safe_globals with (object, "pickled.name") entries
MIN_TORCH = (2, 6)


def _numpy_globals() -> list:
    """What numpy values need from the unpickler: scalars, arrays, dtypes (numeric and bool)."""
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray

    dtype_classes = sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}, key=lambda c: c.__name__)
    allowed: list = [np.dtype, np.ndarray, *dtype_classes, multiarray.scalar, multiarray._reconstruct]
    if multiarray.__name__ != "numpy.core.multiarray":  # numpy 2 reading numpy 1's names
        allowed += [
            (multiarray.scalar, "numpy.core.multiarray.scalar"),
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        ]
    return allowed


def _global_name(entry) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def load_fork_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` and numpy values admitted.

    A missing, truncated or unreadable file, one that names any class beyond tensors,
    builtins and numpy values, or one without ``network_weights``: :class:`UserInputError`
    naming the file.
    """
    from torch.torch_version import TorchVersion

    path = Path(path)
    if not path.is_file():
        raise UserInputError("checkpoint not found", path, "pass the model folder the fork wrote")
    if TorchVersion(torch.__version__) < MIN_TORCH:
        raise UserInputError(
            f"reading the forks' checkpoints safely needs torch >= {'.'.join(map(str, MIN_TORCH))} "
            f"(this is {torch.__version__})",
            path,
            "upgrade torch (pip install -U torch)",
        )
    allowed = _numpy_globals()
    allowed_names = {_global_name(e) for e in allowed}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - not a zip checkpoint, or damaged: reported below by torch.load
        names = []
        first_error = e
    else:
        first_error = None
    require_all_in(
        names,
        allowed_names,
        lambda refused: (
            f"checkpoint names '{refused[0]}', which is neither a tensor nor a numpy value (loading it could run code)"
        ),
        path,
        "import only checkpoints written by the forks' trainers",
    )
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of a stranger's file is a user error
        reason = str(first_error or e).strip().splitlines()[0][:200]
        raise UserInputError(
            f"checkpoint is unreadable or not safely loadable ({type(e).__name__}: {reason})",
            path,
            "import only complete checkpoints written by the forks' trainers",
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), Mapping):
        raise UserInputError(
            "checkpoint has no 'network_weights' state dict",
            path,
            "pass a checkpoint_final.pth written by the forks' nnunetv2 trainers",
        )
    bad = [k for k, v in ckpt["network_weights"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserInputError(
            f"network_weights entry '{bad[0]}' is not a named tensor",
            path,
            "pass a checkpoint_final.pth written by the forks' nnunetv2 trainers",
        )
    return ckpt


def shared_keys(network: torch.nn.Module) -> list[list[str]]:
    """Groups of state-dict keys that are one tensor of ``network`` (``encoder.*`` and the
    decoder's ``decoder.encoder.*`` reference to it)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in network.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def authors_to_ours(
    arch: str,
    authors_weights: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size | tuple],
    where: str | Path,
    shared: Sequence[Sequence[str]] = (),
) -> tuple[OrderedDict, list[str]]:
    """The authors' state dict as ours, checked against ``expected`` (our network's name ->
    shape); returns it and the authors' unused keys that were dropped.

    A missing weight, an extra weight, a shape mismatch, or two keys of one tensor
    (``shared``, see :func:`shared_keys`) with different values: :class:`UserInputError`
    naming the key and ``where``.
    """
    unused = set(authors_unused_keys(authors_weights)) - set(expected)
    ours: OrderedDict = OrderedDict()
    dropped: list[str] = []
    for key, value in authors_weights.items():
        if key in unused:
            dropped.append(key)
            continue
        if key not in expected:
            raise UserInputError(
                f"weight '{key}' has no counterpart in our {arch} network",
                where,
                f"import only models of the authors' {arch} trainer, trained on this plans.json",
            )
        if tuple(value.shape) != tuple(expected[key]):
            raise UserInputError(
                f"weight '{key}' has shape {list(value.shape)}, our {arch} network needs {list(expected[key])}",
                where,
                "the checkpoint does not belong to this plans.json (or was edited)",
            )
        ours[key] = value
    require_all_in(
        expected,
        ours,
        lambda missing: f"weight '{missing[0]}' is missing ({len(missing)} missing in all)",
        where,
        "the checkpoint is incomplete or belongs to another network; use the one the trainer wrote",
    )
    for keys in shared:
        differs = [k for k in keys[1:] if ours[k].device.type != "meta" and not torch.equal(ours[k], ours[keys[0]])]
        if differs:
            raise UserInputError(
                f"weights '{keys[0]}' and '{differs[0]}' are one tensor of the network but differ",
                where,
                "the checkpoint was edited; use the one the trainer wrote",
            )
    return OrderedDict((k, ours[k]) for k in expected), dropped
