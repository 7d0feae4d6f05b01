"""Selective scan: the chunked torch backend and the autograd op against the sequential reference."""

from __future__ import annotations

import inspect
import itertools
from types import SimpleNamespace

import pytest
import torch

import umamba_seg.ops.backend as backends
import umamba_seg.ops.selective_scan as ss
from tests.helpers import assert_close as _assert_close
from tests.helpers import scan_inputs
from umamba_seg.errors import UserInputError
from umamba_seg.ops.selective_scan import reference, selective_scan, selective_scan_ref, torch_chunked
from umamba_seg.ops.selective_scan.common import CHECKPOINT_LEN

OPTION_NAMES = ("D", "z", "delta_bias", "delta_softplus")
ALL_OPTIONS = list(itertools.product([False, True], repeat=4))


def inputs(b, d, n, g, L, opts, dtype=torch.float64, seed=0, **kw):
    """The shared scan inputs with ``opts`` = (D, z, delta_bias, delta_softplus) switched on or off."""
    use_D, use_z, use_bias, softplus = opts
    return scan_inputs(b, d, n, L, g, dtype, D=use_D, z=use_z, bias=use_bias, softplus=softplus, seed=seed, **kw)


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
    """Errors scaled by the reference's largest magnitude, at least 1 (values here are O(1))."""
    _assert_close(actual, expected, rtol, name, floor=1.0)


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
    kw = inputs(2, 8, 4, 2, CHECKPOINT_LEN + 37, opts, seed=3)
    compare_backends(kw)


@pytest.mark.parametrize("L", [1, 300])
@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("g", [1, 2, 4])
def test_shapes_match_reference(L, n, g):
    kw = inputs(1, 8, n, g, L, (True, True, True, True), seed=L + n + g)
    compare_backends(kw)


@pytest.mark.parametrize("L", [1, 257])
def test_variable_bc_matches_grouped(L):
    kw = inputs(2, 4, 4, 1, L, (True, False, True, False), variable=True, seed=7)
    compare_backends(kw)
    grouped = dict(kw, B=kw["B"][:, None], C=kw["C"][:, None])
    assert torch.equal(selective_scan(**kw, backend="torch"), selective_scan(**grouped, backend="torch"))


def test_multiple_blocks_carry_state(monkeypatch):
    """Force one checkpoint interval per block so the carry across blocks is exercised."""
    monkeypatch.setattr(torch_chunked, "BLOCK_ELEMENTS", 1)
    kw = inputs(1, 4, 4, 2, 3 * CHECKPOINT_LEN + 29, (True, True, True, True), seed=11)
    compare_backends(kw)


@pytest.mark.parametrize("chunk", [1, 8, 256])
def test_chunk_lengths(monkeypatch, chunk):
    monkeypatch.setattr(torch_chunked, "CHUNK", chunk)
    kw = inputs(1, 4, 3, 1, 270, (True, False, True, True), seed=chunk)
    compare_backends(kw)


