"""VM-UNet (JCruan519/VM-UNet) in 2D and 3D, constructible from nnunetv2 plans.

Layout (authors' ``VSSM``): patch embedding (``embed_factor``-strided conv + LN), per
encoder stage a stack of VSS blocks ``x + SS(LN(x))`` then patch merging; a decoder
that, from the bottleneck up, adds the encoder skip, expands the patch and runs its VSS
blocks; a final ``embed_factor`` expand to ``dims[0] // 4`` channels and a 1x1 conv.
The skip added at each decoder stage is the encoder's *input* to the same stage, and the
embedding output is not used as a skip, as in the authors' code. 2D scans 4 orders, 3D
6 (:mod:`umamba_seg.nn.cross_scan`); everything is channels-last inside.

nnunetv2 contract: ``strides`` = ``[[1]*n, embed, merge_1, ..., merge_{S-1}]`` per axis
(``S = len(dims)`` stages), so ``cumprod(strides)`` lists the resolutions of the full
image and of every stage. With deep supervision on, ``forward`` returns
``len(strides) - 1 = S`` logits, highest resolution first: the full-resolution output,
then 1x1-conv heads on the decoder outputs of stages 0 .. S-2 (1/4, 1/8, 1/16 of the
patch with the defaults), which are exactly the trainer's scales
``1 / cumprod(strides)[:-1]``. The heads always exist (checkpoints load either way).

Strides are derived from the patch: each axis is downsampled by the largest power of two
(at most ``embed_factor * 2**(S-1)``, 32 by default) that divides it and leaves at least
``min_bottleneck`` voxels; the embedding takes its share first, then one factor 2 per
merge. :func:`accepted_patch` moves a patch to the nearest size where that factor is
the full one the axis length allows, which the planner applies before building kwargs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from umamba_seg.architectures.preset_keywords import preset_from_keywords, takes_preset_keywords
from umamba_seg.architectures.presets import VMUNetPreset, load_preset
from umamba_seg.architectures.registry import register_with_ablation
from umamba_seg.nn.cross_scan import VSSBlock
from umamba_seg.nn.patch_tokens import PatchEmbed, PatchExpand, PatchMerging

__all__ = ["VMUNet", "vmunet_strides", "accepted_patch"]

_CONV_OPS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DEFAULT = VMUNetPreset()  # the stride functions' default geometry


def _max_log2(preset: VMUNetPreset) -> tuple[int, int]:
    """``(log2 embed_factor, log2 of the largest downsampling)`` of the preset's geometry."""
    if preset.embed_factor < 1 or preset.embed_factor & (preset.embed_factor - 1):
        raise ValueError(f"embed_factor must be a power of two, got {preset.embed_factor}")
    embed_log2 = int(math.log2(preset.embed_factor))
    return embed_log2, embed_log2 + len(preset.dims) - 1


def _max_log2_factor(length: int, max_log2: int, min_bottleneck: int) -> int:
    """Largest k <= max_log2 with 2**k dividing ``length`` and length / 2**k >= min_bottleneck."""
    k = 0
    while k < max_log2 and length % (2 ** (k + 1)) == 0 and length // 2 ** (k + 1) >= min_bottleneck:
        k += 1
    return k


def vmunet_strides(patch_size: Sequence[int], preset: VMUNetPreset = _DEFAULT) -> list[list[int]]:
    """Per-stage strides ``[[1]*n, embed, merge_1, ...]`` (one more entry than ``preset.dims``) for a
    patch, with the preset's geometry (``dims``, ``embed_factor``, ``min_bottleneck``)."""
    embed_log2, max_log2 = _max_log2(preset)
    strides = [[1] * len(patch_size) for _ in range(len(preset.dims) + 1)]
    for axis, length in enumerate(patch_size):
        k = _max_log2_factor(int(length), max_log2, preset.min_bottleneck)
        e = min(k, embed_log2)
        strides[1][axis] = 2**e
        for stage in range(2, 2 + k - e):
            strides[stage][axis] = 2
    return strides


def accepted_patch(patch_size: Sequence[int], preset: VMUNetPreset = _DEFAULT) -> list[int]:
    """Nearest patch whose every axis is a multiple of the full downsampling its length allows
    (``2**k <= length / min_bottleneck``, capped at ``embed_factor * 2**(stages - 1)``)."""
    _, max_log2 = _max_log2(preset)
    out = []
    for length in patch_size:
        length = int(length)
        k = 0
        while k < max_log2 and 2 ** (k + 1) * preset.min_bottleneck <= length:
            k += 1
        m = 2**k
        out.append(max(m, int(round(length / m)) * m))
    return out


