"""Ahead-of-time GPU compilation of Triton kernels, without a GPU.

Why: CI and most development boxes have no GPU, yet we must know that every kernel
compiles for A100 (sm_80) and H100 (sm_90a) and does not spill registers. Triton can
lower a ``@triton.jit`` function to PTX for a named target without a driver; the
PTX is then assembled by Triton's bundled ``ptxas -v``, whose report gives
registers per thread and spill bytes. Shared memory comes from Triton's metadata.

Kernel modules expose ``AOT_CONFIGS``: a list of :class:`AotConfig` (or tuples
``(fn, signature, constexprs, num_warps)``) that tests and ``scripts/triton_resources.py``
iterate over.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHS = (80, 90)


@dataclass(frozen=True)
class KernelResources:
    """What one compiled kernel uses per thread / per block on one architecture."""

    name: str
    arch: int
    num_warps: int
    constexprs: dict[str, object]
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    stack_bytes: int = 0

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0

    @property
    def blocks_per_sm(self) -> int:
        """Resident blocks per SM allowed by registers, shared memory and warp slots (estimate)."""
        return blocks_per_sm(self.arch, self.num_warps, self.registers, self.shared_bytes)


@dataclass(frozen=True)
class AotConfig:
    """One kernel plus the signature and compile-time constants to compile it with."""

    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int = 4
    num_stages: int = 2
    label: str = field(default="")


def as_aot_config(entry: AotConfig | Sequence[Any]) -> AotConfig:
    """Accept either an :class:`AotConfig` or a ``(fn, signature, constexprs, num_warps)`` tuple."""
    if isinstance(entry, AotConfig):
        return entry
    fn, signature, constexprs, *rest = entry
    num_warps = rest[0] if rest else 4
    return AotConfig(fn=fn, signature=dict(signature), constexprs=dict(constexprs), num_warps=num_warps)


def ptxas_path() -> str:
    """Path of the ``ptxas`` binary shipped inside the Triton wheel."""
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(path):  # pragma: no cover - depends on the wheel layout
        raise FileNotFoundError(f"Triton's bundled ptxas not found at {path}")
    return path


def _gpu_name(arch: int) -> str:
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"arch must be one of {SUPPORTED_ARCHS}, got {arch}")
    return "sm_90a" if arch == 90 else f"sm_{arch}"


#: Per-SM limits of sm_80 / sm_90: registers, shared memory usable by blocks, warps, blocks.
_SM_LIMITS = {80: (65536, 164 * 1024, 64, 32), 90: (65536, 228 * 1024, 64, 32)}


def blocks_per_sm(arch: int, num_warps: int, registers: int, shared_bytes: int) -> int:
    """Occupancy estimate: registers are allocated per warp in units of 256, shared memory
    per block with 1 KiB reserved by the driver."""
    regs_sm, smem_sm, warps_sm, blocks_sm = _SM_LIMITS[arch]
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = regs_sm // (regs_per_warp * num_warps)
    by_smem = smem_sm // (shared_bytes + 1024) if shared_bytes else blocks_sm
    by_warps = warps_sm // num_warps
    return max(0, min(by_regs, by_smem, by_warps, blocks_sm))


_REG_RE = re.compile(r"Used (\d+) registers")
_SPILL_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_report(text: str) -> tuple[int, int, int, int]:
    """Return ``(registers, spill_stores, spill_loads, stack_bytes)`` from ``ptxas -v`` output.

    Sums spill bytes and takes the max register count over all entries (a module holds
    one kernel in practice).
    """
    regs = [int(m) for m in _REG_RE.findall(text)]
    spills = [tuple(int(x) for x in m) for m in _SPILL_RE.findall(text)]
    if not regs:
        raise RuntimeError(f"could not parse a register count from ptxas output:\n{text}")
    stack = max((s[0] for s in spills), default=0)
    stores = sum(s[1] for s in spills)
    loads = sum(s[2] for s in spills)
    return max(regs), stores, loads, stack


def run_ptxas(ptx: str, arch: int) -> str:
    """Assemble ``ptx`` for ``arch`` with ``ptxas -v`` and return its report (stdout + stderr)."""
    with tempfile.TemporaryDirectory(prefix="umamba_ptxas_") as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas_path(), "-v", f"--gpu-name={_gpu_name(arch)}", src, "-o", os.devnull],
            capture_output=True,
            text=True,
        )
    report = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed for {_gpu_name(arch)}:\n{report}")
    return report


def compile_for_gpu(
    fn: Callable[..., Any],
    signature: dict[str, str],
    constexprs: dict[str, object],
    arch: int,
    num_warps: int = 4,
    num_stages: int = 2,
) -> KernelResources:
    """Compile ``fn`` (a ``@triton.jit`` kernel) for ``arch`` (80 -> sm_80, 90 -> sm_90a).

    ``signature`` maps every argument name to a Triton type string (``"*fp32"``,
    ``"i32"``, ``"fp32"``, ...) or ``"constexpr"``; ``constexprs`` gives the values of
    the constexpr arguments. Works without a GPU or driver.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _gpu_name(arch)  # validate early
    sig = dict(signature)
    for key in constexprs:
        sig.setdefault(key, "constexpr")
    src = ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    report = run_ptxas(compiled.asm["ptx"], arch)
    registers, stores, loads, stack = parse_ptxas_report(report)
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", "kernel")
    return KernelResources(
        name=name,
        arch=arch,
        num_warps=num_warps,
        constexprs=dict(constexprs),
        registers=registers,
        spill_stores=stores,
        spill_loads=loads,
        shared_bytes=int(compiled.metadata.shared),
        stack_bytes=stack,
    )


def compile_configs(
    configs: Iterable[AotConfig | Sequence[Any]], archs: Iterable[int] = SUPPORTED_ARCHS
) -> list[KernelResources]:
    """Compile every configuration for every architecture."""
    rows: list[KernelResources] = []
    archs = tuple(archs)
    for entry in configs:
        cfg = as_aot_config(entry)
        for arch in archs:
            rows.append(compile_for_gpu(cfg.fn, cfg.signature, cfg.constexprs, arch, cfg.num_warps, cfg.num_stages))
    return rows


def format_table(rows: list[KernelResources]) -> str:
    """A fixed-width text table: kernel, arch, warps, constexprs, registers, shared, spills,
    and the estimated resident blocks per SM."""
    header = ("kernel", "arch", "warps", "constexprs", "regs", "shared_B", "spill_st_B", "spill_ld_B", "blocks/SM")
    body = [
        (
            r.name,
            _gpu_name(r.arch),
            str(r.num_warps),
            ",".join(f"{k}={v}" for k, v in r.constexprs.items()),
            str(r.registers),
            str(r.shared_bytes),
            str(r.spill_stores),
            str(r.spill_loads),
            str(r.blocks_per_sm),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
