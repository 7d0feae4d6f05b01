"""Helpers shared by the test modules: where the test resources live, one closeness check,
and the random inputs of the two sequence ops (selective scan and mLSTM).

Every op test draws its inputs here, so a kernel test and a PyTorch-path test of the same op
see inputs of the same kind, and a tolerance means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

RESOURCES = Path(__file__).resolve().parent / "resources"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str, *, floor: float = 0.0) -> None:
    """``actual`` has ``expected``'s shape, is finite, and its largest absolute error is at most
    ``rtol`` times ``max(max|expected|, floor)`` (gradients span decades, so the error is scaled by
    the reference's largest magnitude rather than compared element by element)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), floor) + 1e-12
    assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.1e} x {scale:.3e}"


def scan_inputs(
    b: int,
    d: int,
    n: int,
    L: int,
    g: int = 1,
    dtype: torch.dtype = torch.float64,
    *,
    D: bool = False,
    z: bool = False,
    bias: bool = False,
    softplus: bool = False,
    variable: bool = False,
    dt_scale: float = 0.5,
    seed: int = 0,
) -> dict:
    """Keyword arguments of ``selective_scan``: ``u, delta, z`` ``(b, d, L)``, decaying ``A``
    ``(d, n)`` (fp32, fp64 for fp64 inputs), ``B, C`` grouped ``(b, g, n, L)`` (``(b, n, L)`` when
    ``variable``); ``D``, ``z``, ``delta_bias`` only where asked. Without softplus the steps are
    positive (``dt_scale`` wide), which keeps the recurrence contracting."""
    gen = torch.Generator().manual_seed(seed)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=sdt) * scale).to(dtype)

    u = rnd(b, d, L)
    if softplus:  # raw steps, softplus makes them positive; dt_scale 0.5 gives unit spread
        delta = rnd(b, d, L, scale=2.0 * dt_scale)
    else:
        delta = (torch.rand(b, d, L, generator=gen, dtype=sdt) * dt_scale + 0.05).to(dtype)
    A = -(torch.rand(d, n, generator=gen, dtype=sdt) * 2.0 + 0.2)
    bc = (b, n, L) if variable else (b, g, n, L)
    return dict(
        u=u,
        delta=delta,
        A=A,
        B=rnd(*bc),
        C=rnd(*bc),
        D=torch.randn(d, generator=gen, dtype=sdt) if D else None,
        z=rnd(b, d, L) if z else None,
        delta_bias=torch.randn(d, generator=gen, dtype=sdt) * 0.3 if bias else None,
        delta_softplus=softplus,
    )


def mlstm_inputs(
    b: int = 1,
    h: int = 2,
    L: int = 23,
    dh: int = 8,
    dtype: torch.dtype = torch.float64,
    *,
    seed: int = 0,
    gate_scale: float = 2.0,
    fgate_bias: float = 2.0,
    requires_grad: bool = False,
) -> list[torch.Tensor]:
    """``[q, k, v, igate, fgate]`` of the mLSTM: ``q, k, v`` ``(b, h, L, dh)``, gates ``(b, h, L)``;
    ``fgate_bias`` shifts the forget-gate pre-activations (ViL's range is around 3)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, L, dh, generator=gen, dtype=dtype) for _ in range(3))
    igate = torch.randn(b, h, L, generator=gen, dtype=dtype) * gate_scale
    fgate = torch.randn(b, h, L, generator=gen, dtype=dtype) * gate_scale + fgate_bias
    out = [q, k, v, igate, fgate]
    return [t.clone().requires_grad_() for t in out] if requires_grad else out
