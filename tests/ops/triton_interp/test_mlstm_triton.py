"""Triton mLSTM kernels vs the parallel reference, in Triton's CPU interpreter.

Runs only with ``TRITON_INTERPRET=1`` set before Triton is imported (tests/
test_mlstm_triton.py launches this module in such a subprocess). Shapes are small but
reach every code path: a ragged last chunk, one chunk and several chunks, head sizes
below one tile (masked), exactly one tile and several tiles, the reverse state, extreme
gates, and float32 / bfloat16 inputs.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (see tests/ops/test_mlstm_triton.py)", allow_module_level=True)

import torch  # noqa: E402

from tests.helpers import assert_close, mlstm_inputs  # noqa: E402
from umamba_seg.ops.mlstm import mlstm, mlstm_parallel_reference, resolve_backend  # noqa: E402
from umamba_seg.ops.mlstm import triton_kernels as tk  # noqa: E402
from umamba_seg.ops.mlstm.reference import MLSTMInputs  # noqa: E402

NAMES = ("q", "k", "v", "igate", "fgate")


def make_inputs(b, h, L, dh, seed=0):
    """fp32 mLSTM inputs in ViL's gate range (forget-gate pre-activations around 3)."""
    return mlstm_inputs(b, h, L, dh, torch.float32, seed=seed, gate_scale=1.0, fgate_bias=3.0)


def grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    (out.to(grad_out.dtype) * grad_out).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def test_interpreter_selects_triton_backend():
    assert resolve_backend("auto", torch.zeros(1)) == "triton"


@pytest.mark.parametrize(
    "b,h,L,dh,chunk",
    [
        (1, 2, 13, 8, 16),  # single ragged chunk, head dim below the 16-wide tile
        (2, 1, 45, 16, 16),  # three chunks, ragged, exactly one tile
        (1, 1, 64, 40, 32),  # two full chunks, two 32-wide tiles, the second masked
    ],
)
def test_forward_and_gradients_match_reference(b, h, L, dh, chunk):
    inputs = make_inputs(b, h, L, dh, seed=L + dh)
    grad_out = torch.randn(b, h, L, dh, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref_out, ref_grads = grads(mlstm_parallel_reference, [t.double() for t in inputs], grad_out)
    out, got = grads(lambda *a: mlstm(*a, backend="triton", chunk=chunk), inputs, grad_out)
    assert out.dtype == torch.float32
    assert_close(out, ref_out, 1e-5, "output")
    for name, g, r in zip(NAMES, got, ref_grads):
        assert g.dtype == torch.float32
        assert_close(g, r, 1e-4, f"grad {name}")


def test_triton_matches_torch_chunkwise_path():
    inputs = make_inputs(1, 2, 50, 24, seed=4)
    grad_out = torch.randn(1, 2, 50, 24, generator=torch.Generator().manual_seed(2))
    tri_out, tri_grads = grads(lambda *a: mlstm(*a, backend="triton", chunk=16), inputs, grad_out)
    tor_out, tor_grads = grads(lambda *a: mlstm(*a, backend="torch", chunk=16), inputs, grad_out)
    torch.testing.assert_close(tri_out, tor_out, rtol=1e-4, atol=1e-5)
    for name, g, r in zip(NAMES, tri_grads, tor_grads):
        assert_close(g, r, 2e-5, f"grad {name}")


def test_forward_saves_states_that_reproduce_the_recurrence():
    q, k, v, ig, fg = make_inputs(1, 1, 40, 16, seed=6)
    res = tk.mlstm_triton_forward(MLSTMInputs(q, k, v, ig, fg), chunk=16)
    n_chunks = 3
    assert res.c_prev.shape == (1, 1, n_chunks, 16 * 16 + 16)
    assert res.m_prev.shape == (1, 1, n_chunks + 1)
    assert torch.all(res.c_prev[:, :, 0] == 0)  # nothing before the first chunk
    from umamba_seg.ops.mlstm.torch_chunkwise import mlstm_chunkwise_forward

    ref = mlstm_chunkwise_forward(MLSTMInputs(q, k, v, ig, fg), chunk=16)
    torch.testing.assert_close(
        res.c_prev[..., 1:, : 16 * 16], ref.c_prev[..., 1:, :, :].flatten(-2), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(res.m_prev[..., 1:], ref.m_prev[..., 1:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.m, ref.m, rtol=1e-6, atol=1e-6)


def test_extreme_gates_stay_finite():
    q, k, v, ig, fg = make_inputs(1, 1, 48, 16, seed=8)
    ig = ig * 60.0  # exp(igate) overflows float32 without the running max
    fg = fg * 8.0
    grad_out = torch.ones(1, 1, 48, 16, dtype=torch.float64)
    ref_out, _ = grads(mlstm_parallel_reference, [t.double() for t in (q, k, v, ig, fg)], grad_out)
    out, got = grads(lambda *a: mlstm(*a, backend="triton", chunk=16), [q, k, v, ig, fg], grad_out)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in got)
    assert_close(out, ref_out, 1e-4, "output")


def test_bfloat16_inputs_accumulate_in_float32():
    inputs = [t.to(torch.bfloat16) for t in make_inputs(1, 2, 33, 16, seed=9)]
    grad_out = torch.randn(1, 2, 33, 16, generator=torch.Generator().manual_seed(3))
    out, got = grads(lambda *a: mlstm(*a, backend="triton", chunk=16), inputs, grad_out)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in got)
    ref_out, ref_grads = grads(mlstm_parallel_reference, [t.double() for t in inputs], grad_out.double())
    assert_close(out, ref_out, 1e-2, "output")
    for name, g, r in zip(NAMES, got, ref_grads):
        assert torch.isfinite(g.float()).all()
        assert_close(g, r, 2e-2, f"grad {name}")


def test_chunk_must_be_a_power_of_two():
    q, k, v, ig, fg = make_inputs(1, 1, 8, 8)
    with pytest.raises(ValueError, match="power of two"):
        mlstm(q, k, v, ig, fg, backend="triton", chunk=24)
