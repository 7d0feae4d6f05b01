"""GPU section of the selective-scan benchmark: Triton kernels vs the torch path (a benchmark, not a test).

Runs only where CUDA exists (prints one line and returns otherwise). For the benchmark
shapes of :mod:`.scan_inputs` and each input dtype it reports forward
and forward+backward times of both backends, the Triton speed-up, the largest
difference between the backends (a first correctness check on real hardware), and
the *effective* bandwidth: the bytes a call must move at least (inputs read once,
outputs written once) divided by its time, next to the card's bandwidth (nominal from
a table when the card is known, and a measured device-to-device copy).

    python scripts/bench_scan_gpu.py [--repeats 5] [--dtypes bf16 fp32] [--shapes all|small] [--sweep]
    python -m umamba_seg.benchmark.scan_gpu ...   (the same)

``--sweep`` also times the Triton forward and backward kernels directly under several
tile configurations (channels per block, sub-block length, warps) to tune
``triton_kernels.pick_config`` on a real card.

``run_gpu_section(...)`` returns one dict per (shape, dtype); ``sweep_tiles(...)`` one dict
per (shape, tile configuration).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial

import torch

from umamba_seg.benchmark.scan_inputs import (
    SHAPE_HEADER,
    SHAPES,
    forward,
    forward_backward,
    make_inputs,
    shape_cells,
    shape_row,
)

#: Nominal peak memory bandwidth in GB/s by a substring of the device name.
NOMINAL_GBS = {
    "H200": 4800.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,
    "L40S": 864.0,
    "A10G": 600.0,
    "RTX 4090": 1008.0,
}

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def nominal_bandwidth_gbs(name: str) -> float | None:
    """Catalogue bandwidth of a device name, or None if unknown."""
    for key, gbs in NOMINAL_GBS.items():
        if key in name:
            return gbs
    return None


def measured_copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Read + write bandwidth of a large device-to-device copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_cuda_time(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * nbytes / best / 1e9


def _cuda_time(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


def min_bytes(b: int, d: int, n: int, L: int, groups: int, esize: int, backward: bool) -> int:
    """Bytes a call has to move at least: every input read once, every output written once."""
    seq = b * d * L * esize  # one (b, d, L) tensor
    bc = b * groups * n * L * esize  # one B or C
    fwd = 3 * seq + 2 * bc + seq  # u, delta, z, B, C in; out
    if not backward:
        return fwd
    # forward again (recompute happens inside the backward, inputs re-read) + dout in,
    # du, ddelta, dz, dB, dC out
    return fwd + (4 * seq + 2 * bc) + (3 * seq + 2 * bc)


def _cast(kw: dict, dtype: torch.dtype) -> dict:
    seq_keys = ("u", "delta", "z", "B", "C")
    return {k: (v.to(dtype) if k in seq_keys else v) for k, v in kw.items()}


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / (b.abs().max() + 1e-12)).item()


def run_gpu_section(
    repeats: int = 5,
    dtypes: tuple[str, ...] = ("bf16", "fp32"),
    shapes=None,
    backends: tuple[str, str] = ("triton", "torch"),
) -> list[dict]:
    """Benchmark every (shape, dtype); prints a table and returns its rows. [] without CUDA."""
    if not torch.cuda.is_available():
        print("no CUDA device: GPU section of the selective-scan benchmark skipped")
        return []
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    props = torch.cuda.get_device_properties(device)
    nominal = nominal_bandwidth_gbs(name)
    copy_gbs = measured_copy_bandwidth_gbs(device)
    print(
        f"device: {name}, {props.multi_processor_count} SMs; bandwidth nominal "
        f"{nominal if nominal else 'unknown'} GB/s, measured copy {copy_gbs:.0f} GB/s"
    )
    tri, ref = backends
    header = (
        f"{SHAPE_HEADER} {'dtype':>5} | {tri + ' fwd ms':>12} {ref + ' fwd ms':>12} "
        f"{'x':>5} {'GB/s':>6} {'%copy':>5} | {tri + ' f+b ms':>12} {ref + ' f+b ms':>12} {'x':>5} "
        f"{'GB/s':>6} {'%copy':>5} | {'max rel diff out/grads':>22}"
    )
    print(header)
    rows = []
    for shape in shapes or SHAPES:
        b, d, n, L = shape
        base = make_inputs(b, d, n, L, device)
        for dname in dtypes:
            dtype = DTYPES[dname]
            kw = _cast(base, dtype)
            dout = torch.randn(b, d, L, device=device, dtype=dtype)
            esize = torch.finfo(dtype).bits // 8
            row = shape_row(shape, dtype=dname, device=name)
            outs, grads = {}, {}
            for backend in (tri, ref):
                outs[backend] = forward(kw, backend)  # warm-up and compile
                grads[backend] = forward_backward(kw, backend, dout)
                row[f"{backend}_fwd_s"] = min(_cuda_time(partial(forward, kw, backend)) for _ in range(repeats))
                row[f"{backend}_fwdbwd_s"] = min(
                    _cuda_time(partial(forward_backward, kw, backend, dout)) for _ in range(repeats)
                )
            row["max_rel_diff_out"] = _max_rel_diff(outs[tri], outs[ref])
            row["max_rel_diff_grad"] = max(_max_rel_diff(grads[tri][k], grads[ref][k]) for k in grads[ref])
            fb = min_bytes(b, d, n, L, 1, esize, backward=False)
            fbb = min_bytes(b, d, n, L, 1, esize, backward=True)
            row["fwd_gbs"] = fb / row[f"{tri}_fwd_s"] / 1e9
            row["fwdbwd_gbs"] = fbb / row[f"{tri}_fwdbwd_s"] / 1e9
            row["fwd_speedup"] = row[f"{ref}_fwd_s"] / row[f"{tri}_fwd_s"]
            row["fwdbwd_speedup"] = row[f"{ref}_fwdbwd_s"] / row[f"{tri}_fwdbwd_s"]
            row["nominal_gbs"], row["copy_gbs"] = nominal, copy_gbs
            rows.append(row)
            print(
                f"{shape_cells(shape)} {dname:>5} | {row[f'{tri}_fwd_s'] * 1e3:12.3f} "
                f"{row[f'{ref}_fwd_s'] * 1e3:12.3f} {row['fwd_speedup']:5.1f} {row['fwd_gbs']:6.0f} "
                f"{100 * row['fwd_gbs'] / copy_gbs:5.1f} | {row[f'{tri}_fwdbwd_s'] * 1e3:12.3f} "
                f"{row[f'{ref}_fwdbwd_s'] * 1e3:12.3f} {row['fwdbwd_speedup']:5.1f} {row['fwdbwd_gbs']:6.0f} "
                f"{100 * row['fwdbwd_gbs'] / copy_gbs:5.1f} | "
                f"{row['max_rel_diff_out']:10.2e} {row['max_rel_diff_grad']:10.2e}",
                flush=True,
            )
            del kw, dout, outs, grads
        del base
        torch.cuda.empty_cache()
    return rows


#: (block_d, block_t, num_warps) tried by the sweep; n_pad follows d_state.
SWEEP_TILES = [(1, 64, 4), (1, 128, 8), (2, 32, 4), (2, 32, 8), (2, 64, 8), (4, 32, 8), (4, 16, 4)]


def sweep_tiles(repeats: int = 5, dtype_name: str = "bf16", shapes=None, tiles=SWEEP_TILES) -> list[dict]:
    """Time the Triton backend's forward and backward per tile configuration. [] without CUDA."""
    if not torch.cuda.is_available():
        print("no CUDA device: tile sweep skipped")
        return []
    from umamba_seg.ops.selective_scan import triton_kernels as tk  # Triton only where it runs

    device = torch.device("cuda")
    dtype = DTYPES[dtype_name]
    rows = []
    print(f"{SHAPE_HEADER} | {'BD':>2} {'BT':>4} {'warps':>5} | {'fwd ms':>8} {'bwd ms':>8}")
    for shape in shapes or SHAPES:
        b, d, n, L = shape
        kw = _cast(make_inputs(b, d, n, L, device), dtype)
        args = [
            kw["u"],
            kw["delta"],
            kw["A"],
            kw["B"][:, None],
            kw["C"][:, None],
            kw["D"],
            kw["z"],
            kw["delta_bias"],
            True,
        ]
        dout = torch.randn(b, d, L, device=device, dtype=dtype)
        default = tk.pick_config(d, 1, n)
        for block_d, block_t, warps in [(default.block_d, default.block_t, default.num_warps), *tiles]:
            if d % block_d:
                continue
            cfg = tk.LaunchConfig(block_d, default.n_pad, block_t, warps)
            try:
                out, last, ckpt = tk.forward(*args, config=cfg)
                tk.backward(dout, None, *args, ckpt, config=cfg)
            except Exception as exc:  # a configuration the card cannot run (resources)
                print(f"{shape_cells(shape)} | {block_d:>2} {block_t:>4} {warps:>5} | failed: {exc}")
                continue
            t_f = min(_cuda_time(partial(tk.forward, *args, config=cfg)) for _ in range(repeats))
            t_b = min(_cuda_time(partial(tk.backward, dout, None, *args, ckpt, config=cfg)) for _ in range(repeats))
            tile = dict(block_d=block_d, block_t=block_t, num_warps=warps)
            rows.append(shape_row(shape, **tile, fwd_s=t_f, bwd_s=t_b, default=cfg == default))
            mark = " (default)" if cfg == default else ""
            print(
                f"{shape_cells(shape)} | {block_d:>2} {block_t:>4} {warps:>5} | "
                f"{t_f * 1e3:8.3f} {t_b * 1e3:8.3f}{mark}",
                flush=True,
            )
        del kw, args, dout
        torch.cuda.empty_cache()
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per measurement; the minimum is kept")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--shapes", default="all", choices=["small", "all"])
    parser.add_argument("--sweep", action="store_true", help="also sweep Triton tile configurations")
    args = parser.parse_args(argv)
    shapes = SHAPES[:1] if args.shapes == "small" else SHAPES
    run_gpu_section(repeats=args.repeats, dtypes=tuple(args.dtypes), shapes=shapes)
    if args.sweep:
        sweep_tiles(repeats=args.repeats, dtype_name=args.dtypes[0], shapes=shapes)


if __name__ == "__main__":
    main()
