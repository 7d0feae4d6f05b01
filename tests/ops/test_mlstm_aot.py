"""Ahead-of-time compile of every Triton mLSTM kernel for sm_80 (A100) and sm_90a (H100).

No GPU needed: Triton lowers to PTX and its bundled ``ptxas -v`` reports registers and
spills (see umamba_seg/ops/triton_aot.py). Every kernel must compile for both architectures without
a register spill and within the shared-memory limit.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") == "1":  # pragma: no cover - AOT needs the real compiler
    pytest.skip("AOT compile is unavailable under TRITON_INTERPRET=1", allow_module_level=True)

from umamba_seg.ops.mlstm import triton_kernels as tk  # noqa: E402
from umamba_seg.ops.triton_aot import as_aot_config, compile_for_gpu, format_table  # noqa: E402

CONFIGS = [as_aot_config(c) for c in tk.AOT_CONFIGS]
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}


def _config_id(c) -> str:
    parts = [c.fn.__name__] + [f"{k}{v}" for k, v in c.constexprs.items() if k in ("HAS_Z", "TRACK_MAX")]
    parts.append("bf16" if "*bf16" in c.signature.values() else "fp32")
    return "-".join(parts)


def test_aot_configs_cover_every_kernel() -> None:
    names = {c.fn.__name__ for c in CONFIGS}
    assert names == {
        "_chunk_outer_kernel",
        "_state_recurrence_kernel",
        "_fwd_output_kernel",
        "_bwd_dqk_kernel",
        "_bwd_dv_kernel",
    }
    for c in CONFIGS:
        assert list(c.signature) == list(c.fn.arg_names), c.fn.__name__
        assert all(c.signature[k] == "constexpr" for k in c.constexprs)
        if "T" in c.constexprs:
            assert c.constexprs["T"] == tk.DEFAULT_CHUNK
    assert {c.constexprs.get("HAS_Z") for c in CONFIGS if "HAS_Z" in c.constexprs} == {True, False}
    assert {c.constexprs.get("TRACK_MAX") for c in CONFIGS if "TRACK_MAX" in c.constexprs} == {True, False}
    bf16 = {c.fn.__name__ for c in CONFIGS if "*bf16" in c.signature.values()}
    assert bf16 == {"_chunk_outer_kernel", "_fwd_output_kernel", "_bwd_dqk_kernel", "_bwd_dv_kernel"}
    assert len({_config_id(c) for c in CONFIGS}) == len(CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[_config_id(c) for c in CONFIGS])
def test_mlstm_kernels_compile_without_spills(cfg, arch: int) -> None:
    res = compile_for_gpu(cfg.fn, cfg.signature, cfg.constexprs, arch, cfg.num_warps, cfg.num_stages)
    assert not res.spills, f"register spill:\n{format_table([res])}"
    assert 0 < res.registers <= 255
    assert res.shared_bytes <= SHARED_LIMIT[arch]
