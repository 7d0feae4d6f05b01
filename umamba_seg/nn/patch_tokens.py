"""N-D patch embedding, merging and expanding on channels-last maps (VM-UNet / Swin style).

VM-UNet works on ``(B, *spatial, C)`` tensors: a strided conv + LayerNorm embeds
patches, :class:`PatchMerging` folds each ``f0 x f1 [x f2]`` neighbourhood into the
channels (LN + linear), :class:`PatchExpand` is the inverse (linear, then the channels
are spread over the neighbourhood, LN). Factors are per axis, so the same modules serve
2D, isotropic 3D and anisotropic 3D (a factor of 1 leaves that axis alone).
The sub-grid order in :class:`PatchMerging` is the authors' (first axis offset fastest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["PatchEmbed", "PatchMerging", "PatchExpand"]


def _factors(factors: Sequence[int] | int, spatial_dims: int) -> tuple[int, ...]:
    if isinstance(factors, int):
        return (factors,) * spatial_dims
    factors = tuple(int(f) for f in factors)
    if len(factors) != spatial_dims or any(f < 1 for f in factors):
        raise ValueError(f"need {spatial_dims} positive factors, got {factors}")
    return factors


class PatchEmbed(nn.Module):
    """``(B, C_in, *spatial)`` channels-first -> ``(B, *spatial / f, dim)`` channels-last."""

    def __init__(self, in_channels: int, dim: int, factors: Sequence[int] | int, spatial_dims: int = 2):
        super().__init__()
        self.factors = _factors(factors, spatial_dims)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
        self.proj = conv(in_channels, dim, kernel_size=self.factors, stride=self.factors)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1))


class PatchMerging(nn.Module):
    """``(B, *s, C)`` -> ``(B, *s / f, out_dim)``: neighbourhoods to channels, LN, linear."""

    def __init__(self, dim: int, out_dim: int, factors: Sequence[int] | int, spatial_dims: int = 2):
        super().__init__()
        self.factors = _factors(factors, spatial_dims)
        k = math.prod(self.factors)
        self.norm = nn.LayerNorm(k * dim)
        self.reduction = nn.Linear(k * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, c = x.shape
        n = len(spatial)
        if any(s % f for s, f in zip(spatial, self.factors)):
            raise ValueError(f"spatial size {tuple(spatial)} is not divisible by merge factors {self.factors}")
        split = [v for s, f in zip(spatial, self.factors) for v in (s // f, f)]
        x = x.reshape(b, *split, c)
        coarse = [1 + 2 * i for i in range(n)]
        offsets = [2 + 2 * i for i in reversed(range(n))]  # first axis offset varies fastest
        x = x.permute(0, *coarse, *offsets, 2 * n + 1)
        x = x.reshape(b, *(s // f for s, f in zip(spatial, self.factors)), -1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """``(B, *s, dim)`` -> ``(B, *s * f, out_dim)``: linear to ``prod(f) * out_dim``, spread, LN."""

    def __init__(self, dim: int, out_dim: int, factors: Sequence[int] | int, spatial_dims: int = 2):
        super().__init__()
        self.factors = _factors(factors, spatial_dims)
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, math.prod(self.factors) * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        n = len(spatial)
        x = self.expand(x).reshape(b, *spatial, *self.factors, self.out_dim)
        order = [v for i in range(n) for v in (1 + i, 1 + n + i)]  # interleave coarse, offset
        x = x.permute(0, *order, 2 * n + 1)
        x = x.reshape(b, *(s * f for s, f in zip(spatial, self.factors)), self.out_dim)
        return self.norm(x)
