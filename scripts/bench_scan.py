"""Benchmark the selective scan against a memory/exp lower bound (not a test).

The bound, per shape: ``(exp(delta[..., None] * A) * u[..., None]).sum(-1)`` in float32
over blocks of 4096 positions: one exp and one multiply-add per state element, which any
selective scan has to do. Targets: forward <= 2x the bound, forward+backward <= 4x.
Also prints, for information, the speed-up of the forward over a float32 per-step loop.
Where CUDA exists it then runs the GPU section (``scripts/bench_scan_gpu.py``: Triton vs the
torch path, achieved GB/s against the card's bandwidth); ``--no-gpu`` skips it.

    python scripts/bench_scan.py [--backend torch] [--repeats 3] [--shapes small|all] [--threads N] [--no-gpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from umamba_seg.ops.selective_scan import selective_scan

SHAPES = [(2, 192, 16, 4096), (2, 192, 16, 32768), (1, 96, 16, 262144)]
BOUND_BLOCK = 4096


def make_inputs(b: int, d: int, n: int, L: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    kw = dict(
        u=torch.randn(b, d, L, generator=gen),
        delta=torch.randn(b, d, L, generator=gen) * 0.5 - 2.0,
        A=-torch.rand(d, n, generator=gen) * 4.0 - 0.1,
        B=torch.randn(b, n, L, generator=gen),
        C=torch.randn(b, n, L, generator=gen),
        D=torch.randn(d, generator=gen),
        z=torch.randn(b, d, L, generator=gen),
        delta_bias=torch.randn(d, generator=gen) * 0.1,
    )
    return {k: v.to(device) for k, v in kw.items()}


def bound(delta: torch.Tensor, A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    outs = []
    for s in range(0, u.shape[-1], BOUND_BLOCK):
        e = s + BOUND_BLOCK
        outs.append((torch.exp(delta[..., s:e, None] * A[:, None, :]) * u[..., s:e, None]).sum(-1))
    return torch.cat(outs, -1)


def per_step_loop(kw: dict) -> torch.Tensor:
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


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_forward(kw: dict, backend: str) -> None:
    with torch.no_grad():
        selective_scan(**kw, delta_softplus=True, backend=backend)


def run_forward_backward(kw: dict, backend: str, dout: torch.Tensor) -> None:
    leaves = {k: v.detach().requires_grad_(True) for k, v in kw.items()}
    out = selective_scan(**leaves, delta_softplus=True, backend=backend)
    out.backward(dout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "triton"])
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the minimum is kept")
    parser.add_argument("--shapes", default="all", choices=["small", "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section even where CUDA exists")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = SHAPES[:1] if args.shapes == "small" else SHAPES
    print(f"device={device} threads={torch.get_num_threads()} backend={args.backend}")
    print(f"{'b':>2} {'d':>4} {'n':>3} {'L':>7} | {'bound s':>8} {'fwd s':>8} {'fwd+bwd s':>9} | "
          f"{'fwd/bound':>9} {'f+b/bound':>9}")
    for b, d, n, L in shapes:
        kw = make_inputs(b, d, n, L, device)
        dout = torch.randn(b, d, L, device=device)
        run_forward(kw, args.backend)  # warm-up (allocator, lazy imports)
        times = {"bound": [], "fwd": [], "fwdbwd": []}
        for _ in range(args.repeats):  # interleaved so load changes hit all three alike
            times["bound"].append(timed(lambda: bound(kw["delta"], kw["A"], kw["u"]), device))
            times["fwd"].append(timed(lambda: run_forward(kw, args.backend), device))
            times["fwdbwd"].append(timed(lambda: run_forward_backward(kw, args.backend, dout), device))
        tb, tf, tfb = (min(times[k]) for k in ("bound", "fwd", "fwdbwd"))
        print(f"{b:>2} {d:>4} {n:>3} {L:>7} | {tb:8.3f} {tf:8.3f} {tfb:9.3f} | {tf / tb:9.2f} {tfb / tb:9.2f}",
              flush=True)
    b, d, n, L = SHAPES[0]
    kw = make_inputs(b, d, n, L, device)
    t_loop = timed(lambda: per_step_loop(kw), device)
    t_fwd = min(timed(lambda: run_forward(kw, args.backend), device) for _ in range(args.repeats))
    print(f"forward speed-up over an fp32 per-step loop at L={L}: {t_loop / t_fwd:.1f}x "
          f"({t_loop:.3f} s vs {t_fwd:.3f} s)")
    if not args.no_gpu:
        from bench_scan_gpu import run_gpu_section  # imports this module's shapes; the script folder is on sys.path

        print("\nGPU section:")
        run_gpu_section(repeats=max(args.repeats, 5), shapes=shapes)


if __name__ == "__main__":
    main()