class _Encoder(nn.Module):
    def __init__(self, input_channels: int, dims, depths, strides, spatial_dims: int, dpr, ssm_kwargs):
        super().__init__()
        self.embed = PatchEmbed(input_channels, dims[0], strides[1], spatial_dims)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        start = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [VSSBlock(dim, drop_path=dpr[start + b], **ssm_kwargs) for b in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            start += depth
            if i < len(dims) - 1:
                self.merges.append(PatchMerging(dim, dims[i + 1], strides[i + 2], spatial_dims))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.embed(x)
        skips = []
        for i, stage in enumerate(self.stages):
            skips.append(x)
            x = stage(x)
            if i < len(self.merges):
                x = self.merges[i](x)
        return x, skips


class _Decoder(nn.Module):
    def __init__(
        self,
        num_classes: int,
        dims,
        depths_decoder,
        strides,
        spatial_dims: int,
        dpr,
        ssm_kwargs,
        deep_supervision: bool,
    ):
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(dims)
        self.stages = nn.ModuleList()
        self.expands = nn.ModuleList()
        start = 0
        for j, depth in enumerate(depths_decoder):
            s = n - 1 - j  # encoder stage whose resolution this decoder stage runs at
            if j > 0:
                self.expands.append(PatchExpand(dims[s + 1], dims[s], strides[s + 2], spatial_dims))
            blocks = [VSSBlock(dims[s], drop_path=dpr[start + b], **ssm_kwargs) for b in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            start += depth
        final_dim = max(1, dims[0] // 4)
        self.final_expand = PatchExpand(dims[0], final_dim, strides[1], spatial_dims)
        conv = _CONV_OPS[spatial_dims]
        self.final_conv = conv(final_dim, num_classes, kernel_size=1)
        # deep-supervision heads on the decoder outputs of stages 0 .. n-2
        self.seg_heads = nn.ModuleList(conv(dims[s], num_classes, kernel_size=1) for s in range(n - 1))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        n = len(self.stages)
        per_stage: dict[int, torch.Tensor] = {}
        for j, stage in enumerate(self.stages):
            if j > 0:
                x = self.expands[j - 1](x + skips[n - j])
            x = stage(x)
            per_stage[n - 1 - j] = x
        out = self.final_conv(self.final_expand(x).movedim(-1, 1))
        if not self.deep_supervision:
            return out
        heads = [self.seg_heads[s](per_stage[s].movedim(-1, 1)) for s in range(n - 1)]
        return [out] + heads


@takes_preset_keywords(VMUNetPreset)
class VMUNet(nn.Module):
    """VM-UNet for ``conv_op`` = ``nn.Conv2d`` (SS2D, 4 scans) or ``nn.Conv3d`` (SS3D, 6 scans).

    After the plan's layout, every :class:`VMUNetPreset` field is a keyword (``settings``;
    :mod:`~umamba_seg.architectures.preset_keywords`), the preset's value where left out; of the
    geometry fields, ``embed_factor`` gives the strides when the plan has none.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        conv_op: type[nn.Module] = nn.Conv2d,
        strides: Sequence[Sequence[int]] | None = None,
        use_ssm: bool = True,
        scan_backend: str = "auto",
        **settings: Any,
    ):
        super().__init__()
        preset = preset_from_keywords(VMUNetPreset, settings, type(self).__name__)
        dims, depths, depths_decoder = list(preset.dims), preset.depths, preset.depths_decoder
        spatial_dims = {v: k for k, v in _CONV_OPS.items()}.get(conv_op)
        if spatial_dims is None:
            raise ValueError(f"conv_op must be nn.Conv1d/2d/3d, got {conv_op}")
        n = len(dims)
        if len(depths) != n or len(depths_decoder) != n:
            raise ValueError(
                f"dims, depths and depths_decoder need one entry per stage, got {dims}, {depths}, {depths_decoder}"
            )
        if strides is None:
            strides = [[1] * spatial_dims, [preset.embed_factor] * spatial_dims] + [[2] * spatial_dims] * (n - 1)
        strides = [[int(s) for s in st] for st in strides]
        if len(strides) != n + 1 or any(len(st) != spatial_dims for st in strides) or any(s != 1 for s in strides[0]):
            raise ValueError(
                f"strides must be [[1]*{spatial_dims}, embed, merge_1..merge_{n - 1}] ({n + 1} entries), got {strides}"
            )
        self.strides = strides
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        ssm_kwargs = dict(
            config=preset.ssm_config(), spatial_dims=spatial_dims, use_ssm=use_ssm, scan_backend=scan_backend
        )
        dpr = torch.linspace(0, preset.drop_path_rate, sum(depths)).tolist()
        dpr_dec = torch.linspace(0, preset.drop_path_rate, sum(depths_decoder)).tolist()[::-1]
        self.encoder = _Encoder(input_channels, dims, depths, strides, spatial_dims, dpr, ssm_kwargs)
        self.decoder = _Decoder(
            num_classes, dims, depths_decoder, strides, spatial_dims, dpr_dec, ssm_kwargs, deep_supervision
        )
        self.apply(_init_weights)

    def total_stride(self) -> list[int]:
        """Downsampling from the input to the bottleneck, per axis (the patch must be divisible by it)."""
        return [math.prod(st[a] for st in self.strides) for a in range(self.spatial_dims)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        total = self.total_stride()
        if any(s % t for s, t in zip(x.shape[2:], total)):
            raise ValueError(f"VMUNet input {tuple(x.shape[2:])} must be divisible by {total} per axis")
        x, skips = self.encoder(x)
        return self.decoder(x, skips)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Rough count of activations kept for backward for one sample (planner memory proxy)."""
        cum = [1] * self.spatial_dims
        sizes = []
        for st in self.strides:
            cum = [c * s for c, s in zip(cum, st)]
            sizes.append(math.prod(i // c for i, c in zip(input_size, cum)))
        total = math.prod(input_size) * (self.num_classes + 2 * max(1, self.encoder.embed.proj.out_channels // 4))
        blocks = [(self.encoder.stages[i], sizes[i + 1]) for i in range(len(self.encoder.stages))]
        n = len(self.decoder.stages)
        blocks += [(self.decoder.stages[j], sizes[n - j]) for j in range(n)]
        for stage, tokens in blocks:
            for blk in stage:
                ssm = blk.ssm
                c, e, k = ssm.d_model, ssm.d_inner, ssm.num_directions
                per_token = 3 * c + 6 * e
                if ssm.use_ssm:
                    per_token += k * (3 * e + ssm.dt_rank + 2 * ssm.d_state)
                total += tokens * per_token
        return int(total)


def _init_weights(m: nn.Module) -> None:
    """The authors' init: truncated normal (std 0.02) linears, zero biases, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_vmunet_kwargs(
    cnn_kwargs: dict, patch_size: Sequence[int], use_ssm: bool = True, size: str = "default"
) -> dict:
    """``arch_kwargs`` for :class:`VMUNet` from the CNN plan's kwargs and the patch size, at preset ``size``."""
    preset = load_preset("vmunet", size)
    conv_op = cnn_kwargs.get("conv_op") or f"torch.nn.modules.conv.Conv{len(patch_size)}d"
    return {
        "conv_op": conv_op,
        "strides": vmunet_strides(patch_size, preset),
        "dims": list(preset.dims),
        "depths": list(preset.depths),
        "depths_decoder": list(preset.depths_decoder),
        "d_state": preset.d_state,
        "d_conv": preset.d_conv,
        "expand": preset.expand,
        "dt_rank": preset.dt_rank,
        "drop_path_rate": float(preset.drop_path_rate),
        "use_ssm": use_ssm,
    }


def adjust_patch_for_size(patch_size: Sequence[int], size: str = "default") -> list[int]:
    """:func:`accepted_patch` for the geometry of the preset at ``size``."""
    return accepted_patch(patch_size, load_preset("vmunet", size))


register_with_ablation(
    VMUNet,
    "vmunet",
    build_vmunet_kwargs,
    "VM-UNet: VSS blocks with cross-scan SSM (2D: 4 scans, 3D: 6 scans)",
    "VM-UNet ablation: the cross-scan SSM replaced by the identity",
    kw_requires_import=("conv_op",),
    adjust_patch=adjust_patch_for_size,
    authors_optimizer="adamw",
)
