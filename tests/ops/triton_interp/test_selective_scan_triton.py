"""Triton selective-scan kernels vs the sequential reference, in Triton's CPU interpreter.

Runs only with ``TRITON_INTERPRET=1`` set before Triton is imported (tests/
test_selective_scan_triton.py launches this module in such a subprocess). Shapes are
tiny because the interpreter runs ``tl.associative_scan`` element by element; they are
chosen to reach every code path: ragged last chunk, several chunks, several carry-scan
blocks in both directions, padded state size, one channel per block, grouped B/C with
direct dB/dC stores and variable B/C with atomic accumulation, every optional input,
and fp32/fp64/bf16/fp16 inputs.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run with TRITON_INTERPRET=1 (see tests/ops/test_selective_scan_triton.py)", allow_module_level=True)

import torch  # noqa: E402

from tests.helpers import assert_close, scan_inputs  # noqa: E402
from umamba_seg.ops.selective_scan import reference as ref  # noqa: E402
from umamba_seg.ops.selective_scan import triton_kernels as tk  # noqa: E402
from umamba_seg.ops.selective_scan.common import CHECKPOINT_LEN, num_checkpoints  # noqa: E402

GRAD_NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")


def check_against_reference(args, config, *, rtol, grad_rtol, dlast=True, seed=1):
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")
    call = [args[k] for k in keys]
    out, last, ckpt = tk.forward(*call, config=config)
    r_out, r_last, r_ckpt = ref.forward(*call)
    b, d, L = args["u"].shape
    n = args["A"].shape[1]
    sdt = torch.float64 if args["u"].dtype == torch.float64 else torch.float32
    assert out.dtype == args["u"].dtype
    assert last.dtype == sdt and ckpt.dtype == sdt
    assert ckpt.shape == (b, d, num_checkpoints(L), n)
    assert torch.equal(ckpt[:, :, 0], torch.zeros_like(ckpt[:, :, 0]))
    assert_close(out, r_out, rtol, "out")
    assert_close(last, r_last, rtol, "last_state")
    assert_close(ckpt, r_ckpt, rtol, "checkpoints")

    gen = torch.Generator().manual_seed(seed)
    dout = torch.randn(out.shape, generator=gen, dtype=sdt).to(out.dtype)
    dl = torch.randn(last.shape, generator=gen, dtype=sdt) if dlast else None
    grads = tk.backward(dout, dl, *call, ckpt, config=config)
    want = ref.backward(dout, dl, *call, r_ckpt)
    assert len(grads) == 8
    inputs = dict(zip(GRAD_NAMES, ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")))
    for name, g, w in zip(GRAD_NAMES, grads, want):
        src = args[inputs[name]]
        if src is None:
            assert g is None, f"{name} must be None when its input is None"
            continue
        assert g.dtype == src.dtype, f"{name}: dtype {g.dtype} != input dtype {src.dtype}"
        assert_close(g, w, grad_rtol, name)
    return out, last, ckpt, grads


def test_all_options_grouped_two_chunks_fp32():
    # g=2, 2 channels per group = 1 channel block per group: dB/dC stored directly.
    args = scan_inputs(1, 4, 4, 300, 2, torch.float32, D=True, z=True, bias=True, softplus=True)
    check_against_reference(args, tk.LaunchConfig(2, 4, 32, 4), rtol=2e-5, grad_rtol=5e-5)


def test_variable_bc_atomic_padded_states_single_chunk(monkeypatch):
    # g=1 with 2 channel blocks per group sharing 1 dB/dC copy -> atomic adds; n=3 padded
    # to 4; no options, no dlast.
    monkeypatch.setattr(tk, "MAX_BC_SLOTS", 1)
    assert tk.bc_slots(2, 1000) == 1
    args = scan_inputs(2, 4, 3, 70, 1, torch.float32)
    check_against_reference(args, tk.LaunchConfig(2, 4, 32, 4), rtol=2e-5, grad_rtol=5e-5, dlast=False)


def test_many_chunks_multi_block_carry_scan():
    # 3 chunks with a carry block of 2: the carry scan loops over blocks, forward and reverse.
    L = 2 * CHECKPOINT_LEN + 9
    args = scan_inputs(1, 2, 2, L, 1, torch.float32, D=True, bias=True, softplus=True, seed=3)
    cfg = tk.LaunchConfig(block_d=2, n_pad=2, block_t=64, num_warps=4, carry_block=2)
    _, _, ckpt, _ = check_against_reference(args, cfg, rtol=2e-5, grad_rtol=5e-5)
    assert ckpt.shape[2] == 3


def test_odd_channels_one_per_block_and_length_one():
    args = scan_inputs(1, 3, 5, 1, 1, torch.float32, D=True, z=True)
    # 3 channel blocks in one group -> 3 dB/dC copies written with plain stores
    cfg = tk.pick_config(3, 1, 5, block_t=16)
    assert cfg.block_d == 1 and cfg.n_pad == 8
    assert tk.bc_slots(3, 5) == 3
    check_against_reference(args, cfg, rtol=2e-5, grad_rtol=5e-5)


def test_float64_inputs_keep_float64_state():
    args = scan_inputs(1, 2, 2, 40, 2, torch.float64, D=True, z=True, bias=True, softplus=True, seed=5)
    check_against_reference(args, tk.LaunchConfig(1, 2, 32, 4), rtol=1e-10, grad_rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_fp32_state(dtype):
    args = scan_inputs(1, 2, 4, 48, 1, dtype, D=True, z=True, bias=True, softplus=True, seed=7)
    # Reference and kernel see the same rounded inputs and accumulate in fp32: states agree
    # to fp32 precision, half-precision outputs to their rounding.
    check_against_reference(args, tk.LaunchConfig(2, 4, 128, 4), rtol=2e-2, grad_rtol=2e-2)
    out, last, _ = tk.forward(
        *[args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")],
        config=tk.LaunchConfig(2, 4, 128, 4),
    )
    r_out, r_last, _ = ref.forward(
        *[args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus")]
    )
    assert_close(last, r_last, 1e-5, "last_state(fp32)")


def test_default_config_and_large_delta_do_not_overflow():
    # Large steps drive exp(dt*A) to 0; softplus of large inputs must stay finite.
    args = scan_inputs(1, 2, 4, 20, 1, torch.float32, softplus=True, seed=9)
    args["delta"] = args["delta"] * 40.0
    check_against_reference(args, None, rtol=2e-5, grad_rtol=5e-5)


def test_autograd_op_with_triton_backend_matches_reference():
    # The public op through its autograd Function, variable (b, n, L) B/C, return_last_state.
    from umamba_seg.ops.selective_scan import selective_scan, selective_scan_ref

    args = scan_inputs(1, 2, 4, 33, 1, torch.float32, D=True, z=True, bias=True, softplus=True, seed=11)
    args["B"], args["C"] = args["B"][:, 0], args["C"][:, 0]
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    leaves = {k: args[k].clone().requires_grad_(True) for k in names}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend="triton")
    ref_leaves = {k: args[k].clone().requires_grad_(True) for k in names}
    r_out, r_last = selective_scan_ref(**ref_leaves, delta_softplus=True, return_last_state=True)
    assert_close(out, r_out, 2e-5, "out")
    assert_close(last, r_last, 2e-5, "last_state")
    gen = torch.Generator().manual_seed(2)
    w_out, w_last = torch.randn(out.shape, generator=gen), torch.randn(last.shape, generator=gen)
    ((out * w_out).sum() + (last * w_last).sum()).backward()
    ((r_out * w_out).sum() + (r_last * w_last).sum()).backward()
    for k in names:
        assert leaves[k].grad is not None, k
        assert_close(leaves[k].grad, ref_leaves[k].grad, 5e-5, f"grad {k}")
