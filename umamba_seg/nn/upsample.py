"""Nearest-neighbour upsampling followed by a 1^d conv (U-Mamba's decoder upsampling).

Cheaper than a transposed conv (a 1^d kernel instead of ``stride^d``) and free of its
checkerboard artefacts; U-Mamba's decoder uses it to go up one stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class NearestUpsampleConv(nn.Module):
    """``(B, C_in, *s) -> (B, C_out, *(s * scale))``."""

    def __init__(
        self, conv_op: type[nn.Module], input_channels: int, output_channels: int, scale: Sequence[int] | int
    ) -> None:
        super().__init__()
        self.scale = tuple(scale) if isinstance(scale, (list, tuple)) else scale
        self.conv = conv_op(input_channels, output_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale if isinstance(self.scale, int) else tuple(float(s) for s in self.scale)
        return self.conv(F.interpolate(x, scale_factor=scale, mode="nearest"))
