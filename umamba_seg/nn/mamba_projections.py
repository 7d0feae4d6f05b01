"""mamba-ssm's projections around a Mamba block's scans, shared by the mixers that have them.

``in_proj`` maps each token ``(B, L, d_model)`` to the scan input ``x`` and the gate ``z``
(``d_inner`` channels each, channels first for the scan); ``out_proj`` maps the gated scan
output back to ``d_model``. The Mamba mixer has one scan branch between them and SegMamba's
tri-orientated mixer three; both keep mamba-ssm's names (``in_proj``, ``out_proj``) so their
state dicts load as the authors'. Each constructor adds the two where its layout has them,
so parameter order (what optimizer states in checkpoints follow) is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from umamba_seg.nn.ssm_config import SSMConfig


class MambaProjections:
    """Mixin of a mixer ``(B, L, d_model) -> (B, L, d_model)`` with mamba-ssm's in/out projections."""

    d_model: int
    d_inner: int
    in_proj: nn.Linear
    out_proj: nn.Linear

    def add_in_proj(self, d_model: int, config: SSMConfig) -> None:
        """Set the block's widths and add ``in_proj`` (``d_model -> 2 * d_inner``)."""
        self.d_model = d_model
        self.d_inner = config.inner(d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=config.bias)

    def add_out_proj(self, config: SSMConfig) -> None:
        """Add ``out_proj`` (``d_inner -> d_model``)."""
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=config.bias)

    def project_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, d_model)`` -> the scan input and the gate, ``(B, d_inner, L)`` each."""
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)
        return u, z

    def project_out(self, y: torch.Tensor) -> torch.Tensor:
        """The gated scan output ``(B, d_inner, L)`` -> ``(B, L, d_model)``."""
        return self.out_proj(y.transpose(1, 2))
