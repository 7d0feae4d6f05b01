"""Causal depthwise conv1d over a token sequence, shared by every token mixer.

Mamba's scan branch and Vision-LSTM's layer both run a depthwise conv1d (width 4) over
the tokens that sees only the current and earlier tokens. The parameters are an
``nn.Conv1d``'s (``weight (D, 1, k)``, ``bias (D)``, tap ``k - 1`` on the current token),
so state dicts are laid out as mamba-ssm's and Vision-LSTM's; the forward is ``k``
shifted multiply-adds in the caller's layout instead of a padded convolution: no
transposes, and on CPU its backward is several times faster than the depthwise
convolution's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    """``y[t] = bias + sum_j weight[:, 0, j] * x[t - (k - 1) + j]`` (zeros before the first token).

    ``channels_last=True`` reads ``(B, L, D)`` (Vision-LSTM), ``False`` reads ``(B, D, L)``
    (Mamba's branch); the output has the input's layout.
    """

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = True, channels_last: bool = True) -> None:
        super().__init__(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1, bias=bias)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        w = self.weight[:, 0, :].to(x.dtype)  # (D, k)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.channels_last:  # (B, L, D): shift along dim 1
            length = x.shape[1]
            padded = F.pad(x, (0, 0, k - 1, 0))  # k - 1 zero tokens before the first
            taps = [padded[:, j : j + length] for j in range(k)]
        else:  # (B, D, L): shift along the last dim, per-channel weights as (D, 1)
            length = x.shape[-1]
            padded = F.pad(x, (k - 1, 0))
            taps = [padded[..., j : j + length] for j in range(k)]
            w = w[:, None, :]  # (D, 1, k)
            bias = None if bias is None else bias[:, None]
        y = taps[k - 1] * w[..., k - 1]
        for j in range(k - 1):
            y = y + taps[j] * w[..., j]
        return y if bias is None else y + bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, causal, channels_last={self.channels_last}"
