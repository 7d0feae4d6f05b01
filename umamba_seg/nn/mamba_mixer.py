"""The Mamba (S6) mixer: ``(B, L, C) -> (B, L, C)``, mamba-ssm's ``Mamba`` block on our scan.

in_proj splits each token into ``x`` and the gate ``z`` (``d_inner = expand * C`` each);
``x`` goes through one scan branch (:class:`~umamba_seg.nn.ssm_branch.SelectiveSSMBranch`:
causal depthwise conv1d k=4 + SiLU, x_proj -> dt, B, C, dt_proj, selective scan with D),
gated by ``silu(z)`` inside the scan, and out_proj maps back to ``C``.

The mixer *is* a branch plus the two projections, so its parameters sit at the top level
with mamba-ssm's names and shapes (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
``A_log``, ``D``, ``out_proj``) and a state dict of mamba-ssm's ``Mamba`` loads as is.
Settings come as one :class:`~umamba_seg.nn.ssm_config.SSMConfig` (U-Mamba's preset
gives mamba-ssm's d_state=16, d_conv=4, expand=2); initialisation is mamba-ssm's; no
compiled extension is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from umamba_seg.nn.mamba_projections import MambaProjections
from umamba_seg.nn.ssm_branch import SelectiveSSMBranch
from umamba_seg.nn.ssm_config import SSMConfig


class MambaMixer(SelectiveSSMBranch, MambaProjections):
    """Mamba-1 block without norm or residual (those belong to the token layer)."""

    def __init__(self, d_model: int, config: SSMConfig) -> None:
        super().__init__(d_model, config)
        self.add_in_proj(d_model, config)
        self.add_out_proj(config)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x``: ``(B, L, d_model)``; ``spatial_shape`` is accepted for a uniform mixer
        interface and ignored (a single row-major scan)."""
        u, z = self.project_in(x)
        return self.project_out(self.scan(u, z))