def test_float32_matches_float64_reference():
    kw64 = inputs(2, 8, 16, 2, 600, (True, True, True, True), seed=5)
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
    kw = inputs(2, 4, 4, 2, 2 * CHECKPOINT_LEN + 3, (True, True, True, True), seed=2)
    args = [kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out_r, last_r, ck_r = reference.forward(*args, True)
    out_t, last_t, ck_t = torch_chunked.forward(*args, True)
    assert ck_t.shape == (2, 4, 3, 4) and ck_t.dtype == torch.float64
    assert torch.count_nonzero(ck_t[:, :, 0]) == 0
    assert_close(ck_t, ck_r, 1e-10, "checkpoints")
    assert_close(out_t, out_r, 1e-10, "out")


def test_saved_tensors_are_inputs_and_checkpoints():
    kw = inputs(1, 4, 2, 1, CHECKPOINT_LEN + 1, (True, True, False, True), dtype=torch.float32)
    kw = {k: (v.requires_grad_(True) if torch.is_tensor(v) else v) for k, v in kw.items()}
    out = selective_scan(**kw, backend="torch")
    saved = out.grad_fn.saved_tensors
    assert saved[-1].shape == (1, 4, 2, 2) and saved[-1].dtype == torch.float32
    saved_inputs = sum(t.numel() for t in saved[:-1] if t is not None)
    assert saved_inputs == sum(v.numel() for v in kw.values() if torch.is_tensor(v))


@pytest.mark.parametrize("opts", [(False, False, False, False), (True, True, True, True)])
def test_gradcheck_float64(opts):
    kw = inputs(1, 2, 2, 1, 9, opts, seed=4)
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
    kw = inputs(1, 4, 16, 2, 600, (True, True, True, True), dtype=dtype, seed=9, dt_scale=3.0)
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
    kw = inputs(1, 2, 4, 1, L, (True, False, True, True), dtype=torch.float32, seed=13)
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
    kw = inputs(1, 2, 2, 1, 5, (False, False, False, False), dtype=torch.float32)
    selective_scan(**kw)
    assert calls == [1]


def test_triton_backend_missing_is_a_clear_error(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'triton'")

    table = backends.backend_table(ss.OP)
    monkeypatch.setitem(table, "triton", backends.Backend("triton", missing, auto=table["triton"].auto, label="Triton"))
    kw = inputs(1, 2, 2, 1, 5, (False, False, False, False), dtype=torch.float32)
    with pytest.raises(UserInputError, match="Triton selective-scan backend is unavailable .*No module named"):
        selective_scan(**kw, backend="triton")
    assert not ss.triton_available()
    cuda_like = SimpleNamespace(is_cuda=True)  # "auto" on CUDA inputs falls back to torch
    assert backends.resolve_backend(ss.OP, "auto", cuda_like) == "torch"
    with pytest.raises(UserInputError, match="unknown selective-scan backend"):
        selective_scan(**kw, backend="cuda")


def test_bad_shapes_are_rejected():
    kw = inputs(1, 4, 2, 2, 5, (False, False, False, False), dtype=torch.float32)
    with pytest.raises(ValueError, match="delta"):
        selective_scan(**dict(kw, delta=kw["delta"][..., :4]))
    with pytest.raises(ValueError, match="B"):
        selective_scan(**dict(kw, B=kw["B"][:, :, :1]))
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**dict(kw, B=torch.zeros(1, 3, 2, 5), C=torch.zeros(1, 3, 2, 5)))


def test_public_functions_keep_mamba_ssm_signature():
    """Written once (``common.ScanArgs``), taken spread by position or by name."""
    mamba = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state"]
    defaults = {"D": None, "z": None, "delta_bias": None, "delta_softplus": False, "return_last_state": False}
    for fn, extra in ((selective_scan_ref, []), (selective_scan, ["backend"])):
        params = inspect.signature(fn).parameters
        assert list(params) == mamba + extra, fn.__name__
        assert {k: params[k].default for k in defaults} == defaults
    kw = inputs(1, 4, 2, 2, 5, (True, True, True, True))
    spread = [kw[k] for k in mamba[:9]]
    by_name = selective_scan(**kw, return_last_state=True, backend="torch")
    by_position = selective_scan(*spread, True, "torch")
    mixed = selective_scan(*spread[:3], **{k: kw[k] for k in mamba[3:9]}, return_last_state=True, backend="torch")
    for out in (by_position, mixed):
        torch.testing.assert_close(out, by_name, rtol=0, atol=0)
    ref = selective_scan_ref(*spread, True)
    for out in (
        selective_scan_ref(**kw, return_last_state=True),
        selective_scan(**kw, return_last_state=True, backend="reference"),
    ):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(TypeError):
        selective_scan(*spread[:4])  # C missing
    with pytest.raises(TypeError):
        selective_scan(**kw, bogus=1)
