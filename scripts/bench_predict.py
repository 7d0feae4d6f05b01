"""Sliding-window prediction time of one case per architecture, relative to the CNN on the same plan.

A benchmark, not a test (the target is one: every SSM network <= 1.3x the CNN's time, flagged
with the reason where missed; see ``umamba_seg.benchmark.ratios``). Each network (untrained,
seeded) runs on the CNN's plan (``umamba_seg.benchmark.same_plan``) inside the predictor
``umamba-seg predict`` uses, so tiling, Gaussian weighting and mirroring (TTA) are the real ones.
The case is one preprocessed-looking volume (standard normal values, the plan's channels) of the
configuration's median image size, or ``--shape``. The networks are timed interleaved in one run
(warm-up first, then ``--repeats`` rounds; medians).

    python scripts/bench_predict.py --workdir W -d ID [-c 3d_fullres] [-a ARCH ...] [--shape Z Y X]
        [--repeats 3] [--no-tta] [--step-size 0.5] [--threads N] [--device cpu|cuda] [--quick]
    python scripts/bench_predict.py --workdir /tmp/bench --make-dataset ct3d --quick   # built-in data

``--quick``: a case of one patch, no TTA, one warm-up and one timed round (a CPU smoke run).
"""

from __future__ import annotations

import argparse
import math

import torch

from umamba_seg.benchmark import timing_script
from umamba_seg.benchmark.cnn_plan import cnn_plan_from_args
from umamba_seg.benchmark.networks import planned_network, sliding_window_fn, sliding_window_predictor
from umamba_seg.benchmark.ratios import INFERENCE_TARGET, check_inference_target, ratios_to_cnn
from umamba_seg.benchmark.same_plan import benchmark_archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_script.add_timing_arguments(
        parser,
        warmup_help="untimed predictions of each network first",
        quick_help="one-patch case, no TTA, 1 warm-up, 1 round",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=None,
        help="spatial size of the case (default: the configuration's median image size)",
    )
    parser.add_argument("--no-tta", action="store_true", help="no mirroring")
    parser.add_argument("--step-size", type=float, default=0.5)
    args = parser.parse_args()
    device = timing_script.timing_device(args)
    cnn = cnn_plan_from_args(args)
    conf = timing_script.cnn_configuration(cnn)
    if args.quick:
        args.no_tta, args.warmup, args.repeats = True, 1, 1
    shape = args.shape or (conf["patch_size"] if args.quick else conf["median_image_size_in_voxels"])
    shape = [int(round(s)) for s in shape]
    if len(shape) != len(conf["patch_size"]):
        parser.error(f"--shape needs {len(conf['patch_size'])} sizes for {cnn.configuration}")
    archs = benchmark_archs(args.arch)
    n_in = planned_network(cnn.plans, cnn.configuration, cnn.dataset_json).input_channels
    torch.manual_seed(0)
    # nnunetv2's layout: (channels, z, y, x); 2D configurations predict slice by slice
    case = torch.randn(n_in, *([1] if len(shape) == 2 else []), *shape)
    print(
        f"{cnn.dataset_name} {cnn.configuration}: case {'x'.join(map(str, shape))} ({n_in} channel(s)), "
        f"CNN patch {conf['patch_size']}, TTA {'off' if args.no_tta else 'on'}, step {args.step_size}; "
        f"device={device} threads={torch.get_num_threads()}"
    )

    fns, notes = {}, {}
    for arch, planned, note in timing_script.networks_on_plan(cnn, archs, "building predictors"):
        predictor = sliding_window_predictor(planned, device, args.step_size, not args.no_tta)
        fns[arch] = sliding_window_fn(predictor, case)
        notes[arch] = (planned.patch_size, note)

    med = timing_script.timed_medians(fns, args, device)
    ratios = ratios_to_cnn(med)
    print(f"{'arch':<18} {'patch':<12} | {'s/case':>8} {'vs CNN':>8}  note")
    for a in archs:
        patch, note = notes[a]
        print(f"{a:<18} {'x'.join(map(str, patch)):<12} | {med[a]:>8.3f} {ratios[a]:>7.2f}x  {note}")
    checks = check_inference_target(med, patch_voxels={a: math.prod(notes[a][0]) for a in archs})
    if checks:
        print(f"Target: SSM networks <= {INFERENCE_TARGET:g}x the CNN's sliding-window time at the same plan")
    for c in checks:
        print(("  " if c.met else "! ") + c.line())


if __name__ == "__main__":
    main()
