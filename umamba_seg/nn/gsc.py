"""SegMamba's gated spatial convolution (GSC) block, 2D or 3D from ``conv_op``.

Two branches read the input: 3^d conv-IN-ReLU twice, and 1^d conv-IN-ReLU; their sum
goes through a 1^d conv-IN-ReLU and is added to the input. It gives each SegMamba stage
local spatial context before the Mamba layers flatten the map to tokens. Instance norms
are non-affine, as in the authors' code.
"""

from __future__ import annotations

import torch
from dynamic_network_architectures.building_blocks.helper import get_matching_instancenorm
from torch import nn


def conv_norm_relu(conv_op: type[nn.Module], channels: int, kernel_size: int) -> nn.Sequential:
    """``conv(k, same padding) -> InstanceNorm -> ReLU`` keeping ``channels``."""
    norm = get_matching_instancenorm(conv_op)
    return nn.Sequential(
        conv_op(channels, channels, kernel_size, 1, kernel_size // 2),
        norm(channels),
        nn.ReLU(),
    )


class GSC(nn.Module):
    """``x + CNR1(CNR3(CNR3(x)) + CNR1(x))`` on ``(B, C, *spatial)``."""

    def __init__(self, channels: int, conv_op: type[nn.Module] = nn.Conv3d) -> None:
        super().__init__()
        self.spatial = nn.Sequential(conv_norm_relu(conv_op, channels, 3), conv_norm_relu(conv_op, channels, 3))
        self.pointwise = conv_norm_relu(conv_op, channels, 1)
        self.fuse = conv_norm_relu(conv_op, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(self.spatial(x) + self.pointwise(x))
