"""The selective scan against a memory/exp lower bound (a benchmark, not a test).

The bound, per shape: ``(exp(delta[..., None] * A) * u[..., None]).sum(-1)`` in float32
over blocks of 4096 positions: one exp and one multiply-add per state element, which any
selective scan has to do. Targets: forward <= 2x the bound, forward+backward <= 4x.
Also prints, for information, the speed-up of the forward over a float32 per-step loop.
Where CUDA exists it then runs the GPU section (:mod:`.scan_gpu`: Triton vs the torch path,
achieved GB/s against the card's bandwidth); ``--no-gpu`` skips it.

    python scripts/bench_scan.py [--backend torch] [--repeats 3] [--shapes small|all] [--threads N] [--no-gpu]
    python -m umamba_seg.benchmark.scan_bound ...   (the same)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial

import torch

from umamba_seg.benchmark.scan_gpu import run_gpu_section
from umamba_seg.benchmark.scan_inputs import (
    SHAPE_HEADER,
    SHAPES,
    Shape,
    forward,
    forward_backward,
    make_inputs,
    shape_cells,
    shape_row,
)
from umamba_seg.benchmark.timing import time_call

BOUND_BLOCK = 4096


def bound(delta: torch.Tensor, A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The floor: one exp and one multiply-add per state element, in blocks of positions."""
    outs = []
    for s in range(0, u.shape[-1], BOUND_BLOCK):
        e = s + BOUND_BLOCK
        outs.append((torch.exp(delta[..., s:e, None] * A[:, None, :]) * u[..., s:e, None]).sum(-1))
    return torch.cat(outs, -1)


def per_step_loop(kw: dict[str, torch.Tensor]) -> torch.Tensor:
    """The naive float32 selective scan: one Python iteration per position."""
    u, A, B, C = kw["u"], kw["A"], kw["B"], kw["C"]
    dt = torch.nn.functional.softplus(kw["delta"] + kw["delta_bias"][:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, -1) + kw["D"][:, None] * u
    return y * torch.nn.functional.silu(kw["z"])


def bound_rows(
    shapes: Sequence[Shape],
    backend: str = "torch",
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Per shape the minimum seconds of the bound, the forward and forward+backward, and their ratios.

    Prints the table row by row. Repeats are interleaved, so a change of load hits all three alike.
    """
    device = torch.device(device)
    print(f"{SHAPE_HEADER} | {'bound s':>8} {'fwd s':>8} {'fwd+bwd s':>9} | {'fwd/bound':>9} {'f+b/bound':>9}")
    rows = []
    for shape in shapes:
        b, d, n, L = shape
        kw = make_inputs(b, d, n, L, device)
        dout = torch.randn(b, d, L, device=device)
        forward(kw, backend)  # warm-up (allocator, lazy imports)
        times: dict[str, list[float]] = {"bound": [], "fwd": [], "fwdbwd": []}
        for _ in range(repeats):
            times["bound"].append(time_call(partial(bound, kw["delta"], kw["A"], kw["u"]), device))
            times["fwd"].append(time_call(partial(forward, kw, backend), device))
            times["fwdbwd"].append(time_call(partial(forward_backward, kw, backend, dout), device))
        tb, tf, tfb = (min(times[k]) for k in ("bound", "fwd", "fwdbwd"))
        rows.append(
            shape_row(shape, bound_s=tb, fwd_s=tf, fwdbwd_s=tfb, fwd_over_bound=tf / tb, fwdbwd_over_bound=tfb / tb)
        )
        print(f"{shape_cells(shape)} | {tb:8.3f} {tf:8.3f} {tfb:9.3f} | {tf / tb:9.2f} {tfb / tb:9.2f}", flush=True)
    return rows


def loop_speedup(shape: Shape, backend: str = "torch", repeats: int = 3, device: torch.device | str = "cpu") -> dict:
    """Seconds of the per-step loop and of the scan's forward at ``shape``, and their ratio."""
    device = torch.device(device)
    kw = make_inputs(*shape, device)
    t_loop = time_call(lambda: per_step_loop(kw), device)
    t_fwd = min(time_call(partial(forward, kw, backend), device) for _ in range(repeats))
    return dict(L=shape[-1], loop_s=t_loop, fwd_s=t_fwd, speedup=t_loop / t_fwd)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "triton"])
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the minimum is kept")
    parser.add_argument("--shapes", default="all", choices=["small", "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section even where CUDA exists")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES[:1] if args.shapes == "small" else SHAPES
    print(f"device={args.device} threads={torch.get_num_threads()} backend={args.backend}")
    bound_rows(shapes, args.backend, args.repeats, args.device)
    s = loop_speedup(SHAPES[0], args.backend, args.repeats, args.device)
    print(
        f"forward speed-up over an fp32 per-step loop at L={s['L']}: {s['speedup']:.1f}x "
        f"({s['loop_s']:.3f} s vs {s['fwd_s']:.3f} s)"
    )
    if not args.no_gpu:
        print("\nGPU section:")
        run_gpu_section(repeats=max(args.repeats, 5), shapes=shapes)


if __name__ == "__main__":
    main()
