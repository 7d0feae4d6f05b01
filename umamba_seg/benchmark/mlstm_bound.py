"""The chunkwise mLSTM against the quadratic parallel form (a benchmark, not a test).

For growing sequence lengths L, prints time and peak memory of forward and
forward+backward for the chunkwise op (``mlstm``, backend torch on CPU, triton on CUDA)
and for the parallel form (Vision-LSTM's; ``mlstm_parallel_reference``), and where the
parallel form's forward+backward stops fitting in 24 GiB (a quadratic fit of its
measured peaks; lengths beyond ``--parallel-max-len`` are not run, only predicted).

The bound, defined like the selective scan's (:mod:`.scan_bound`): the matrix products any chunkwise linear
attention has to do, ``k_c^T v_c`` (write the state) and ``q_c @ state`` (read it) per
chunk of 64 positions, in float32 over blocks of 4096 positions, without gates,
normaliser, intra-chunk part or carry. Ratios ``fwd/bound`` and ``f+b/bound`` show how
far the op is from that floor.

Peak memory on CPU is the growth of the resident set's high-water mark over the inputs
(Linux /proc, reset just before the run), each measurement in a fresh child process; on CUDA
``torch.cuda.max_memory_allocated`` over the inputs.

    python scripts/bench_mlstm.py [--lengths 1024 4096 ...] [--heads 4] [--head-dim 64]
                                  [--parallel-max-len 4096] [--repeats 2] [--device cpu] [--threads N]
    python -m umamba_seg.benchmark.mlstm_bound ...   (the same)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from functools import partial

import torch

from umamba_seg.benchmark.timing import time_call
from umamba_seg.ops.mlstm import mlstm, mlstm_parallel_reference

GIB = 1024**3
FIT_BUDGET_GIB = 24.0
BOUND_BLOCK = 4096
BOUND_CHUNK = 64
BOUND_REPEATS = 3
DEFAULT_LENGTHS = [1024, 4096, 16384, 65536, 262144]


def make_inputs(b: int, h: int, L: int, dh: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, L, dh, generator=gen) for _ in range(3))
    igate = torch.randn(b, h, L, generator=gen)
    fgate = torch.randn(b, h, L, generator=gen) + 4.0  # ViL's forget-gate bias range (3..6)
    return [t.to(device) for t in (q, k, v, igate, fgate)]


def bound(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    outs = []
    for s in range(0, q.shape[-2], BOUND_BLOCK):
        e = s + BOUND_BLOCK
        qc, kc, vc = (x[..., s:e, :].unflatten(-2, (-1, BOUND_CHUNK)) for x in (q, k, v))
        outs.append((qc @ (kc.transpose(-1, -2) @ vc)).flatten(-3, -2))
    return torch.cat(outs, -2)


def op(method: str, backend: str):
    if method == "parallel":
        return mlstm_parallel_reference
    return lambda *a: mlstm(*a, backend=backend)


def run(method: str, backend: str, inputs: list[torch.Tensor], backward: bool) -> None:
    fn = op(method, backend)
    if not backward:
        with torch.no_grad():
            fn(*inputs)
        return
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    out.backward(torch.ones_like(out))


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_bytes_child(method: str, backend: str, shape: tuple, backward: bool) -> int:
    """Peak resident memory of one run above the inputs, measured in this (fresh) process.

    Linux: writing 5 to /proc/self/clear_refs resets the high-water mark VmHWM to the
    current resident size, so the peak of the run alone can be read afterwards.
    """
    b, h, L, dh = shape
    inputs = make_inputs(b, h, L, dh, torch.device("cpu"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _proc_status_bytes("VmRSS")
    run(method, backend, inputs, backward)
    return max(0, _proc_status_bytes("VmHWM") - base)


def peak_bytes(method: str, backend: str, shape: tuple, backward: bool, device: torch.device) -> int:
    if device.type == "cuda":
        b, h, L, dh = shape
        inputs = make_inputs(b, h, L, dh, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(method, backend, inputs, backward)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    args = json.dumps([method, backend, list(shape), backward])
    proc = subprocess.run(
        [sys.executable, "-m", "umamba_seg.benchmark.mlstm_bound", "--child", args],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.strip().splitlines()[-1])


def quadratic_fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares ``bytes ~ a L^2 + c L`` through measured (L, bytes)."""
    x = torch.tensor([[float(L) ** 2, float(L)] for L, _ in points], dtype=torch.float64)
    y = torch.tensor([float(p) for _, p in points], dtype=torch.float64)
    sol = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    return float(sol[0]), float(sol[1])


