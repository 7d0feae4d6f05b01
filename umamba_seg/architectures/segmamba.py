"""SegMamba (Xing et al. 2024) in 2D and 3D, constructible from nnunetv2 plans.

Encoder (``SegMambaEncoder``): a stride-2 stem conv (7^d) to ``feature_size[0]``, then
per stage: [IN + 2^d stride-2 conv for stages > 0] -> GSC -> ``depths[i]`` layers
``x + ToM(LN(x))`` (tri-orientated Mamba: forward, reversed and inter-slice scans) ->
stage output IN + channel MLP. Decoder: MONAI UNETR residual blocks
(``UnetrBasicBlock`` on the input and on each stage output, bottleneck ``hidden_size``;
``UnetrUpBlock`` to go up), as in the authors' code, plus 1^d heads for nnU-Net deep
supervision at scales 1, 1/2, ... (one per stage).

Differences from the authors' code, on purpose: 2D from ``conv_op`` (the inter-slice
scan is then the column scan); the slice count of the inter-slice scan is the first
spatial size of each stage's map at run time, so any patch divisible by ``2**stages``
works (theirs hard-codes 128^3); deep-supervision heads exist (unused weights with it
off: about 0.003 M parameters at the reference size). ``use_ssm=False`` replaces each
Mamba layer with the identity (the ``segmamba_nossm`` ablation).
"""

from __future__ import annotations

import math
import pydoc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_instancenorm
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock
from torch import nn

from umamba_seg.architectures.preset_keywords import preset_from_keywords, takes_preset_keywords
from umamba_seg.architectures.presets import SegMambaPreset, load_preset
from umamba_seg.architectures.registry import register_with_ablation
from umamba_seg.nn.channel_mlp import ChannelMLP
from umamba_seg.nn.gsc import GSC
from umamba_seg.nn.token_layer import TokenLayer
from umamba_seg.nn.tri_oriented import TriOrientedMamba

_DEFAULT = SegMambaPreset()  # the default stage count of adjust_patch


def segmamba_strides(n_stages: int, dim: int) -> list[list[int]]:
    """nnU-Net style strides of SegMamba: full resolution, then ``n_stages`` halvings."""
    return [[1] * dim] + [[2] * dim for _ in range(n_stages)]


def _resolve(op: type | str) -> type:
    return pydoc.locate(op) if isinstance(op, str) else op


