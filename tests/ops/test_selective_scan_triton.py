"""The Triton selective-scan kernels against the reference in Triton's CPU interpreter (a child pytest)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import run_interpreter_tests

pytest.importorskip("triton")

EXPECTED_TESTS = 9


def test_triton_kernels_match_reference_in_interpreter() -> None:
    run_interpreter_tests("test_selective_scan_triton.py", EXPECTED_TESTS, "-W", "ignore::RuntimeWarning")


def test_cpu_tensors_outside_the_interpreter_get_a_clear_error() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("meaningful only without the interpreter")
    import torch

    from umamba_seg.errors import UserInputError
    from umamba_seg.ops.selective_scan import triton_kernels

    u = torch.zeros(1, 2, 8)
    B = torch.zeros(1, 1, 4, 8)
    with pytest.raises(UserInputError, match="backend='torch'"):
        triton_kernels.forward(u, u, torch.zeros(2, 4), B, B, None, None, None, False)
    ckpt = torch.zeros(1, 2, 1, 4)
    with pytest.raises(UserInputError, match="CUDA"):
        triton_kernels.backward(u, None, u, u, torch.zeros(2, 4), B, B, None, None, None, False, ckpt)


def test_pick_config_keeps_channel_blocks_inside_groups() -> None:
    from umamba_seg.ops.selective_scan import triton_kernels as tk

    for dim, groups, dstate in [(96, 1, 16), (192, 4, 16), (6, 3, 16), (5, 1, 7), (384, 1, 64)]:
        cfg = tk.pick_config(dim, groups, dstate)
        assert (dim // groups) % cfg.block_d == 0
        assert cfg.n_pad >= dstate and cfg.n_pad & (cfg.n_pad - 1) == 0
        assert tk.CHUNK % cfg.block_t == 0
        assert cfg.block_d * cfg.n_pad * cfg.block_t <= tk.TILE_ELEMENTS
    # SegMamba's first stage: 2 channels x 16 states x 64 positions, 4 sub-blocks per chunk
    assert tk.pick_config(96, 1, 16) == tk.LaunchConfig(2, 16, 64, 8)
    # one fp32 copy of dB/dC per block while the budget allows; fewer copies (atomics) beyond
    assert tk.bc_slots(4, 1000) == 4
    assert tk.bc_slots(48, 16 * 262144) == tk.MAX_BC_SLOTS
    assert tk.bc_slots(48, 64 * 2**20) == 1
