"""Vision-LSTM (ViL) layer and block: the xLSTM-UNet token mixer, on our mLSTM op.

The layer maps a token sequence ``(B, L, C) -> (B, L, C)`` as Vision-LSTM's ``ViLLayer``
(the v1 form used by xLSTM-UNet, with a causal conv1d):

* up-projection ``C -> 2 * inner`` (``inner = expansion * C``; 4C by default) split into
  the cell branch ``x`` and the gate branch ``z``;
* ``x`` -> causal depthwise conv1d (k=4) -> SiLU; queries and keys are block-diagonal
  ("headwise", blocks of ``qkv_block_size``) projections of that, values of ``x`` itself;
* the mLSTM cell (``num_heads`` heads) with input and forget gate pre-activations from
  ``concat(q, k, v)``, forget-gate biases spread over ``[3, 6]`` (long memory at init);
  a per-head LayerNorm of its output;
* a learnable skip of the conv branch, ``* silu(z)``, down-projection ``inner -> C``.

``direction="backward"`` reads the sequence from its end (flip in, flip out); stacked
blocks alternate the direction so that every token sees both halves of the image
(Vision-LSTM's block pairs).

:class:`ViLBlock` is the pre-norm residual block ``x + ViLLayer(LN(x))`` on a feature map,
built on :class:`~umamba_seg.nn.token_layer.TokenLayer` (flattening, channel tokens and
the fp32 island under AMP come from there). :func:`make_vil_blocks` stacks blocks for one
encoder stage.

Why a separate module from the op: :mod:`umamba_seg.ops.mlstm` is a pure function of
``(q, k, v, igate, fgate)``; everything learnable lives here.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from umamba_seg.nn.token_layer import TokenLayer, use_channel_tokens
from umamba_seg.ops.mlstm import DEFAULT_CHUNK, mlstm

DIRECTIONS = ("forward", "backward")


def _divisor_at_most(n: int, wanted: int) -> int:
    """``wanted`` if it divides ``n``, else their greatest common divisor (channel-token
    layers have widths such as 2 * 9 voxels that 4 does not divide)."""
    return wanted if n % wanted == 0 else math.gcd(n, wanted)


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map on the last axis: ``dim / block`` independent ``block x block`` maps."""

    def __init__(self, dim: int, block: int, bias: bool = True) -> None:
        super().__init__()
        if dim % block:
            raise ValueError(f"HeadwiseLinear: block size {block} does not divide {dim}")
        self.dim, self.block = dim, block
        self.weight = nn.Parameter(torch.empty(dim // block, block, block))  # (blocks, out, in)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (self.dim // self.block, self.block))
        y = torch.einsum("...ni,noi->...no", blocks, self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"dim={self.dim}, block={self.block}, bias={self.bias is not None}"


class CausalConv1d(nn.Module):
    """Depthwise conv1d over the tokens of ``(B, L, D)`` that sees only the current and earlier tokens.

    The weights are an ``nn.Conv1d``'s (``(D, 1, k)``, tap ``k - 1`` on the current token),
    applied as ``k`` shifted multiply-adds in the token-last layout: no transposes, and on
    CPU its backward is several times faster than the depthwise convolution's.
    """

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = True) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, k = x.shape[1], self.kernel_size
        padded = F.pad(x, (0, 0, k - 1, 0))  # k - 1 zero tokens before the first
        w = self.conv.weight[:, 0, :].to(x.dtype)  # (D, k)
        y = padded[:, k - 1 :] * w[:, k - 1]
        for j in range(k - 1):
            y = y + padded[:, j : j + length] * w[:, j]
        return y if self.conv.bias is None else y + self.conv.bias.to(x.dtype)


class MultiHeadNorm(nn.Module):
    """LayerNorm of each head's output vector, with a per-channel affine map.

    The scale is stored as an offset from 1 (zero at init), as Vision-LSTM does, so weight
    decay pulls it towards the identity.
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps
        self.weight = nn.Parameter(torch.zeros(num_heads, 1, head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, 1, head_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h``: ``(B, heads, L, head_dim)``."""
        normed = F.layer_norm(h, (self.head_dim,), eps=self.eps)
        return normed * (1.0 + self.weight) + self.bias


class ViLLayer(nn.Module):
    """Vision-LSTM's mLSTM layer ``(B, L, C) -> (B, L, C)``; see the module docstring."""

    def __init__(
        self,
        dim: int,
        direction: str = "forward",
        expansion: int = 2,
        qkv_block_size: int = 4,
        num_heads: int = 4,
        conv_kernel_size: int = 4,
        proj_bias: bool = True,
        chunk: int = DEFAULT_CHUNK,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"ViLLayer: direction must be one of {DIRECTIONS}, got {direction!r}")
        self.dim = dim
        self.direction = direction
        self.inner = inner = int(expansion * dim)
        self.num_heads = _divisor_at_most(inner, num_heads)
        self.head_dim = inner // self.num_heads
        self.chunk, self.backend = int(chunk), backend
        block = _divisor_at_most(inner, qkv_block_size)
        self.proj_up = nn.Linear(dim, 2 * inner, bias=proj_bias)
        self.conv = CausalConv1d(inner, conv_kernel_size)
        self.q_proj = HeadwiseLinear(inner, block, bias=proj_bias)
        self.k_proj = HeadwiseLinear(inner, block, bias=proj_bias)
        self.v_proj = HeadwiseLinear(inner, block, bias=proj_bias)
        self.igate = nn.Linear(3 * inner, self.num_heads)
        self.fgate = nn.Linear(3 * inner, self.num_heads)
        self.out_norm = MultiHeadNorm(self.num_heads, self.head_dim)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=proj_bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Vision-LSTM's initialisation: small-init projections (std ``sqrt(2 / 5C)``), Wang
        init of the down-projection, zero gate weights, forget biases linearly in [3, 6],
        input biases ~ N(0, 0.1), skip 1, identity head norm."""
        small = math.sqrt(2 / (5 * self.dim))
        for proj in (self.proj_up, self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(proj.weight, std=small)
            if proj.bias is not None:
                proj.bias.zero_()
        nn.init.normal_(self.proj_down.weight, std=2 / math.sqrt(self.dim))
        if self.proj_down.bias is not None:
            self.proj_down.bias.zero_()
        self.conv.conv.reset_parameters()
        self.fgate.weight.zero_()
        self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        self.igate.weight.zero_()
        nn.init.normal_(self.igate.bias, std=0.1)
        self.learnable_skip.fill_(1.0)
        self.out_norm.weight.zero_()
        self.out_norm.bias.zero_()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, inner) -> (B, heads, L, head_dim)``."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``x``: ``(B, L, dim)``; ``spatial_shape`` is accepted for the mixer interface and
        ignored (one row-major scan, reversed for ``direction="backward"``)."""
        if self.direction == "backward":
            x = x.flip(1)
        x_cell, z = self.proj_up(x).chunk(2, dim=-1)
        conv = F.silu(self.conv(x_cell))
        q, k, v = self.q_proj(conv), self.k_proj(conv), self.v_proj(x_cell)
        gate_in = torch.cat((q, k, v), dim=-1)
        igate = self.igate(gate_in).transpose(1, 2)  # (B, heads, L)
        fgate = self.fgate(gate_in).transpose(1, 2)
        # the op accumulates in fp32 whatever its input dtype; autocast must not recast its internals
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = mlstm(
                self._heads(q), self._heads(k), self._heads(v), igate, fgate, backend=self.backend, chunk=self.chunk
            )
        h = self.out_norm(h).transpose(1, 2).flatten(-2)  # (B, L, inner)
        y = self.proj_down((h + self.learnable_skip * conv) * F.silu(z))
        return y.flip(1) if self.direction == "backward" else y


class ViLBlock(TokenLayer):
    """Pre-norm residual ViL block on a feature map: ``x + ViLLayer(LN(x))``.

    ``dim`` is the channel count, or the voxel count in channel-token mode (then the
    channels are the tokens, as U-Mamba does on small stages).
    """

    def __init__(
        self, dim: int, direction: str = "forward", channel_token: bool = False, fp32: bool = True, **layer_kwargs
    ) -> None:
        super().__init__(
            dim, ViLLayer(dim, direction=direction, **layer_kwargs), channel_token=channel_token, residual=True,
            fp32=fp32,
        )  # fmt: skip

    @property
    def direction(self) -> str:
        return self.mixer.direction


def make_vil_blocks(
    channels: int,
    feature_map_size: Sequence[int],
    depth: int = 1,
    first_direction: int = 0,
    channel_tokens: bool = True,
    fp32: bool = True,
    **layer_kwargs,
) -> nn.Module:
    """``depth`` ViL blocks for a stage of ``channels`` x ``feature_map_size``; block ``i``
    scans ``DIRECTIONS[(first_direction + i) % 2]``. With ``channel_tokens``, U-Mamba's rule
    (no more voxels than channels) makes the channels the tokens."""
    if depth < 1:
        raise ValueError(f"make_vil_blocks: depth must be at least 1, got {depth}")
    channel_token = channel_tokens and use_channel_tokens(channels, feature_map_size)
    dim = math.prod(feature_map_size) if channel_token else channels
    blocks = [
        ViLBlock(dim, DIRECTIONS[(first_direction + i) % 2], channel_token=channel_token, fp32=fp32, **layer_kwargs)
        for i in range(depth)
    ]
    return blocks[0] if depth == 1 else nn.Sequential(*blocks)