class SegMambaEncoder(nn.Module):
    """The Mamba encoder; returns the ``len(feature_size)`` stage outputs, finest first."""

    def __init__(
        self, input_channels: int, conv_op: type[nn.Module], preset: SegMambaPreset, use_ssm: bool = True
    ) -> None:
        super().__init__()
        feature_size, ssm = preset.feature_size, preset.ssm_config()
        norm = get_matching_instancenorm(conv_op)
        k = preset.stem_kernel
        down = [conv_op(input_channels, feature_size[0], k, 2, k // 2)]
        for i in range(1, len(feature_size)):
            down.append(nn.Sequential(norm(feature_size[i - 1]), conv_op(feature_size[i - 1], feature_size[i], 2, 2)))
        self.downsample_layers = nn.ModuleList(down)
        self.gscs = nn.ModuleList(GSC(c, conv_op) for c in feature_size)
        stages = []
        for c, depth in zip(feature_size, preset.depths):
            if use_ssm:
                layers = [
                    TokenLayer(c, TriOrientedMamba(c, ssm), residual=True, fp32=preset.ssm_fp32) for _ in range(depth)
                ]
                stages.append(nn.Sequential(*layers))
            else:
                stages.append(nn.Identity())
        self.stages = nn.ModuleList(stages)
        self.out_norms = nn.ModuleList(norm(c) for c in feature_size)
        self.mlps = nn.ModuleList(ChannelMLP(c, preset.mlp_ratio * c, conv_op) for c in feature_size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for down, gsc, stage, out_norm, mlp in zip(
            self.downsample_layers, self.gscs, self.stages, self.out_norms, self.mlps
        ):
            x = stage(gsc(down(x)))
            outs.append(mlp(out_norm(x)))
        return outs


class SegMambaDecoder(nn.Module):
    """UNETR-style decoder; ``deep_supervision`` toggles the list output (nnunetv2)."""

    def __init__(
        self,
        spatial_dims: int,
        feature_size: Sequence[int],
        hidden_size: int,
        num_classes: int,
        deep_supervision: bool,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(feature_size)
        ups = []
        for level in reversed(range(n)):  # coarsest first
            below = hidden_size if level == n - 1 else feature_size[level + 1]
            ups.append(
                UnetrUpBlock(spatial_dims, below, feature_size[level], 3, 2, norm_name=norm_name, res_block=True)
            )
        self.up_blocks = nn.ModuleList(ups)
        self.final_block = UnetrBasicBlock(
            spatial_dims, feature_size[0], feature_size[0], 3, 1, norm_name=norm_name, res_block=True
        )
        self.out = UnetOutBlock(spatial_dims, feature_size[0], num_classes)
        # heads at 1/2, 1/4, ... (always built so checkpoints load with or without DS)
        self.ds_heads = nn.ModuleList(UnetOutBlock(spatial_dims, c, num_classes) for c in feature_size[1:])

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """``skips``: the input-resolution block, one per stage (finest first), and the
        bottleneck last."""
        x = skips[-1]
        coarse = []  # decoder outputs at 1/2**level, coarsest first
        for i, up in enumerate(self.up_blocks):
            x = up(x, skips[-(i + 2)])
            coarse.append(x)
        full = self.out(self.final_block(x))
        if not self.deep_supervision:
            return full
        finer_first = coarse[::-1][1:]  # levels 1 .. n-1
        return [full] + [head(t) for head, t in zip(self.ds_heads, finer_first)]


@takes_preset_keywords(SegMambaPreset)
class SegMamba(nn.Module):
    """SegMamba for 2D or 3D (``conv_op``); signature as nnunetv2's ``get_network_from_plans`` calls it:
    the plan's layout, then every :class:`SegMambaPreset` field as a keyword (``settings``;
    :mod:`~umamba_seg.architectures.preset_keywords`), the preset's value where left out."""

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        conv_op: type[nn.Module] | str = nn.Conv3d,
        strides: Sequence[Sequence[int]] | None = None,
        patch_size: Sequence[int] | None = None,
        use_ssm: bool = True,
        norm_name: str = "instance",
        **settings: Any,
    ) -> None:
        super().__init__()
        preset = preset_from_keywords(SegMambaPreset, settings, type(self).__name__)
        feature_size, hidden_size = list(preset.feature_size), preset.hidden_size
        conv_op = _resolve(conv_op)
        dim = convert_conv_op_to_dim(conv_op)
        if len(preset.depths) != len(feature_size):
            raise ValueError(f"depths {list(preset.depths)} and feature_size {feature_size} differ in length")
        expected = segmamba_strides(len(feature_size), dim)
        if strides is not None and [list(s) for s in strides] != expected:
            raise ValueError(f"SegMamba's strides are fixed to {expected}, the plan says {strides}")
        self.strides = expected
        self.patch_size = None if patch_size is None else list(patch_size)
        self.conv_op = conv_op
        self.encoder = SegMambaEncoder(input_channels, conv_op, preset, use_ssm)
        ins = [input_channels, *feature_size]
        outs = [*feature_size, hidden_size]
        self.skip_blocks = nn.ModuleList(
            UnetrBasicBlock(dim, i, o, 3, 1, norm_name=norm_name, res_block=True) for i, o in zip(ins, outs)
        )
        self.decoder = SegMambaDecoder(dim, feature_size, hidden_size, num_classes, deep_supervision, norm_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        factor = 2 ** len(self.encoder.stages)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"SegMamba needs spatial sizes divisible by {factor}, got {tuple(x.shape[2:])}")
        feats = [x, *self.encoder(x)]
        skips = [block(f) for block, f in zip(self.skip_blocks, feats)]
        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Rough activation count (voxels x channels summed over the main tensors) for planners."""
        total = 0
        enc = self.encoder
        widths = [m.fc1.in_channels for m in enc.mlps]
        size = list(input_size)
        total += 3 * widths[0] * math.prod(size)  # input block + final block + up block output
        for i, c in enumerate(widths):
            size = [s // 2 for s in size]
            vox = math.prod(size)
            mamba_layers = 0 if isinstance(enc.stages[i], nn.Identity) else len(enc.stages[i])
            # GSC (5 maps), MLP (2C + C), skip block and up block (~4 maps), Mamba layers
            # (in_proj 4C, three branches of ~3 x 2C each, out C)
            total += vox * c * (5 + 3 + 4 + mamba_layers * (4 + 18 + 1))
        return int(np.int64(total))


def adjust_patch(patch_size: Sequence[int], n_stages: int = len(_DEFAULT.feature_size)) -> list[int]:
    """Nearest patch SegMamba accepts: each axis a multiple of ``2**n_stages``, at least two
    of them (a 1-voxel bottleneck breaks InstanceNorm, which always uses instance statistics)."""
    factor = 2**n_stages
    return [max(2 * factor, int(round(p / factor)) * factor) for p in patch_size]


def build_kwargs(cnn_kwargs: dict, patch_size: Sequence[int], use_ssm: bool = True, size: str = "default") -> dict:
    """SegMamba's ``arch_kwargs`` for a configuration planned for the CNN, at preset ``size``."""
    preset = load_preset("segmamba", size)
    dim = len(patch_size)
    n_stages = len(preset.feature_size)
    return {
        "conv_op": cnn_kwargs["conv_op"],
        "strides": segmamba_strides(n_stages, dim),
        "patch_size": adjust_patch(patch_size, n_stages),
        "feature_size": list(preset.feature_size),
        "depths": list(preset.depths),
        "hidden_size": preset.hidden_size,
        "stem_kernel": preset.stem_kernel,
        "mlp_ratio": preset.mlp_ratio,
        "d_state": preset.d_state,
        "d_conv": preset.d_conv,
        "expand": preset.expand,
        "dt_rank": preset.dt_rank,
        "ssm_fp32": preset.ssm_fp32,
        "use_ssm": use_ssm,
    }


def adjust_patch_for_size(patch_size: Sequence[int], size: str = "default") -> list[int]:
    """:func:`adjust_patch` for the stages of the preset at ``size``."""
    return adjust_patch(patch_size, len(load_preset("segmamba", size).feature_size))


register_with_ablation(
    SegMamba,
    "segmamba",
    build_kwargs,
    "SegMamba: GSC + tri-orientated Mamba encoder, UNETR decoder",
    "SegMamba with every Mamba layer replaced by the identity (ablation)",
    adjust_patch=adjust_patch_for_size,
)