def first_length_over(a: float, c: float, budget: float) -> int:
    """Smallest power-of-two L whose fitted memory exceeds ``budget`` bytes (a fit that grows: ``a > 0``)."""
    if a <= 0:
        raise ValueError(f"the fit {a} L^2 + {c} L does not grow quadratically")
    L = 1
    while a * L * L + c * L <= budget:
        L *= 2
    return L


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument(
        "--parallel-max-len",
        type=int,
        default=4096,
        help="longest L the parallel form is actually run at (beyond: predicted)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timings per measurement; the minimum is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 gives steadier timings on a shared box",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, backend, shape, backward = json.loads(args.child)
        print(peak_bytes_child(method, backend, tuple(shape), backward))
        return

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backend = "triton" if device.type == "cuda" else "torch"
    b, h, dh = args.batch, args.heads, args.head_dim
    print(
        f"device={device} threads={torch.get_num_threads()} chunkwise backend={backend} "
        f"batch={b} heads={h} head_dim={dh}"
    )
    header = (
        f"{'method':>9} {'L':>7} | {'bound s':>8} {'fwd s':>8} {'f+b s':>8} | {'fwd/bound':>9} "
        f"{'f+b/bound':>9} | {'fwd MiB':>9} {'f+b MiB':>9}"
    )
    print(header)
    par_points: list[tuple[int, int]] = []
    for L in args.lengths:
        inputs = make_inputs(b, h, L, dh, device)
        methods = ["chunkwise"] + (["parallel"] if L <= args.parallel_max_len else [])
        for method in methods:
            run(method, backend, inputs, False)  # warm-up
            times = {"bound": [], "fwd": [], "fb": []}
            for _ in range(args.repeats):
                # the bound is cheap: time it several times so one scheduling hiccup cannot set it
                times["bound"] += [time_call(partial(bound, *inputs[:3]), device) for _ in range(BOUND_REPEATS)]
                times["fwd"].append(time_call(partial(run, method, backend, inputs, False), device))
                times["fb"].append(time_call(partial(run, method, backend, inputs, True), device))
            tb, tf, tfb = (min(times[k]) for k in ("bound", "fwd", "fb"))
            mem_f = peak_bytes(method, backend, (b, h, L, dh), False, device)
            mem_fb = peak_bytes(method, backend, (b, h, L, dh), True, device)
            if method == "parallel":
                par_points.append((L, mem_fb))
            print(
                f"{method:>9} {L:>7} | {tb:8.3f} {tf:8.3f} {tfb:8.3f} | {tf / tb:9.2f} {tfb / tb:9.2f} | "
                f"{mem_f / 2**20:9.1f} {mem_fb / 2**20:9.1f}",
                flush=True,
            )
        del inputs
    a, c = quadratic_fit(par_points) if len(par_points) >= 2 else (0.0, 0.0)
    if len(par_points) >= 2 and a <= 0:
        print("\nparallel form: no quadratic growth over the measured lengths (too short to fit); run longer --lengths")
    elif len(par_points) >= 2:
        print(
            f"\nparallel form, forward+backward peak ~ {a:.1f} B x L^2 + {c:.0f} B x L "
            f"(fit of {len(par_points)} measured lengths)"
        )
        for L in args.lengths:
            if L > args.parallel_max_len:
                print(f"  predicted at L={L}: {(a * L * L + c * L) / GIB:,.1f} GiB")
        limit = first_length_over(a, c, FIT_BUDGET_GIB * GIB)
        exact = (-c + (c * c + 4 * a * FIT_BUDGET_GIB * GIB) ** 0.5) / (2 * a)
        print(
            f"parallel form exceeds {FIT_BUDGET_GIB:.0f} GiB from L ~ {exact:,.0f} "
            f"(first power of two over: {limit}); a 48^3 patch is L = {48**3}, 64^3 is {64**3}"
        )


if __name__ == "__main__":
    main()
