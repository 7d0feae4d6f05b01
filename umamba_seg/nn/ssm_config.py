"""The hyper-parameters of a Mamba (S6) block, one frozen value every SSM mixer here takes.

The scan branch (:mod:`umamba_seg.nn.ssm_branch`), the Mamba mixer built on it, SegMamba's
tri-orientated mixer (three branches) and VM-UNet's cross-scan SSM are configured by the same
settings with the same meaning, so they travel as one :class:`SSMConfig` instead of a keyword
list repeated (and defaulted) in every constructor.

The sizes (``d_state``, ``d_conv``, ``expand``, ``dt_rank``) have no default here: the
networks' presets (:mod:`umamba_seg.architectures.presets`, a layer above) are the one place
those live. The rest are mamba-ssm's constants, which no preset changes: bias-free in/out
projections, a conv bias, and the dt initialisation (``dt = exp(U[log dt_min, log dt_max])``
floored at ``dt_init_floor``; dt_proj weights uniform in ``+-dt_rank**-0.5 * dt_scale``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    """Mamba's ``dt_rank="auto"`` is ``ceil(d_model / 16)``."""
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    return int(dt_rank)


@dataclass(frozen=True)
class SSMConfig:
    """A Mamba block's settings; widths follow from the block's ``d_model`` (:meth:`inner`, :meth:`rank`)."""

    d_state: int  # SSM state size N
    d_conv: int  # depthwise conv width
    expand: float  # d_inner = expand * d_model
    dt_rank: int | str  # rank of the dt projection; "auto": ceil(d_model / 16)
    bias: bool = False  # biases of the in/out projections
    conv_bias: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0

    def inner(self, d_model: int) -> int:
        """The scan width ``d_inner`` of a block of width ``d_model``."""
        return int(self.expand * d_model)

    def rank(self, d_model: int) -> int:
        """The dt projection's rank for a block of width ``d_model``."""
        return resolve_dt_rank(self.dt_rank, d_model)
