"""``train --pretrained-weights CHECKPOINT``: start a network from another model's weights.

Every tensor of the checkpoint whose name and shape equal one of the network's is copied; the
rest of the network keeps its fresh initialisation. A model of another dataset thus gives
everything but what depends on the task: the segmentation heads (another class count) and a
first convolution with another channel count are skipped, and reported. Checkpoints load with
``weights_only=True`` (``--trust-checkpoint`` to fully unpickle); ours, ``import-model``ed
ones, nnU-Net's (``network_weights``) and plain state dicts (``model`` / ``state_dict`` or
top-level tensors) are read, with DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.``
prefixes removed. VM-UNet also takes the VMamba ImageNet checkpoints its authors start from
(:mod:`umamba_seg.architectures.vmunet_imagenet`). Nothing matching is an error (exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from umamba_seg.errors import UserInputError
from umamba_seg.training.checkpoint_io import load_checkpoint_safe

_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class PretrainedReport:
    source: Path
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # network key -> why it kept its initialisation
    unused: list[str] = field(default_factory=list)  # checkpoint keys the network has no place for
    loaded_parameters: int = 0
    total_parameters: int = 0
    mapping: str | None = None  # a key mapping applied (e.g. VMamba ImageNet -> VM-UNet)

    def lines(self) -> list[str]:
        n = len(self.loaded) + len(self.skipped)
        out = [
            f"pretrained weights from {self.source}"
            + (f" ({self.mapping})" if self.mapping else "")
            + f": loaded {len(self.loaded)} of {n} tensors ({self.loaded_parameters:,} of "
            f"{self.total_parameters:,} values), skipped {len(self.skipped)}, "
            f"{len(self.unused)} checkpoint tensor(s) unused"
        ]
        out += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        if self.unused:
            more = len(self.unused) - 10
            shown = ", ".join(self.unused[:10]) + (f", ... ({more} more)" if more > 0 else "")
            out.append(f"  unused from the checkpoint: {shown}")
        return out


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def read_state_dict(path: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, by name, whatever container they come in."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(
            "pretrained checkpoint not found", path, "pass an existing .pth file to --pretrained-weights"
        )
    ckpt = load_checkpoint_safe(path, map_location="cpu", trust=trust)
    weights = ckpt
    if isinstance(ckpt, dict):
        for key in ("network_weights", "model", "state_dict"):
            if isinstance(ckpt.get(key), dict):
                weights = ckpt[key]
                break
    if not isinstance(weights, dict):
        raise UserInputError(
            "checkpoint holds no state dict of tensors",
            path,
            "pass a checkpoint of umamba-seg / nnU-Net or a state dict saved with torch.save",
        )
    return {_strip(str(k)): v for k, v in weights.items() if isinstance(v, torch.Tensor)}


def bare_module(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP and/or ``torch.compile`` wrapper."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


def _foreign_mapping(network: torch.nn.Module, weights: dict) -> tuple[dict, str] | None:
    """A published checkpoint of another code base renamed onto ``network``'s keys, if one applies."""
    from umamba_seg.architectures.vmunet_imagenet import is_vmamba_imagenet, vmamba_imagenet_to_ours

    if is_vmamba_imagenet(weights):
        return vmamba_imagenet_to_ours(network, weights), "VMamba ImageNet backbone mapped onto VM-UNet"
    return None


def load_pretrained_weights(
    network: torch.nn.Module, path: str | os.PathLike, trust: bool = False, log: Callable[[str], None] = print
) -> PretrainedReport:
    """Copy the matching tensors of ``path`` into ``network``; log and return what happened."""
    module = bare_module(network)
    weights = read_state_dict(path, trust)
    report = PretrainedReport(Path(path))
    mapped = _foreign_mapping(module, weights)
    if mapped is not None:
        weights, report.mapping = mapped
    own = module.state_dict()
    take: dict[str, torch.Tensor] = {}
    for key, tensor in own.items():
        report.total_parameters += tensor.numel()
        src = weights.get(key)
        if src is None:
            report.skipped[key] = "not in the checkpoint"
        elif tuple(src.shape) != tuple(tensor.shape):
            report.skipped[key] = f"shape {tuple(src.shape)} in the checkpoint, {tuple(tensor.shape)} here"
        else:
            take[key] = src.to(dtype=tensor.dtype)
            report.loaded.append(key)
            report.loaded_parameters += tensor.numel()
    report.unused = sorted(k for k in weights if k not in own)
    if not take:
        raise UserInputError(
            f"no tensor of the checkpoint matches the network by name and shape "
            f"({len(weights)} in the checkpoint, {len(own)} in the network)",
            Path(path),
            "pass a checkpoint of the same architecture (-a) trained by umamba-seg",
        )
    module.load_state_dict(take, strict=False)
    for line in report.lines():
        log(line)
    return report
