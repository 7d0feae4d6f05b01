"""``plan-and-preprocess --explain``: what was planned, per architecture and configuration."""

from __future__ import annotations

from typing import Sequence

from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.planning.arch_plans import plans_file
from umamba_seg.workspace import Workspace


def explain_plans(ws: Workspace, dataset_name: str, archs: Sequence[str], configurations: Sequence[str],
                  gpu_memory_gb: float) -> str:
    """A table: arch, configuration, spacing, patch, stages, batch size."""
    pre = ws.preprocessed_dataset(dataset_name)
    rows = [("arch", "config", "spacing (mm)", "patch", "stages", "batch", "network")]
    for arch in archs:
        plans = load_json(str(plans_file(pre, arch)))
        for c in configurations:
            conf = plans["configurations"].get(c)
            if conf is None or "architecture" not in conf:
                continue
            kw = conf["architecture"]["arch_kwargs"]
            rows.append((arch, c, "x".join(f"{s:.3g}" for s in conf["spacing"]),
                         "x".join(str(p) for p in conf["patch_size"]),
                         str(kw.get("n_stages", len(kw.get("strides", [])))), str(conf["batch_size"]),
                         conf["architecture"]["network_class_name"].rsplit(".", 1)[-1]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"Plans for {dataset_name} (GPU memory target {gpu_memory_gb:g} GB)"]
    for i, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
