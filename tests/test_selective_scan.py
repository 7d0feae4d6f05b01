"""Selective scan: the chunked torch backend and the autograd op against the sequential reference."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

import umamba_seg.ops.backend as backends
import umamba_seg.ops.selective_scan as ss
from umamba_seg.errors import UserInputError
from umamba_seg.ops.selective_scan import reference, selective_scan, selective_scan_ref, torch_chunked
from umamba_seg.ops.selective_scan.common import CHECKPOINT_LEN

OPTION_NAMES = ("D", "z", "delta_bias", "delta_softplus")
ALL_OPTIONS = list(itertools.product([False, True], repeat=4))


def make_inputs(b, d, n, g, L, dtype=torch.float64, variable=False, seed=0, dt_scale=0.5, a_scale=2.0):
    """Random inputs with decaying A and moderate steps; B/C grouped unless ``variable``."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u = r(b, d, L)
    delta = r(b, d, L).abs() * dt_scale
    A = -(torch.rand(d, n, generator=gen, dtype=torch.float64) * a_scale + 0.05)
    bc_shape = (b, n, L) if variable else (b, g, n, L)
    B, C = r(*bc_shape), r(*bc_shape)
    D, z, bias = r(d), r(b, d, L), r(d) * 0.3
    cast = [t.to(dtype) for t in (u, delta, B, C, D, z, bias)]
    u, delta, B, C, D, z, bias = cast
    A = A.to(torch.float64 if dtype == torch.float64 else torch.float32)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias)


def select(inputs, opts):
    """Drop the optional inputs that ``opts`` (D, z, delta_bias, delta_softplus) switches off."""
    use_D, use_z, use_bias, softplus = opts
    kw = dict(inputs)
    kw["D"] = kw["D"] if use_D else None
    kw["z"] = kw["z"] if use_z else None
    kw["delta_bias"] = kw["delta_bias"] if use_bias else None
    kw["delta_softplus"] = softplus
    return kw


