"""Vision-LSTM (ViL) layer and block: the xLSTM-UNet token mixer, on our mLSTM op.

The layer maps a token sequence ``(B, L, C) -> (B, L, C)`` as Vision-LSTM's ``ViLLayer``
(the v1 form that xLSTM-UNet ships, with a causal conv1d):

* up-projection ``C -> 2 * inner`` (``inner = expansion * C``; 4C by default, no bias)
  split into the cell branch ``x`` and the gate branch ``z``;
* ``x`` -> causal depthwise conv1d (k=4, with bias) -> SiLU; queries and keys are
  block-diagonal ("headwise") bias-free projections of that, values of ``x`` itself;
  blocks of ``qkv_block_size`` (4), or 2 where ``C`` is not a multiple of it;
* the mLSTM cell with as many heads as the block size (the authors tie the two): input
  and forget gate pre-activations from ``concat(q, k, v)``, forget-gate biases spread
  over ``[3, 6]`` (long memory at init); a bias-free per-head LayerNorm of its output
  whose scale is stored as an offset from 1;
* a learnable skip of the conv branch, ``* silu(z)``, bias-free down-projection ``inner -> C``.

:class:`ViLBlock` is the pre-norm residual block ``x + ViLLayer(LN(x))`` with a bias-free
LayerNorm (scale stored as an offset from 1). Every block scans row-wise from the first
token (Vision-LSTM's ``ROWWISE_FROM_TOP_LEFT``), the only order xLSTM-UNet uses.

Parameter names and shapes are Vision-LSTM's (``layer.proj_up``, ``layer.q_proj``,
``layer.conv1d.conv``, ``layer.mlstm_cell.igate``/``fgate``/``outnorm``,
``layer.learnable_skip``, ``layer.proj_down``, ``norm``), so the authors' weights load
as they are; the computation is the same up to the mLSTM op (our chunkwise op in place
of their quadratic parallel form: same values within float32 rounding, memory linear in L).

Why a separate module from the op: :mod:`umamba_seg.ops.mlstm` is a pure function of
``(q, k, v, igate, fgate)``; everything learnable lives here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from umamba_seg.nn.causal_conv1d import CausalConv1d
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.ops.mlstm import DEFAULT_CHUNK, mlstm


def qkv_block_size_for(dim: int, wanted: int = 4) -> int:
    """The authors' rule: blocks of ``wanted`` when it divides ``dim``, else blocks of 2
    (channel-token layers have widths such as 2 * 9 voxels)."""
    return wanted if dim % wanted == 0 else 2


class HeadwiseLinear(nn.Module):
    """Bias-free block-diagonal linear map on the last axis: ``dim / block`` independent ``block x block`` maps."""

    def __init__(self, dim: int, block: int) -> None:
        super().__init__()
        if dim % block:
            raise ValueError(f"HeadwiseLinear: block size {block} does not divide {dim}")
        self.dim, self.block = dim, block
        self.weight = nn.Parameter(torch.empty(dim // block, block, block))  # (blocks, out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (self.dim // self.block, self.block))
        return torch.einsum("...ni,noi->...no", blocks, self.weight).flatten(-2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, block={self.block}"


class OffsetLayerNorm(nn.Module):
    """Bias-free LayerNorm over the last axis whose scale is ``1 + weight`` (zero at init),
    so weight decay pulls it towards the identity (Vision-LSTM's norm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), 1.0 + self.weight, None, self.eps)


class MultiHeadLayerNorm(nn.Module):
    """LayerNorm of each head's vector, then a bias-free per-channel scale ``1 + weight``.

    ``(B, heads, L, head_dim) -> (B, L, heads * head_dim)``; the same as Vision-LSTM's
    group norm with one group per head.
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.num_heads, self.eps = dim, num_heads, eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(h, (h.shape[-1],), eps=self.eps)
        return normed.transpose(1, 2).flatten(-2) * (1.0 + self.weight)


class MLSTMCell(nn.Module):
    """The mLSTM cell on ``q, k, v: (B, L, inner)``: gates from ``concat(q, k, v)``, our
    mLSTM op, the per-head norm. Returns ``(B, L, inner)``."""

    def __init__(self, dim: int, num_heads: int, chunk: int = DEFAULT_CHUNK, backend: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MLSTMCell: {num_heads} heads do not divide {dim}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.chunk, self.backend = int(chunk), backend
        self.igate = nn.Linear(3 * dim, num_heads)
        self.fgate = nn.Linear(3 * dim, num_heads)
        self.outnorm = MultiHeadLayerNorm(dim, num_heads)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Zero gate weights, forget biases linearly in [3, 6], input biases ~ N(0, 0.1), identity norm."""
        self.fgate.weight.zero_()
        self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
        self.igate.weight.zero_()
        nn.init.normal_(self.igate.bias, std=0.1)
        self.outnorm.weight.zero_()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, inner) -> (B, heads, L, head_dim)``."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        gate_in = torch.cat((q, k, v), dim=-1)
        igate = self.igate(gate_in).transpose(1, 2)  # (B, heads, L)
        fgate = self.fgate(gate_in).transpose(1, 2)
        # the op accumulates in fp32 whatever its input dtype; autocast must not recast its internals
        with torch.autocast(device_type=q.device.type, enabled=False):
            h = mlstm(
                self._heads(q), self._heads(k), self._heads(v), igate, fgate, backend=self.backend, chunk=self.chunk
            )
        return self.outnorm(h)


