"""Estimated vs measured activation memory of planned networks (the memory model's check).

For each plans file and configuration: build the planned network for real, run one
training-mode forward at the planned patch and batch under autocast on this machine
(CPU: bf16; CUDA: fp16), count the bytes saved for backward with the same hooks as the
memory model (deduplicated by storage, parameters excluded), and put them next to the
meta-device trace for the same device policy and to the CUDA fp16 estimate the planner
used. On a CUDA device the peak allocated memory of a full step is reported as well.

    python -m umamba_seg.planning.calibrate PREPROCESSED_DATASET_DIR [-a ARCH ...] [-c CONFIG ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.json_files import read_json
from umamba_seg.planning.arch_plans import plans_file
from umamba_seg.planning.budget import GB
from umamba_seg.planning.memory_model import build_network, estimate_memory, measure_saved_bytes
from umamba_seg.planning.naming import DEFAULT_PLAN_SOURCE, PLAN_SOURCES, parse_plans_identifier


def calibrate_configuration(
    plans: dict, configuration: str, dataset_json: dict, device: str = "cpu", batch_size: int | None = None
) -> dict:
    """One row: estimated (same device policy and CUDA fp16) and measured bytes saved for backward."""
    conf = PlansManager(plans).get_configuration(configuration)
    arch = conf.configuration["architecture"]
    patch = [int(p) for p in conf.patch_size]
    batch = int(batch_size or conf.batch_size)
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    n_in, n_out = len(channels), len(dataset_json["labels"])
    amp = torch.bfloat16 if device == "cpu" else torch.float16
    policy = "cpu" if device == "cpu" else "cuda"
    t = time.perf_counter()
    est_same = estimate_memory(arch, patch, batch, n_in, n_out, policy, str(amp).removeprefix("torch."))
    trace_s = time.perf_counter() - t
    est_gpu = estimate_memory(arch, patch, batch, n_in, n_out, "cuda", "float16")
    torch.manual_seed(0)
    net = build_network(
        conf.network_arch_class_name,
        conf.network_arch_init_kwargs,
        conf.network_arch_init_kwargs_req_import,
        n_in,
        n_out,
    ).to(device)
    x = torch.randn(batch, n_in, *patch, device=device)
    t = time.perf_counter()
    measured = measure_saved_bytes(net, x, amp)
    measure_s = time.perf_counter() - t
    row = {
        "arch": plans.get("umamba_arch", plans["plans_name"]),
        "configuration": configuration,
        "patch": patch,
        "batch": batch,
        "params_m": measured.n_parameters / 1e6,
        "estimated_gb": est_same.saved_bytes / GB,
        "measured_gb": measured.saved_bytes / GB,
        "ratio": est_same.saved_bytes / max(measured.saved_bytes, 1),
        "mixer_share": est_same.mixer_bytes / max(est_same.saved_bytes, 1),
        "gpu_fp16_estimate_gb": est_gpu.activation_bytes / GB,
        "trace_s": trace_s,
        "measure_s": measure_s,
        "device": device,
    }
    if device == "cuda":
        row["cuda_peak_step_gb"] = _cuda_peak_step(net, x, amp) / GB
    return row


def _cuda_peak_step(net: torch.nn.Module, x: torch.Tensor, amp: torch.dtype) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    with torch.autocast("cuda", dtype=amp):
        out = net(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preprocessed_dataset", type=Path)
    p.add_argument("-a", "--arch", nargs="+", default=None)
    p.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--plan-source", choices=PLAN_SOURCES, default=DEFAULT_PLAN_SOURCE, help="with -a: which plans")
    p.add_argument("--batch-size", type=int, default=None, help="measure at this batch instead of the plan's")
    args = p.parse_args(argv)
    dataset_json = read_json(
        args.preprocessed_dataset / "dataset.json", "preprocess the dataset again with `umamba-seg plan-and-preprocess`"
    )
    files = sorted(f for f in args.preprocessed_dataset.glob("*.json") if parse_plans_identifier(f.stem))
    if args.arch:
        files = [plans_file(args.preprocessed_dataset, a, args.plan_source) for a in args.arch]
    print(
        "arch               config      patch        batch  params  estimated GB  measured GB  ratio  mixer "
        " GPU fp16 est GB"
    )
    for f in files:
        plans = read_json(f, "plan the dataset again with `umamba-seg plan-and-preprocess`")
        arch, source = parse_plans_identifier(f.stem)
        plans["umamba_arch"] = arch if source == DEFAULT_PLAN_SOURCE else f"{arch}[{source}]"  # the row's label
        manager = PlansManager(plans)
        for c in args.configurations:
            if c not in manager.available_configurations:
                continue
            if "architecture" not in manager.get_configuration(c).configuration:
                continue
            r = calibrate_configuration(plans, c, dataset_json, args.device, args.batch_size)
            print(
                f"{r['arch']:18s} {c:11s} {'x'.join(map(str, r['patch'])):12s} {r['batch']:5d}  "
                f"{r['params_m']:5.1f}M  {r['estimated_gb']:12.3f}  {r['measured_gb']:11.3f}  {r['ratio']:.3f}  "
                f"{r['mixer_share']:5.0%}  {r['gpu_fp16_estimate_gb']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
