"""``--plan-source cnn``: an architecture on nnU-Net's CNN plan, only the network swapped.

U-Mamba and xLSTM-UNet were published on the plan nnU-Net makes for its CNN, and the
benchmark compares every network on that plan. Per configuration of the CNN's plans
(``umambaPlans_cnn.json``) everything is kept (spacing, normalisation, ``data_identifier`` and
so the preprocessed data, batch size, patch size and the topology the registry derives the
network from) and only the ``architecture`` block is replaced by the registry's block for the
network (:meth:`ArchSpec.architecture_block`).

The one documented exception: a network that cannot take the CNN's patch (VM-UNet's patch
embedding and merges, SegMamba's stem and halvings; :attr:`ArchSpec.adjust_patch`) gets the
nearest patch it accepts, and the plans say so under :data:`PATCH_NOTE_KEY`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.architectures import registry
from umamba_seg.architectures.registry import ArchSpec
from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import CNN_ARCH, plans_identifier

PATCH_NOTE_KEY = "umamba_patch_note"
SOURCE_KEY = "umamba_plan_source"
SAME_PLAN_AS_KEY = "umamba_same_plan_as"


def _patch_text(patch: Sequence[int]) -> str:
    return "x".join(str(int(p)) for p in patch)


def cnn_source_configuration(cnn_configuration: dict, spec: ArchSpec) -> tuple[dict, str]:
    """One configuration of the CNN's plans with ``spec``'s network; returns it and the patch
    note (empty unless the patch moved to the nearest one the network accepts)."""
    conf = copy.deepcopy(cnn_configuration)
    for key in ("umamba_memory", PATCH_NOTE_KEY):  # records about another patch or network
        conf.pop(key, None)
    cnn_patch = [int(p) for p in cnn_configuration["patch_size"]]
    patch = cnn_patch if spec.adjust_patch is None else [int(p) for p in spec.adjust_patch(cnn_patch)]
    conf["patch_size"] = patch
    conf["architecture"] = spec.architecture_block(cnn_configuration["architecture"], patch)
    if patch == cnn_patch:
        return conf, ""
    note = f"patch {_patch_text(cnn_patch)} -> {_patch_text(patch)}, the nearest {spec.name} accepts"
    conf[PATCH_NOTE_KEY] = note
    return conf, note


@dataclass(frozen=True)
class CNNSourcePlans:
    """An architecture's plans on the CNN's plan and, per configuration, its patch note."""

    arch: str
    plans: dict
    notes: dict[str, str]

    @property
    def plans_name(self) -> str:
        return self.plans["plans_name"]


def cnn_source_plans(
    cnn_plans: dict, arch: str, plans_name: str | None = None, preset: str = "default"
) -> CNNSourcePlans:
    """``arch`` (its family's preset at size ``preset``) on the CNN's plans dict; named
    ``plans_name`` (default ``umambaCNNPlans_<arch>``; the CNN keeps ``umambaPlans_cnn`` and its
    own blocks). Configurations without an ``architecture`` block (a cascade inheriting
    3d_lowres') are left as they are."""
    spec = registry.get(arch).at_size(preset)
    plans = copy.deepcopy(cnn_plans)
    plans["plans_name"] = plans_name or plans_identifier(arch, "cnn")
    plans["umamba_arch"] = arch
    plans[SOURCE_KEY] = "cnn"
    plans[SAME_PLAN_AS_KEY] = cnn_plans.get("plans_name")
    notes: dict[str, str] = {}
    for name, conf in cnn_plans["configurations"].items():
        if "architecture" not in conf:
            continue
        if arch == CNN_ARCH:
            notes[name] = ""
        else:
            plans["configurations"][name], notes[name] = cnn_source_configuration(conf, spec)
    return CNNSourcePlans(arch, plans, notes)


def cnn_plans_path(preprocessed_dataset: Path) -> Path:
    return preprocessed_dataset / f"{plans_identifier(CNN_ARCH)}.json"


def load_cnn_plans(preprocessed_dataset: Path) -> dict:
    """The stored CNN plans of a dataset; one line saying how to make them if missing."""
    cnn_file = cnn_plans_path(preprocessed_dataset)
    if not cnn_file.is_file():
        raise UserInputError(
            "no CNN plans to derive from", cnn_file, "run `umamba-seg plan-and-preprocess -d <ID>` first"
        )
    return load_json(str(cnn_file))


def write_cnn_source_plans(
    preprocessed_dataset: Path, arch: str, plans_name: str | None = None, preset: str = "default"
) -> CNNSourcePlans:
    """Derive ``arch``'s plans from the stored CNN plans and write them (atomically) as
    ``<plans_name>.json`` next to them. The CNN's own plans are never rewritten."""
    plans = cnn_source_plans(load_cnn_plans(preprocessed_dataset), arch, plans_name, preset)
    out = preprocessed_dataset / f"{plans.plans_name}.json"
    if out != cnn_plans_path(preprocessed_dataset):
        write_json_atomic(plans.plans, out)
    return plans
