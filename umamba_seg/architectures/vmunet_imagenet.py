"""VMamba ImageNet checkpoints onto our VM-UNet (``train -a vmunet --pretrained-weights FILE``).

The VM-UNet authors start from the classification checkpoints of VMamba (v0), published as
``vmamba_tiny_e292.pth`` and ``vmamba_small_e238_ema.pth``: a dict whose ``model`` entry
holds the ``VSSM`` backbone (``patch_embed.*``, ``layers.<i>.blocks.<b>.*``,
``layers.<i>.downsample.*``, plus the classifier ``norm.*`` / ``head.*``). Their
``load_from`` copies the backbone into the encoder under the same names, and a second time
into the decoder, encoder stage ``i``'s blocks going to the decoder stage that runs at the
same resolution (``layers_up.<S-1-i>``), wherever names and shapes agree.

This module renames those keys onto ours (``encoder.embed``, ``encoder.stages.<i>.<b>``,
``encoder.merges.<i>``, ``decoder.stages.<S-1-i>.<b>``; inside a block ``ln_1`` -> ``norm``,
``self_attention`` -> ``ssm``, ``conv2d`` -> ``conv``; the SSM's parameter names and layouts
are the same). The caller then loads by name and shape as for any checkpoint, so the
classifier, extra blocks of a deeper backbone (small has 27 blocks in stage 3), the 2D
tensors a 3D network cannot take and a first conv of another channel count are skipped.
"""

from __future__ import annotations

import re

import torch

from umamba_seg.errors import UserInputError

PUBLISHED_FILES = ("vmamba_tiny_e292.pth", "vmamba_small_e238_ema.pth")
_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_MERGE = re.compile(r"^layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$")
_INSIDE = (("ln_1.", "norm."), ("self_attention.conv2d.", "ssm.conv."), ("self_attention.", "ssm."))


def is_vmamba_imagenet(weights: dict) -> bool:
    """Whether a state dict carries VMamba's backbone names (and none of ours)."""
    return "patch_embed.proj.weight" in weights and any(
        k.startswith("layers.0.blocks.0.self_attention.") for k in weights
    )


def _inside_block(rest: str) -> str:
    for theirs, ours in _INSIDE:
        if rest.startswith(theirs):
            return ours + rest[len(theirs) :]
    return rest


def vmamba_imagenet_to_ours(network: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` under our VM-UNet's names (encoder, and decoder copies as the authors do)."""
    from umamba_seg.architectures.vmunet import VMUNet

    if not isinstance(network, VMUNet):
        raise UserInputError(
            f"a VMamba ImageNet checkpoint fits only VM-UNet, not {type(network).__name__}",
            "--pretrained-weights",
            "train with -a vmunet, or pass a checkpoint of this architecture",
        )
    n = len(network.encoder.stages)
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.startswith("patch_embed."):
            out["encoder.embed." + key[len("patch_embed.") :]] = value
        elif m := _MERGE.match(key):
            out[f"encoder.merges.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = value
        elif m := _BLOCK.match(key):
            stage, block, rest = int(m.group(1)), m.group(2), _inside_block(m.group(3))
            out[f"encoder.stages.{stage}.{block}.{rest}"] = value
            if stage < n:
                out[f"decoder.stages.{n - 1 - stage}.{block}.{rest}"] = value
        else:
            out[key] = value  # classifier norm/head: reported as unused
    return out
