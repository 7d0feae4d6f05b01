"""``plan-and-preprocess --explain``: what was planned, per architecture and configuration.

One row per (architecture, configuration): spacing, patch, total downsampling, stages,
batch, and the estimated memory of a training step split into conv activations, token
mixer activations, and the fixed part (parameters, gradients, optimizer state, workspace,
plus outputs and autocast's parameter casts). Plans from the SSM-aware planner carry the
estimate (``umamba_memory``); for the CNN, and for every network on the CNN's plan
(``--plan-source cnn``), it is traced here with the same memory model. A patch moved to the
nearest one a network accepts (``--plan-source cnn``) is stated under the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.planning.arch_plans import plans_file
from umamba_seg.planning.budget import GB, OPTIMIZER_STATE_BYTES, WORKSPACE_BASE_GB, WORKSPACE_FRACTION, MemoryBudget
from umamba_seg.planning.cnn_source import PATCH_NOTE_KEY
from umamba_seg.planning.naming import DEFAULT_PLAN_SOURCE
from umamba_seg.workspace import Workspace

HEADER = (
    "arch",
    "config",
    "spacing (mm)",
    "patch",
    "downsampling",
    "stages",
    "batch",
    "conv GB",
    "mixer GB",
    "fixed GB",
    "total GB",
    "network",
)


def memory_record(conf: dict, dataset_json: dict, gpu_memory_gb: float) -> dict:
    """The configuration's stored estimate, or one traced now (plans from nnunetv2's planner)."""
    if "umamba_memory" in conf:
        return conf["umamba_memory"]
    from umamba_seg.planning.memory_model import estimate_memory

    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    est = estimate_memory(
        conf["architecture"], conf["patch_size"], int(conf["batch_size"]), len(channels), len(dataset_json["labels"])
    )
    budget = MemoryBudget(gpu_memory_gb, est.n_parameters)
    return {
        "conv_gb": est.conv_bytes / GB,
        "token_mixer_gb": est.mixer_bytes / GB,
        "outputs_gb": est.output_bytes / GB,
        "param_casts_gb": est.param_cast_bytes / GB,
        "fixed_gb": budget.fixed_bytes / GB,
        "n_parameters": est.n_parameters,
        "total_gb": (budget.fixed_bytes + est.activation_bytes) / GB,
        "fits": None,
        "notes": [],
    }


def _row(arch: str, name: str, conf: dict, mem: dict) -> tuple[str, ...]:
    kw = conf["architecture"]["arch_kwargs"]
    strides = kw.get("strides") or []
    down = [math.prod(int(s[a]) for s in strides) for a in range(len(conf["patch_size"]))] if strides else []
    fixed = mem["fixed_gb"] + mem.get("outputs_gb", 0.0) + mem.get("param_casts_gb", 0.0)
    total = f"{mem['total_gb']:.2f}" + ("" if mem.get("fits", True) in (True, None) else " (!)")
    return (
        arch,
        name,
        "x".join(f"{s:.3g}" for s in conf["spacing"]),
        "x".join(str(p) for p in conf["patch_size"]),
        "x".join(str(d) for d in down),
        str(len(strides)),
        str(conf["batch_size"]),
        f"{mem['conv_gb']:.2f}",
        f"{mem['token_mixer_gb']:.2f}",
        f"{fixed:.2f}",
        total,
        f"{conf['architecture']['network_class_name'].rsplit('.', 1)[-1]} ({mem['n_parameters'] / 1e6:.1f}M)",
    )


def explain_plans(
    ws: Workspace,
    dataset_name: str,
    archs: Sequence[str],
    configurations: Sequence[str],
    gpu_memory_gb: float,
    plan_source: str = DEFAULT_PLAN_SOURCE,
) -> str:
    """A table of every planned (arch, configuration) of ``plan_source`` with its memory
    estimate, and the budget rule."""
    pre = ws.preprocessed_dataset(dataset_name)
    dataset_json = load_json(str(pre / "dataset.json"))
    rows, notes = [HEADER], []
    for arch in archs:
        plans = PlansManager(str(plans_file(pre, arch, plan_source)))
        for c in configurations:
            conf = plans.get_configuration(c).configuration if c in plans.available_configurations else {}
            if "architecture" not in conf:
                continue
            mem = memory_record(conf, dataset_json, gpu_memory_gb)
            rows.append(_row(arch, c, conf, mem))
            notes += [f"{arch} {c}: {n}" for n in [*mem.get("notes", []), conf.get(PATCH_NOTE_KEY)] if n]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [
        f"Plans for {dataset_name} (GPU memory target {gpu_memory_gb:g} GB), "
        + (
            "every network on the CNN's patch, batch and topology (--plan-source cnn)"
            if plan_source == "cnn"
            else "each network's own patch, batch and topology from the SSM-aware planner (--plan-source ssm)"
        ),
        "Memory of one training step under fp16 AMP, traced per network: conv = activations saved for backward "
        "outside token mixers, mixer = inside them (projections, conv1d, dt/B/C, scan checkpoints, "
        "cross-scan copies, mLSTM states);",
        f"fixed = parameters + gradients + optimizer state (4 + 4 + {OPTIMIZER_STATE_BYTES['sgd']} bytes per "
        f"parameter with SGD momentum, + {OPTIMIZER_STATE_BYTES['adamw']} with AdamW where its authors' recipe uses it)"
        f" + workspace ({WORKSPACE_BASE_GB:g} GB + {WORKSPACE_FRACTION:.0%} of the target) + outputs and "
        "autocast's parameter casts. The CNN row is nnU-Net's own plan, estimated with the same model.",
    ]
    for i, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
