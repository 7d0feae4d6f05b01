"""One Mamba-1 (S6) scan branch: causal depthwise conv1d + SiLU, x_proj -> (dt, B, C),
dt_proj, and the selective scan with A = -exp(A_log), skip D and the dt bias; and the
SSM initialisers every mixer here uses (this branch, the Mamba mixer built on it, and
VM-UNet's cross-scan SSM).

A Mamba mixer is one branch plus its in/out projections (:mod:`umamba_seg.nn.mamba_mixer`);
SegMamba's tri-orientated mixer has three branches (forward, reversed, inter-slice),
each with its own parameters but sharing the mixer's in/out projections. The branch
reads a sequence that is already in its scan order, so it does not know about images.
Its parameter names are mamba-ssm's (``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``).

The settings come as one :class:`~umamba_seg.nn.ssm_config.SSMConfig`. Initialisation
follows Mamba: ``dt = exp(U[log dt_min, log dt_max])`` clamped at ``dt_init_floor`` and stored as its inverse softplus in the dt_proj bias (so that
``softplus(bias)`` starts in ``[dt_min, dt_max]``); dt_proj weights uniform in
``+-dt_rank**-0.5 * dt_scale``; S4D-real ``A[d, n] = n + 1`` (``A_log = log A``); ``D = 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from umamba_seg.nn.causal_conv1d import CausalConv1d
from umamba_seg.nn.ssm_config import SSMConfig
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.ops.selective_scan import selective_scan


def s4d_real_a_log(d_inner: int, d_state: int) -> torch.Tensor:
    """``log`` of the S4D-real matrix ``A[d, n] = n + 1`` (fp32, ``(d_inner, d_state)``)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    return torch.log(a)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``x`` with ``softplus(x) == y`` for ``y > 0``, computed without overflow."""
    return y + torch.log(-torch.expm1(-y))


def dt_bias_init(d_inner: int, config: SSMConfig) -> torch.Tensor:
    """A dt bias whose softplus is log-uniform in ``[dt_min, dt_max]`` (floored at ``dt_init_floor``)."""
    log_min, log_max = math.log(config.dt_min), math.log(config.dt_max)
    log_dt = torch.rand(d_inner) * (log_max - log_min) + log_min
    return inverse_softplus(torch.exp(log_dt).clamp(min=config.dt_init_floor))


def dt_weight_bound(dt_rank: int, config: SSMConfig) -> float:
    """Mamba's dt_proj weights are uniform in ``+-`` this bound."""
    return dt_rank**-0.5 * config.dt_scale


@torch.no_grad()
def init_dt_projection(dt_proj: nn.Linear, config: SSMConfig) -> None:
    """Mamba's dt initialisation of ``dt_proj`` (weights and bias) in place."""
    bound = dt_weight_bound(dt_proj.in_features, config)
    nn.init.uniform_(dt_proj.weight, -bound, bound)
    dt_proj.bias.copy_(dt_bias_init(dt_proj.out_features, config))


class SelectiveSSMBranch(TokenMixer):
    """Conv1d + selective scan on ``(B, d_inner, L)`` sequences in this branch's order.

    ``d_model`` is the width of the Mamba block the branch belongs to: the branch scans
    ``config.inner(d_model)`` channels with a dt projection of rank ``config.rank(d_model)``.
    """

    def __init__(self, d_model: int, config: SSMConfig) -> None:
        super().__init__()
        self.d_inner = d_inner = config.inner(d_model)
        self.d_model = d_inner  # the branch reads (B, d_inner, L)
        self.d_state = d_state = config.d_state
        self.dt_rank = dt_rank = config.rank(d_model)
        self.conv1d = CausalConv1d(d_inner, config.d_conv, bias=config.conv_bias, channels_last=False)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        init_dt_projection(self.dt_proj, config)
        self.A_log = nn.Parameter(s4d_real_a_log(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        # optimisers that honour these flags (as Mamba's do) skip weight decay on them
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    @property
    def state_size(self) -> int:
        """One ``(d_inner, d_state)`` scan state."""
        return self.d_inner * self.d_state

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``x``, ``z``: ``(B, d_inner, L)`` -> ``y``: ``(B, d_inner, L)`` (``y *= silu(z)`` if z)."""
        return self.scan(x, z)

    def scan(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The branch's computation (the Mamba mixer calls it between its projections)."""
        u = F.silu(self.conv1d(x))
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, r + 2N)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L), bias added in the scan
        a = -torch.exp(self.A_log.float())
        return selective_scan(
            u,
            delta,
            a,
            b.transpose(1, 2),
            c.transpose(1, 2),
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