def grads_of(fn, kw, seed=1):
    """Run ``fn(**kw, return_last_state=True)``; return outputs and grads of all tensor inputs."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in kw.items() if torch.is_tensor(v)}
    args = {**kw, **leaves}
    out, last = fn(**args, return_last_state=True)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    w_last = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.dtype)
    loss = (out * w_out).sum() + (last * w_last).sum()
    loss.backward()
    return out.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


def assert_close(actual, expected, rtol, name):
    scale = expected.abs().max().clamp_min(1.0)
    err = (actual.to(torch.float64) - expected.to(torch.float64)).abs().max()
    assert err <= rtol * scale, f"{name}: max error {err:.3e} vs scale {scale:.3e}"


def compare_backends(kw, rtol=1e-10):
    out_r, last_r, g_r = grads_of(lambda **a: selective_scan(**a, backend="reference"), kw)
    out_t, last_t, g_t = grads_of(lambda **a: selective_scan(**a, backend="torch"), kw)
    assert out_t.dtype == kw["u"].dtype and out_t.shape == kw["u"].shape
    assert_close(out_t, out_r, rtol, "out")
    assert_close(last_t, last_r, rtol, "last_state")
    assert set(g_t) == set(g_r)
    for name in g_r:
        assert g_t[name] is not None, name
        assert g_t[name].dtype == kw[name].dtype and g_t[name].shape == kw[name].shape, name
        assert_close(g_t[name], g_r[name], rtol, f"d{name}")


def option_id(opts) -> str:
    return "-".join(name for name, on in zip(OPTION_NAMES, opts) if on) or "plain"


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=option_id)
def test_every_option_combination_matches_reference(opts, monkeypatch):
    # chunks of 8 inside blocks of one checkpoint interval: in-chunk loop, chunk carry and block carry all run
    monkeypatch.setattr(torch_chunked, "CHUNK", 8)
    monkeypatch.setattr(torch_chunked, "BLOCK_ELEMENTS", 1)
    kw = select(make_inputs(2, 8, 4, 2, CHECKPOINT_LEN + 37, seed=3), opts)
    compare_backends(kw)


@pytest.mark.parametrize("L", [1, 300])
@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("g", [1, 2, 4])
def test_shapes_match_reference(L, n, g):
    kw = select(make_inputs(1, 8, n, g, L, seed=L + n + g), (True, True, True, True))
    compare_backends(kw)


@pytest.mark.parametrize("L", [1, 257])
def test_variable_bc_matches_grouped(L):
    kw = select(make_inputs(2, 4, 4, 1, L, variable=True, seed=7), (True, False, True, False))
    compare_backends(kw)
    grouped = dict(kw, B=kw["B"][:, None], C=kw["C"][:, None])
    assert torch.equal(selective_scan(**kw, backend="torch"), selective_scan(**grouped, backend="torch"))


def test_multiple_blocks_carry_state(monkeypatch):
    """Force one checkpoint interval per block so the carry across blocks is exercised."""
    monkeypatch.setattr(torch_chunked, "BLOCK_ELEMENTS", 1)
    kw = select(make_inputs(1, 4, 4, 2, 3 * CHECKPOINT_LEN + 29, seed=11), (True, True, True, True))
    compare_backends(kw)


@pytest.mark.parametrize("chunk", [1, 8, 256])
def test_chunk_lengths(monkeypatch, chunk):
    monkeypatch.setattr(torch_chunked, "CHUNK", chunk)
    kw = select(make_inputs(1, 4, 3, 1, 270, seed=chunk), (True, False, True, True))
    compare_backends(kw)


def test_float32_matches_float64_reference():
    kw64 = select(make_inputs(2, 8, 16, 2, 600, seed=5), (True, True, True, True))
    kw32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kw64.items()}
    out_r, last_r, g_r = grads_of(lambda **a: selective_scan(**a, backend="torch"), kw64)
    out_t, last_t, g_t = grads_of(lambda **a: selective_scan(**a, backend="torch"), kw32)
    assert out_t.dtype == torch.float32 and last_t.dtype == torch.float32
    assert_close(out_t, out_r, 1e-5, "out")
    assert_close(last_t, last_r, 1e-5, "last_state")
    for name in g_r:
        assert g_t[name].dtype == torch.float32
        assert_close(g_t[name], g_r[name], 1e-4, f"d{name}")


def test_backend_checkpoints_match_reference():
    kw = select(make_inputs(2, 4, 4, 2, 2 * CHECKPOINT_LEN + 3, seed=2), (True, True, True, True))
    args = [kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out_r, last_r, ck_r = reference.forward(*args, True)
    out_t, last_t, ck_t = torch_chunked.forward(*args, True)
    assert ck_t.shape == (2, 4, 3, 4) and ck_t.dtype == torch.float64
    assert torch.count_nonzero(ck_t[:, :, 0]) == 0
    assert_close(ck_t, ck_r, 1e-10, "checkpoints")
    assert_close(out_t, out_r, 1e-10, "out")


def test_saved_tensors_are_inputs_and_checkpoints():
    kw = select(make_inputs(1, 4, 2, 1, CHECKPOINT_LEN + 1, dtype=torch.float32), (True, True, False, True))
    kw = {k: (v.requires_grad_(True) if torch.is_tensor(v) else v) for k, v in kw.items()}
    out = selective_scan(**kw, backend="torch")
    saved = out.grad_fn.saved_tensors
    assert saved[-1].shape == (1, 4, 2, 2) and saved[-1].dtype == torch.float32
    saved_inputs = sum(t.numel() for t in saved[:-1] if t is not None)
    assert saved_inputs == sum(v.numel() for v in kw.values() if torch.is_tensor(v))


@pytest.mark.parametrize("opts", [(False, False, False, False), (True, True, True, True)])
def test_gradcheck_float64(opts):
    kw = select(make_inputs(1, 2, 2, 1, 9, seed=4), opts)
    names = [k for k, v in kw.items() if torch.is_tensor(v)]
    leaves = [kw[k].detach().clone().requires_grad_(True) for k in names]

    def fn(*tensors):
        args = dict(kw, **dict(zip(names, tensors)))
        out, last = selective_scan(**args, return_last_state=True, backend="torch")
        return out, last

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_stay_finite_and_close(dtype):
    """Large steps and long memory in fp16/bf16: the fp32 state must not overflow or NaN."""
    kw = select(make_inputs(1, 4, 16, 2, 600, dtype=dtype, seed=9, dt_scale=3.0), (True, True, True, True))
    kw["u"] = kw["u"] * 30
    kw32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kw.items()}
    out_h, last_h, g_h = grads_of(lambda **a: selective_scan(**a, backend="torch"), kw)
    out_f, last_f, g_f = grads_of(lambda **a: selective_scan(**a, backend="reference"), kw32)
    assert out_h.dtype == dtype and last_h.dtype == torch.float32
    assert torch.isfinite(out_h).all() and torch.isfinite(last_h).all()
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    assert_close(out_h, out_f, tol, "out")
    assert_close(last_h, last_f, 1e-4, "last_state")
    for name, grad in g_h.items():
        assert grad.dtype == kw[name].dtype
        assert torch.isfinite(grad).all(), name
        assert_close(grad, g_f[name], 5e-2, f"d{name}")


@pytest.mark.slow
def test_long_sequence_strong_decay_is_finite_and_matches_reference():
    """L = 65,536 with large steps and strongly negative A: cumulative decays underflow to 0."""
    L = 65536
    kw = select(make_inputs(1, 2, 4, 1, L, dtype=torch.float32, seed=13), (True, False, True, True))
    kw["delta"] = kw["delta"] * 20 + 5  # dt ~ 5..60
    kw["A"] = kw["A"] * 50  # A ~ -2.5 .. -100
    kw["A"][0, 0] = -1e-4  # one slowly decaying state keeps long memory
    out_t, last_t, g_t = grads_of(lambda **a: selective_scan(**a, backend="torch"), kw)
    assert torch.isfinite(out_t).all() and torch.isfinite(last_t).all()
    for name, grad in g_t.items():
        assert torch.isfinite(grad).all(), name
    out_r, last_r = selective_scan_ref(**kw, return_last_state=True)
    assert_close(out_t, out_r, 1e-4, "out")
    assert_close(last_t, last_r, 1e-4, "last_state")


def test_auto_backend_uses_torch_on_cpu(monkeypatch):
    calls = []
    real = torch_chunked.forward
    monkeypatch.setattr(torch_chunked, "forward", lambda *a: calls.append(1) or real(*a))
    kw = select(make_inputs(1, 2, 2, 1, 5, dtype=torch.float32), (False, False, False, False))
    selective_scan(**kw)
    assert calls == [1]


def test_triton_backend_missing_is_a_clear_error(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'triton'")

    table = backends.backend_table(ss.OP)
    monkeypatch.setitem(table, "triton", backends.Backend("triton", missing, auto=table["triton"].auto, label="Triton"))
    kw = select(make_inputs(1, 2, 2, 1, 5, dtype=torch.float32), (False, False, False, False))
    with pytest.raises(UserInputError, match="Triton selective-scan backend is unavailable .*No module named"):
        selective_scan(**kw, backend="triton")
    assert not ss.triton_available()
    cuda_like = SimpleNamespace(is_cuda=True)  # "auto" on CUDA inputs falls back to torch
    assert backends.resolve_backend(ss.OP, "auto", cuda_like) == "torch"
    with pytest.raises(UserInputError, match="unknown selective-scan backend"):
        selective_scan(**kw, backend="cuda")


def test_bad_shapes_are_rejected():
    kw = select(make_inputs(1, 4, 2, 2, 5, dtype=torch.float32), (False, False, False, False))
    with pytest.raises(ValueError, match="delta"):
        selective_scan(**dict(kw, delta=kw["delta"][..., :4]))
    with pytest.raises(ValueError, match="B"):
        selective_scan(**dict(kw, B=kw["B"][:, :, :1]))
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**dict(kw, B=torch.zeros(1, 3, 2, 5), C=torch.zeros(1, 3, 2, 5)))