class ViLLayer(TokenMixer):
    """Vision-LSTM's mLSTM layer ``(B, L, C) -> (B, L, C)``; see the module docstring."""

    def __init__(
        self,
        dim: int,
        expansion: int = 2,
        qkv_block_size: int = 4,
        conv_kernel_size: int = 4,
        chunk: int = DEFAULT_CHUNK,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.dim = self.d_model = dim
        self.inner = inner = int(expansion * dim)
        block = qkv_block_size_for(dim, qkv_block_size)
        self.proj_up = nn.Linear(dim, 2 * inner, bias=False)
        self.q_proj = HeadwiseLinear(inner, block)
        self.k_proj = HeadwiseLinear(inner, block)
        self.v_proj = HeadwiseLinear(inner, block)
        # Vision-LSTM wraps its conv (``conv1d.conv``); the dict keeps that key layout
        self.conv1d = nn.ModuleDict({"conv": CausalConv1d(inner, conv_kernel_size, channels_last=True)})
        self.mlstm_cell = MLSTMCell(inner, num_heads=block, chunk=chunk, backend=backend)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=False)
        self.reset_parameters()

    @property
    def num_heads(self) -> int:
        return self.mlstm_cell.num_heads

    @property
    def state_size(self) -> int:
        """Per head the mLSTM's matrix memory ``(dh, dh)`` and normaliser ``(dh)``."""
        dh = self.mlstm_cell.head_dim
        return self.num_heads * (dh * dh + dh)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Vision-LSTM's initialisation: small-init projections (std ``sqrt(2 / 5C)``), Wang
        init of the down-projection (std ``2 / sqrt(C)``), the conv's default init, skip 1,
        and the cell's own (see :meth:`MLSTMCell.reset_parameters`)."""
        small = math.sqrt(2 / (5 * self.dim))
        for proj in (self.proj_up, self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(proj.weight, std=small)
        nn.init.normal_(self.proj_down.weight, std=2 / math.sqrt(self.dim))
        self.conv1d["conv"].reset_parameters()
        self.learnable_skip.fill_(1.0)
        self.mlstm_cell.reset_parameters()

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``x``: ``(B, L, dim)`` read from its first token; ``spatial_shape`` is accepted for
        the mixer interface and ignored."""
        x_cell, z = self.proj_up(x).chunk(2, dim=-1)
        conv = F.silu(self.conv1d["conv"](x_cell))
        h = self.mlstm_cell(self.q_proj(conv), self.k_proj(conv), self.v_proj(x_cell))
        return self.proj_down((h + self.learnable_skip * conv) * F.silu(z))


class ViLBlock(TokenMixer):
    """Pre-norm residual ViL block on a token sequence: ``x + ViLLayer(LN(x))`` (bias-free LN)."""

    def __init__(self, dim: int, **layer_kwargs) -> None:
        super().__init__()
        self.dim = self.d_model = dim
        self.norm = OffsetLayerNorm(dim)
        self.layer = ViLLayer(dim, **layer_kwargs)

    @property
    def state_size(self) -> int:
        return self.layer.state_size

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        return x + self.layer(self.norm(x), spatial_shape)
