"""The fp32-computed bf16 convolutions used by CPU memory measurements behave like autocast's."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from umamba_seg.planning.cpu_conv_fp32 import Fp32ConvUnderCpuAutocast
from umamba_seg.planning.memory_model import measure_saved_bytes


class _Convs(nn.Module):
    """Conv3d on the fp32 input, a weight used twice, strides, dilation, groups, no bias; then 2D."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(2, 8, 3, padding=1)
        self.b = nn.Conv3d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False)
        self.c = nn.Conv3d(8, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.d = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = self.b(y) + self.b(y)
        y = self.c(y)
        return self.d(y.flatten(1, 2)[:, :4])


def _saved(fn) -> list[tuple[tuple[int, ...], torch.dtype]]:
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append((tuple(t.shape), t.dtype)) or t, lambda t: t):
        fn()
    return sorted(shapes, key=str)


@pytest.fixture()
def net_and_input():
    torch.manual_seed(0)
    return _Convs(), torch.randn(2, 2, 6, 12, 12, requires_grad=True)


def test_saves_what_autocast_conv_saves(net_and_input):
    net, x = net_and_input

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    def run_fast():
        with torch.autocast("cpu", dtype=torch.bfloat16), Fp32ConvUnderCpuAutocast():
            net(x)

    real = _saved(run)
    assert any(dt == torch.bfloat16 and len(s) == 5 for s, dt in real)  # the bf16 conv inputs are there
    assert _saved(run_fast) == real
    assert measure_saved_bytes(net, x.detach(), torch.bfloat16, fast_cpu_conv=True) == measure_saved_bytes(
        net, x.detach(), torch.bfloat16, fast_cpu_conv=False
    )


def test_values_and_gradients_match_autocast(net_and_input):
    net, x = net_and_input
    results = []
    for fast in (False, True):
        net.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16), Fp32ConvUnderCpuAutocast() if fast else nullcontext():
            out = net(x)
        assert out.dtype == torch.bfloat16
        out.float().square().mean().backward()
        results.append((out.detach().float(), x.grad.clone(), [p.grad.clone() for p in net.parameters()]))
    (o0, gx0, gp0), (o1, gx1, gp1) = results
    scale = o0.abs().max()
    assert (o0 - o1).abs().max() <= 0.03 * scale  # bf16 rounding of the output and of the accumulation
    torch.testing.assert_close(gx1, gx0, rtol=0.05, atol=0.05 * gx0.abs().max().item())
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())


def test_passes_through_outside_cpu_bf16_autocast(net_and_input):
    net, x = net_and_input
    with torch.no_grad():
        plain = net(x)
        with Fp32ConvUnderCpuAutocast():
            assert torch.equal(net(x), plain)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
                assert torch.equal(net(x), plain)
