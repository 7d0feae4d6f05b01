"""mLSTM op: references agree, the chunkwise torch path matches the spec (values and
gradients), stays finite for extreme gates and low precision, and keeps memory linear in L."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import mlstm_inputs
from umamba_seg.ops.mlstm import (
    mlstm,
    mlstm_parallel_reference,
    mlstm_recurrent_reference,
    resolve_backend,
)


def grads_of(fn, inputs, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    (fn(*inputs) * grad_out).sum().backward()
    return [t.grad for t in inputs]


def test_parallel_reference_equals_recurrent_reference():
    inputs = mlstm_inputs(b=2, h=2, L=19, dh=5)
    par = mlstm_parallel_reference(*inputs)
    rec = mlstm_recurrent_reference(*inputs)
    torch.testing.assert_close(par, rec, rtol=1e-10, atol=1e-10)


def test_reference_matches_unstabilised_formula_for_tame_gates():
    """Max-stabilisation must not change the value: compare with the plain exp form."""
    q, k, v, ig, fg = mlstm_inputs(L=12, dh=4, gate_scale=0.5)
    log_f_cum = F.logsigmoid(fg).cumsum(-1)
    d = torch.exp(log_f_cum[..., :, None] - log_f_cum[..., None, :] + ig[..., None, :]).tril()
    c = (q @ k.transpose(-1, -2)) / math.sqrt(4) * d
    expected = (c @ v) / torch.clamp(c.sum(-1, keepdim=True).abs(), min=1.0)
    torch.testing.assert_close(mlstm_parallel_reference(q, k, v, ig, fg, eps=0.0), expected)


@pytest.mark.parametrize("L,chunk", [(1, 4), (7, 16), (23, 4), (23, 8), (32, 8), (40, 64)])
def test_chunkwise_forward_matches_reference(L, chunk):
    inputs = mlstm_inputs(b=2, h=2, L=L, dh=6)
    ref = mlstm_parallel_reference(*inputs)
    out = mlstm(*inputs, backend="torch", chunk=chunk)
    assert out.shape == ref.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("chunk", [4, 16])
def test_chunkwise_gradients_match_reference(chunk):
    inputs = mlstm_inputs(b=1, h=2, L=29, dh=5, seed=3)
    grad_out = torch.randn(1, 2, 29, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    ref = grads_of(mlstm_parallel_reference, inputs, grad_out)
    got = grads_of(lambda *a: mlstm(*a, backend="torch", chunk=chunk), inputs, grad_out)
    for name, g, r in zip(("q", "k", "v", "igate", "fgate"), got, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-9, msg=f"gradient of {name}")


def test_chunkwise_gradcheck_float64():
    inputs = mlstm_inputs(b=1, h=1, L=9, dh=3, seed=5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: mlstm(*a, backend="torch", chunk=4), inputs)


def test_detached_stabiliser_is_exact_gradient_without_eps():
    """With eps=0 the output does not depend on m, so differentiating through max agrees."""

    def through_max(q, k, v, ig, fg):
        log_f_cum = F.logsigmoid(fg).cumsum(-1)
        log_d = log_f_cum[..., :, None] - log_f_cum[..., None, :] + ig[..., None, :]
        log_d = log_d.masked_fill(~torch.ones(11, 11, dtype=torch.bool).tril(), float("-inf"))
        m = log_d.amax(-1, keepdim=True)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) * torch.exp(log_d - m)
        return (s @ v) / torch.maximum(s.sum(-1, keepdim=True).abs(), torch.exp(-m))

    inputs = mlstm_inputs(L=11, dh=4, seed=7)
    grad_out = torch.randn(1, 2, 11, 4, dtype=torch.float64)
    ref = grads_of(through_max, inputs, grad_out)
    got = grads_of(lambda *a: mlstm(*a, backend="torch", chunk=4, eps=0.0), inputs, grad_out)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-9)


def test_extreme_gates_stay_finite_and_accurate_in_float32():
    q, k, v, ig, fg = mlstm_inputs(b=1, h=2, L=150, dh=8, seed=11)
    ig = ig * 25.0  # input-gate logits up to ~ +-100: exp() would overflow without stabilisation
    fg = fg * 10.0  # forget gates from ~0 to ~1
    ref = mlstm_parallel_reference(q, k, v, ig, fg)
    f32 = [t.float() for t in (q, k, v, ig, fg)]
    out = mlstm(*f32, backend="torch", chunk=32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=2e-4)
    grads = grads_of(lambda *a: mlstm(*a, backend="torch", chunk=32), f32, torch.ones_like(f32[0]))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    inputs = mlstm_inputs(b=1, h=2, L=70, dh=16, seed=2, dtype=torch.float32)
    low = [t.to(dtype).requires_grad_() for t in inputs]
    out = mlstm(*low, backend="torch", chunk=16)
    assert out.dtype == dtype
    ref = mlstm_parallel_reference(*[t.detach().double() for t in low])
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    out.float().square().sum().backward()
    for t in low:
        assert t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad.float()).all()


def _saved_numel(L: int, chunk: int = 16) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel()
        return t

    inputs = mlstm_inputs(b=1, h=1, L=L, dh=4, dtype=torch.float32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mlstm(*inputs, backend="torch", chunk=chunk)
    return total


def test_saved_memory_is_linear_in_length():
    small, large = _saved_numel(512), _saved_numel(2048)
    assert 3.9 < large / small < 4.1  # quadratic would be 16x


def test_backend_resolution_and_argument_errors():
    q, k, v, ig, fg = mlstm_inputs(L=5, dh=4, dtype=torch.float32)
    assert resolve_backend("auto", q) in ("torch", "triton")
    assert resolve_backend("auto", q.double()) == "torch"
    with pytest.raises(ValueError, match="backend"):
        mlstm(q, k, v, ig, fg, backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        mlstm(q.double(), k.double(), v.double(), ig.double(), fg.double(), backend="triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA"):
            mlstm(q, k, v, ig, fg, backend="triton")
    with pytest.raises(ValueError, match="igate"):
        mlstm(q, k, v, ig[..., :4], fg)
    with pytest.raises(ValueError, match="k must"):
        mlstm(q, k[..., :3], v, ig, fg)
    ref = mlstm(q, k, v, ig, fg, backend="reference")
    torch.testing.assert_close(mlstm(q, k, v, ig, fg, backend="torch"), ref, rtol=1e-5, atol=1e-5)


def test_several_blocks_of_chunks_match_one_block(monkeypatch):
    """The torch path processes BLOCK_POSITIONS positions at a time; block edges must not show."""
    from umamba_seg.ops.mlstm import torch_chunkwise

    inputs = mlstm_inputs(b=1, h=2, L=37, dh=4, seed=13)
    grad_out = torch.randn(1, 2, 37, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = grads_of(mlstm_parallel_reference, inputs, grad_out)
    ref_out = mlstm_parallel_reference(*inputs)
    monkeypatch.setattr(torch_chunkwise, "BLOCK_POSITIONS", 8)  # 2 chunks of 4 per block, 5 blocks
    assert len(torch_chunkwise._blocks(10, 4)) == 5
    torch.testing.assert_close(mlstm(*inputs, backend="torch", chunk=4), ref_out, rtol=1e-9, atol=1e-10)
    got = grads_of(lambda *a: mlstm(*a, backend="torch", chunk=4), inputs, grad_out)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-9)
