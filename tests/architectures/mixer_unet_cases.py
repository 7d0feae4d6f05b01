"""The small 2D and 3D CNN plans the U-Mamba and xLSTM-UNet tests plan their networks from, and
their common deep-supervision test."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tests.helpers import check_deep_supervision, plain_cnn_block, planned_network

# dim: (CNN architecture block, patch)
CASES = {
    2: (plain_cnn_block(2, [4, 8, 16, 32, 32], [[1, 1]] + [[2, 2]] * 4), [32, 32]),
    3: (plain_cnn_block(3, [4, 8, 16, 24], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]), [8, 16, 16]),
}


def build(name: str, dim: int) -> tuple[torch.nn.Module, dict, list[int]]:
    """``name``'s network (2 channels in, 3 classes, deep supervision) planned on ``CASES[dim]``:
    (network, its stored ``architecture`` block, patch)."""
    cnn, patch = CASES[dim]
    net, block = planned_network(name, cnn, patch, 2, 3, deep_supervision=True)
    return net, block, patch


def check_planned_deep_supervision(
    name: str, dim: int, cls: type, check_gradients: Callable[[torch.nn.Module, dict], None]
) -> None:
    """``name`` planned on ``CASES[dim]`` is a ``cls`` and keeps nnunetv2's deep-supervision contract
    (:func:`tests.helpers.check_deep_supervision`); ``check_gradients(net, block)`` looks at its
    gradients after the backward pass."""
    torch.manual_seed(0)
    net, block, patch = build(name, dim)
    assert isinstance(net, cls)
    x = torch.randn(2, 2, *patch)
    check_deep_supervision(net, block["arch_kwargs"]["strides"], x, 3, lambda: check_gradients(net, block))
