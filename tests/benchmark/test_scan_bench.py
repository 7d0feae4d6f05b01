"""The selective-scan benchmark code (umamba_seg.benchmark.scan_inputs, scan_bound, scan_gpu) on tiny shapes."""

from __future__ import annotations

import math

import pytest
import torch

from umamba_seg.benchmark import scan_bound, scan_gpu
from umamba_seg.benchmark.scan_inputs import forward, forward_backward, make_inputs


def test_per_step_loop_is_the_scan():
    kw = make_inputs(1, 4, 3, 50, "cpu")
    torch.testing.assert_close(scan_bound.per_step_loop(kw), forward(kw, "torch"), rtol=1e-4, atol=1e-4)


def test_bound_over_blocks_equals_the_whole_product():
    kw = make_inputs(1, 2, 2, scan_bound.BOUND_BLOCK + 7, "cpu")
    whole = (torch.exp(kw["delta"][..., None] * kw["A"][:, None, :]) * kw["u"][..., None]).sum(-1)
    torch.testing.assert_close(scan_bound.bound(kw["delta"], kw["A"], kw["u"]), whole)


def test_bound_rows_and_loop_speedup(capsys):
    rows = scan_bound.bound_rows([(1, 4, 2, 64)], repeats=2)
    assert len(rows) == 1 and (rows[0]["b"], rows[0]["d"], rows[0]["n"], rows[0]["L"]) == (1, 4, 2, 64)
    for key in ("bound_s", "fwd_s", "fwdbwd_s", "fwd_over_bound", "fwdbwd_over_bound"):
        assert math.isfinite(rows[0][key]) and rows[0][key] > 0
    assert rows[0]["fwd_over_bound"] == pytest.approx(rows[0]["fwd_s"] / rows[0]["bound_s"])
    out = capsys.readouterr().out
    assert "fwd/bound" in out and out.strip().splitlines()[-1].split()[:4] == ["1", "4", "2", "64"]
    s = scan_bound.loop_speedup((1, 4, 2, 32), repeats=1)
    assert s["L"] == 32 and s["speedup"] == pytest.approx(s["loop_s"] / s["fwd_s"])


def test_forward_backward_gives_every_gradient():
    kw = make_inputs(1, 3, 2, 16, "cpu")
    grads = forward_backward(kw, "torch", torch.ones(1, 3, 16))
    assert set(grads) == set(kw) and all(g is not None and g.shape == kw[k].shape for k, g in grads.items())


def test_gpu_bytes_and_bandwidth_table():
    # one element of everything, 2-byte dtype: u, delta, z, B, C in and out once
    assert scan_gpu.min_bytes(1, 1, 1, 1, 1, 2, backward=False) == 12
    assert scan_gpu.min_bytes(1, 1, 1, 1, 1, 2, backward=True) == 12 + 12 + 10
    assert scan_gpu.nominal_bandwidth_gbs("NVIDIA H100 NVL") == 3900.0  # the longer name wins
    assert scan_gpu.nominal_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350.0
    assert scan_gpu.nominal_bandwidth_gbs("Some Card") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_gpu_section_is_skipped_without_cuda(capsys):
    assert scan_gpu.run_gpu_section() == [] and scan_gpu.sweep_tiles() == []
    assert "no CUDA device" in capsys.readouterr().out
