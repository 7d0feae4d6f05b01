"""Ahead-of-time compile of Triton kernels for sm_80 / sm_90a without a GPU.

Checks the helper itself (a small kernel compiles, a deliberately huge one is reported as
spilling, ptxas reports parse) and that every selective-scan kernel configuration in
``AOT_CONFIGS`` compiles for both architectures with no register spill.
"""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") == "1":  # pragma: no cover - AOT needs the real compiler
    pytest.skip("AOT compile is unavailable under TRITON_INTERPRET=1", allow_module_level=True)

import triton.language as tl  # noqa: E402

from umamba_seg.ops.triton_aot import (  # noqa: E402
    KernelResources,
    as_aot_config,
    blocks_per_sm,
    compile_configs,
    compile_for_gpu,
    format_table,
    parse_ptxas_report,
)


@triton.jit
def _scale_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, x * 2.0, mask=mask)


@triton.jit
def _hog_kernel(x_ptr, y_ptr, BLOCK: tl.constexpr):
    # Six huge blocks alive at once in one warp: cannot fit in 255 registers.
    offs = tl.arange(0, BLOCK)
    a = tl.load(x_ptr + offs)
    b = tl.load(x_ptr + BLOCK + offs)
    c = tl.load(x_ptr + 2 * BLOCK + offs)
    d = tl.load(x_ptr + 3 * BLOCK + offs)
    e = tl.load(x_ptr + 4 * BLOCK + offs)
    f = tl.load(x_ptr + 5 * BLOCK + offs)
    s = tl.cumsum(a * b, 0) + tl.cumsum(c * d, 0) + tl.cumsum(e * f, 0)
    tl.store(y_ptr + offs, s + a + b + c + d + e + f)


_SIG = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"}


@pytest.mark.parametrize("arch", [80, 90])
def test_small_kernel_compiles_without_spills(arch: int) -> None:
    res = compile_for_gpu(_scale_kernel, _SIG, {"BLOCK": 256}, arch, num_warps=4)
    assert isinstance(res, KernelResources)
    assert res.name == "_scale_kernel"
    assert res.arch == arch and res.num_warps == 4
    assert 0 < res.registers <= 64
    assert res.spill_stores == 0 and res.spill_loads == 0
    assert not res.spills


def test_hog_kernel_is_reported_as_spilling() -> None:
    res = compile_for_gpu(_hog_kernel, {"x_ptr": "*fp32", "y_ptr": "*fp32"}, {"BLOCK": 2048}, 80, num_warps=1)
    assert res.spills
    assert res.spill_stores > 0 and res.spill_loads > 0


def test_bad_arch_is_rejected() -> None:
    with pytest.raises(ValueError):
        compile_for_gpu(_scale_kernel, _SIG, {"BLOCK": 64}, 75)


def test_parse_ptxas_report() -> None:
    text = (
        "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
        "ptxas info    : Function properties for k\n"
        "    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 0 barriers, 400 bytes cmem[0]\n"
    )
    assert parse_ptxas_report(text) == (255, 8, 12, 16)
    with pytest.raises(RuntimeError):
        parse_ptxas_report("nothing useful")


def test_format_table_lists_every_row() -> None:
    rows = [
        KernelResources("k_a", 80, 4, {"BLOCK": 64}, 40, 0, 0, 1024),
        KernelResources("k_b", 90, 8, {"BLOCK": 128, "N": 16}, 96, 4, 4, 0),
    ]
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4
    assert "sm_80" in lines[2] and "BLOCK=64" in lines[2] and "1024" in lines[2]
    assert "sm_90a" in lines[3] and "N=16" in lines[3] and "96" in lines[3]
    assert lines[0].split()[-1] == "blocks/SM"
    assert lines[2].split()[-1] == str(rows[0].blocks_per_sm)


def test_blocks_per_sm_estimate() -> None:
    # 255 registers x 8 warps: 8192 registers per warp -> 65536 // 65536 = 1 block
    assert blocks_per_sm(90, 8, 255, 0) == 1
    # 64 registers x 4 warps = 8192 per block -> 8 blocks by registers, 16 by warps
    assert blocks_per_sm(80, 4, 64, 0) == 8
    # shared memory bound: 100 KiB per block on sm_80 (164 KiB) -> 1 block, on sm_90 (228 KiB) -> 2
    assert blocks_per_sm(80, 1, 16, 100 * 1024) == 1
    assert blocks_per_sm(90, 1, 16, 100 * 1024) == 2
    # tiny kernels are capped by the 64 warp slots
    assert blocks_per_sm(90, 8, 16, 0) == 8


def test_tuple_configs_are_accepted() -> None:
    cfg = as_aot_config((_scale_kernel, _SIG, {"BLOCK": 128}, 2))
    assert cfg.num_warps == 2 and cfg.constexprs == {"BLOCK": 128}
    rows = compile_configs([cfg], archs=(90,))
    assert len(rows) == 1 and rows[0].arch == 90 and rows[0].num_warps == 2


def _selective_scan_configs() -> list:
    from umamba_seg.ops.selective_scan import triton_kernels

    return list(triton_kernels.AOT_CONFIGS)


def _config_id(cfg) -> str:
    c = as_aot_config(cfg)
    keys = ("BD", "NP", "BT", "CB", "REVERSE", "BACKWARD", "ATOMIC_BC")
    consts = "-".join(f"{k}{v}" for k, v in c.constexprs.items() if k in keys)
    return f"{c.fn.__name__}-w{c.num_warps}-{consts}"


_SCAN_CONFIGS = _selective_scan_configs()


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("cfg", _SCAN_CONFIGS, ids=[_config_id(c) for c in _SCAN_CONFIGS])
def test_selective_scan_kernels_compile_without_spills(cfg, arch: int) -> None:
    c = as_aot_config(cfg)
    res = compile_for_gpu(c.fn, c.signature, c.constexprs, arch, c.num_warps, c.num_stages)
    assert not res.spills, f"register spill:\n{format_table([res])}"
    assert res.registers <= 255
    limit = 227 * 1024 if arch == 90 else 163 * 1024
    assert res.shared_bytes <= limit


def test_selective_scan_aot_configs_cover_every_kernel() -> None:
    names = {as_aot_config(c).fn.__name__ for c in _SCAN_CONFIGS}
    assert names == {
        "_chunk_carry_kernel",
        "_carry_scan_kernel",
        "_fwd_chunk_out_kernel",
        "_bwd_chunk_grad_kernel",
    }
    carry = [as_aot_config(c).constexprs for c in _SCAN_CONFIGS if "REVERSE" in as_aot_config(c).constexprs]
    reverse = {consts["REVERSE"] for consts in carry}
    assert reverse == {True, False}
    chunk_carry = [as_aot_config(c).constexprs for c in _SCAN_CONFIGS if "BACKWARD" in as_aot_config(c).constexprs]
    assert {consts["BACKWARD"] for consts in chunk_carry} == {True, False}
