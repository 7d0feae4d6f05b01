"""Inputs, calls and table columns shared by the selective-scan benchmarks (:mod:`.scan_bound`, :mod:`.scan_gpu`).

Both benchmarks time the same three shapes (a U-Mamba bottleneck-like sequence, and two
long ones where a scan's linear cost matters) on the same seeded inputs, and start every
row with the same shape columns, so their tables line up row by row.
"""

from __future__ import annotations

import torch

from umamba_seg.ops.selective_scan import selective_scan

Shape = tuple[int, int, int, int]

#: (batch, channels d, state size n, length L) of the benchmark rows.
SHAPES: list[Shape] = [(2, 192, 16, 4096), (2, 192, 16, 32768), (1, 96, 16, 262144)]

#: Heads of a shape's columns, the first columns of every table the benchmarks print.
SHAPE_HEADER = f"{'b':>2} {'d':>4} {'n':>3} {'L':>7}"


def shape_cells(shape: Shape) -> str:
    """A shape's first columns of a printed row, aligned under :data:`SHAPE_HEADER`."""
    b, d, n, L = shape
    return f"{b:>2} {d:>4} {n:>3} {L:>7}"


def shape_row(shape: Shape, **values: object) -> dict:
    """One returned result row: the shape's sizes ``b, d, n, L`` first, then ``values``."""
    b, d, n, L = shape
    return dict(b=b, d=d, n=n, L=L, **values)


def make_inputs(b: int, d: int, n: int, L: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Seeded float32 arguments of :func:`selective_scan` (delta around softplus(-2), A negative)."""
    gen = torch.Generator().manual_seed(0)
    kw = dict(
        u=torch.randn(b, d, L, generator=gen),
        delta=torch.randn(b, d, L, generator=gen) * 0.5 - 2.0,
        A=-torch.rand(d, n, generator=gen) * 4.0 - 0.1,
        B=torch.randn(b, n, L, generator=gen),
        C=torch.randn(b, n, L, generator=gen),
        D=torch.randn(d, generator=gen),
        z=torch.randn(b, d, L, generator=gen),
        delta_bias=torch.randn(d, generator=gen) * 0.1,
    )
    return {k: v.to(device) for k, v in kw.items()}


def forward(kw: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    """The scan's output without autograd."""
    with torch.no_grad():
        return selective_scan(**kw, delta_softplus=True, backend=backend)


def forward_backward(kw: dict[str, torch.Tensor], backend: str, dout: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward and backward from ``dout``; the gradient of every input by name."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in kw.items()}
    out = selective_scan(**leaves, delta_softplus=True, backend=backend)
    out.backward(dout)
    return {k: v.grad for k, v in leaves.items()}
