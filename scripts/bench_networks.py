"""Forward and forward+backward time of every architecture at the CNN's planned patch, relative to the CNN.

A benchmark, not a test, and no training: each network (untrained, seeded) runs on the CNN's
plan of the dataset (same patch, or the nearest one it accepts, and the same batch; see
``umamba_seg.benchmark.same_plan``). Forward is inference mode; forward+backward is a training
step without the optimizer, every deep-supervision output in the loss. Autocast on CUDA only,
as nnunetv2's trainer does. The networks are timed interleaved in one run (warm-up first, then
``--repeats`` rounds; medians), so load changes hit all of them alike.

    python scripts/bench_networks.py --workdir W -d ID [-c 3d_fullres] [-a ARCH ...] [--repeats 3]
        [--batch N] [--threads N] [--device cpu|cuda] [--quick]
    python scripts/bench_networks.py --workdir /tmp/bench --make-dataset ct3d --quick   # built-in data

``--quick``: batch 1, one warm-up and two timed rounds (a smoke run on a CPU).
"""

from __future__ import annotations

import argparse

import torch

from umamba_seg.benchmark import timing_script
from umamba_seg.benchmark.cnn_plan import cnn_plan_from_args
from umamba_seg.benchmark.networks import forward_backward_fn, forward_fn, n_parameters
from umamba_seg.benchmark.ratios import ratios_to_cnn
from umamba_seg.benchmark.same_plan import benchmark_archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    timing_script.add_timing_arguments(
        parser, warmup_help="untimed calls of each network first", quick_help="batch 1, 1 warm-up, 2 rounds"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the plan's)")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.warmup, args.repeats = args.batch or 1, 1, 2
    device = timing_script.timing_device(args)
    cnn = cnn_plan_from_args(args)
    archs = benchmark_archs(args.arch)
    conf = timing_script.cnn_configuration(cnn)
    print(
        f"{cnn.dataset_name} {cnn.configuration}: CNN patch {conf['patch_size']}, "
        f"batch {conf['batch_size']}; device={device} threads={torch.get_num_threads()}"
    )

    fns, info = {}, {}
    for arch, planned, note in timing_script.networks_on_plan(cnn, archs, "building networks"):
        batch = args.batch or planned.batch_size
        x = torch.randn(batch, planned.input_channels, *planned.patch_size, device=device)
        # two instances, seeded alike: forward in eval mode, forward+backward in training mode
        train_net = planned.build(deep_supervision=True).to(device)
        eval_net = planned.build(deep_supervision=False).to(device)
        fns[(arch, "fwd")] = forward_fn(eval_net, x)
        fns[(arch, "fwdbwd")] = forward_backward_fn(train_net, x)
        info[arch] = (planned.patch_size, batch, n_parameters(train_net), note)

    med = timing_script.timed_medians(fns, args, device)
    fwd = ratios_to_cnn({a: med[(a, "fwd")] for a in archs})
    fb = ratios_to_cnn({a: med[(a, "fwdbwd")] for a in archs})
    print(
        f"{'arch':<18} {'patch':<12} {'batch':>5} {'params':>8} | {'fwd s':>8} {'fwd/CNN':>8} | "
        f"{'f+b s':>8} {'f+b/CNN':>8}  note"
    )
    for a in archs:
        patch, batch, params, note = info[a]
        print(
            f"{a:<18} {'x'.join(map(str, patch)):<12} {batch:>5} {params / 1e6:>7.2f}M | "
            f"{med[(a, 'fwd')]:>8.3f} {fwd[a]:>7.2f}x | {med[(a, 'fwdbwd')]:>8.3f} {fb[a]:>7.2f}x  {note}",
            flush=True,
        )


if __name__ == "__main__":
    main()
