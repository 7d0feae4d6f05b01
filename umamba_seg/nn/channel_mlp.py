"""Channel MLP on feature maps: 1^d conv -> GELU -> 1^d conv (SegMamba's ``MlpChannel``).

SegMamba normalises each encoder stage's output with InstanceNorm and passes it
through this MLP before it is handed to the decoder.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelMLP(nn.Module):
    """``(B, C, *spatial) -> (B, C, *spatial)`` through a hidden width of ``hidden``."""

    def __init__(self, channels: int, hidden: int, conv_op: type[nn.Module] = nn.Conv3d) -> None:
        super().__init__()
        self.fc1 = conv_op(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = conv_op(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
