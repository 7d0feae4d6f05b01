"""Plans that give an architecture exactly the CNN's plan: the benchmark's fairness rule.

``umambaBenchPlans_<arch>.json`` is the CNN's plans (``umambaPlans_cnn.json``) with, per
configuration, only the ``architecture`` block swapped (:meth:`ArchSpec.architecture_block`):
spacing, normalisation, data identifier (so the preprocessed data), batch size and patch stay
the CNN's. A network that does not accept the CNN's patch (VM-UNet's patch embedding and
merges, SegMamba's stem and halvings) gets the nearest patch it accepts
(:attr:`ArchSpec.adjust_patch`), and the change is noted in the plans and the table.

A plans name of its own keeps the user's ``umambaPlans_<arch>.json`` (the SSM-aware planner's
own patch and batch) untouched; results land in ``<Trainer>__umambaBenchPlans_<arch>__<config>``,
which ``find-best`` (it matches ``umambaPlans_``) never mistakes for a user's model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.architectures import registry
from umamba_seg.architectures.registry import ArchSpec
from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.planning.arch_plans import plans_file
from umamba_seg.planning.naming import CNN_ARCH

BENCH_PLANS_PREFIX = "umambaBenchPlans"
NOSSM_SUFFIX = "_nossm"
NOTE_KEY = "umamba_benchmark_note"


def bench_plans_identifier(arch: str) -> str:
    """``umambaBenchPlans_<arch>``: the benchmark's plans file name without ``.json``."""
    return f"{BENCH_PLANS_PREFIX}_{arch}"


def benchmark_archs(archs: Sequence[str] | None = None) -> list[str]:
    """What a benchmark of ``archs`` runs, in registry order (CNN first, ablation after its
    parent): the CNN, each requested architecture and its ``_nossm`` ablation (an ablation
    brings its parent). ``None``: every registered architecture."""
    names = registry.available()
    requested = list(archs) if archs else names
    for a in requested:
        registry.get(a)  # unknown names: one clear error
    chosen = {CNN_ARCH}
    for a in requested:
        base = a.removesuffix(NOSSM_SUFFIX)
        chosen.update(n for n in (a, base, base + NOSSM_SUFFIX) if n in names)
    return [n for n in names if n in chosen]


def _fmt_patch(patch: Sequence[int]) -> str:
    return "x".join(str(int(p)) for p in patch)


def same_plan_configuration(cnn_configuration: dict, spec: ArchSpec) -> tuple[dict, str]:
    """One configuration of the CNN's plans with ``spec``'s network; returns it and a note
    (empty unless the patch had to move to one the network accepts)."""
    conf = copy.deepcopy(cnn_configuration)
    conf.pop("umamba_memory", None)  # the SSM planner's record of another patch/batch
    conf.pop(NOTE_KEY, None)
    patch = [int(p) for p in cnn_configuration["patch_size"]]
    accepted = [int(p) for p in spec.adjust_patch(patch)] if spec.adjust_patch is not None else patch
    conf["patch_size"] = accepted
    conf["architecture"] = spec.architecture_block(cnn_configuration["architecture"], accepted)
    note = "" if accepted == patch else (f"patch {_fmt_patch(patch)} -> {_fmt_patch(accepted)}, "
                                         f"the nearest {spec.name} accepts")
    if note:
        conf[NOTE_KEY] = note
    return conf, note


@dataclass(frozen=True)
class SamePlan:
    """The benchmark's plans for one architecture and, per configuration, the patch note."""

    arch: str
    plans: dict
    notes: dict[str, str]

    @property
    def plans_name(self) -> str:
        return self.plans["plans_name"]


def same_plan_plans(cnn_plans: dict, arch: str) -> SamePlan:
    """``arch`` on the CNN's plan: every configuration with an ``architecture`` block gets
    ``arch``'s block (the CNN keeps its own); everything else is the CNN's."""
    spec = registry.get(arch)
    plans = copy.deepcopy(cnn_plans)
    plans["plans_name"] = bench_plans_identifier(arch)
    plans["umamba_arch"] = arch
    plans["umamba_same_plan_as"] = cnn_plans.get("plans_name")
    notes: dict[str, str] = {}
    for name, conf in cnn_plans["configurations"].items():
        if "architecture" not in conf:  # e.g. 3d_cascade_fullres inherits 3d_lowres'
            continue
        if arch == CNN_ARCH:
            notes[name] = ""
            continue
        plans["configurations"][name], notes[name] = same_plan_configuration(conf, spec)
    return SamePlan(arch, plans, notes)


def write_same_plans(preprocessed_dataset: Path, arch: str) -> SamePlan:
    """Derive ``umambaBenchPlans_<arch>.json`` from the stored CNN plans and write it (atomically)."""
    cnn_file = plans_file(preprocessed_dataset, CNN_ARCH)
    if not cnn_file.is_file():
        raise UserInputError("no CNN plans to benchmark on", cnn_file,
                             "run `umamba-seg plan-and-preprocess -d <ID> -a cnn` first")
    same = same_plan_plans(load_json(str(cnn_file)), arch)
    write_json_atomic(same.plans, preprocessed_dataset / f"{same.plans_name}.json")
    return same
