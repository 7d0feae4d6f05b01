"""The Mamba (S6) mixer: ``(B, L, C) -> (B, L, C)``, mamba-ssm's ``Mamba`` block on our scan.

in_proj splits each token into ``x`` and the gate ``z`` (``d_inner = expand * C`` each);
``x`` goes through one scan branch (:class:`~umamba_seg.nn.ssm_branch.SelectiveSSMBranch`:
causal depthwise conv1d k=4 + SiLU, x_proj -> dt, B, C, dt_proj, selective scan with D),
gated by ``silu(z)`` inside the scan, and out_proj maps back to ``C``.

The mixer *is* a branch plus the two projections, so its parameters sit at the top level
with mamba-ssm's names and shapes (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
``A_log``, ``D``, ``out_proj``) and a state dict of mamba-ssm's ``Mamba`` loads as is.
Defaults and initialisation are mamba-ssm's (d_state=16, d_conv=4, expand=2); no
compiled extension is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from umamba_seg.nn.ssm_branch import SelectiveSSMBranch, resolve_dt_rank


class MambaMixer(SelectiveSSMBranch):
    """Mamba-1 block without norm or residual (those belong to the token layer)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        bias: bool = False,
        conv_bias: bool = True,
    ) -> None:
        d_inner = int(expand * d_model)
        super().__init__(d_inner, d_state, d_conv, resolve_dt_rank(dt_rank, d_model), conv_bias=conv_bias)
        self.d_model = d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x``: ``(B, L, d_model)``; ``spatial_shape`` is accepted for a uniform mixer
        interface and ignored (a single row-major scan)."""
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2 * d_inner, L)
        u, z = xz.chunk(2, dim=1)
        y = self.scan(u, z)
        return self.out_proj(y.transpose(1, 2))
