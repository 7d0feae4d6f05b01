"""Plans for every architecture, derived from the CNN's plans.

Each configuration keeps the CNN's spacing, normalisation and ``data_identifier`` (so the
preprocessed data is shared); the ``architecture`` block is replaced by the registry entry's
and, where a network accepts only some patch sizes, the patch is moved to the nearest one it
accepts. The result is a valid nnunetv2 plans file.
"""

from __future__ import annotations

import copy
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.architectures import registry
from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import CNN_ARCH, plans_identifier


def plans_file(preprocessed_dataset: Path, arch: str) -> Path:
    return preprocessed_dataset / f"{plans_identifier(arch)}.json"


def derive_arch_plans(cnn_plans: dict, arch: str) -> dict:
    """The plans dict for ``arch`` from the CNN's plans dict."""
    spec = registry.get(arch)
    plans = copy.deepcopy(cnn_plans)
    plans["plans_name"] = plans_identifier(arch)
    plans["umamba_arch"] = arch
    for name, conf in plans["configurations"].items():
        if "architecture" not in conf:  # e.g. 3d_cascade_fullres inherits it
            continue
        patch = list(conf["patch_size"])
        if spec.adjust_patch is not None:
            patch = [int(p) for p in spec.adjust_patch(patch)]
            conf["patch_size"] = patch
        conf["architecture"] = spec.architecture_block(conf["architecture"], patch)
    return plans


def write_arch_plans(preprocessed_dataset: Path, arch: str) -> Path:
    """Write ``umambaPlans_<arch>.json`` from the stored CNN plans; returns its path."""
    cnn_file = plans_file(preprocessed_dataset, CNN_ARCH)
    if not cnn_file.is_file():
        raise UserInputError(
            "no CNN plans to derive from", cnn_file, "run `umamba-seg plan-and-preprocess -d <ID>` first"
        )
    out = plans_file(preprocessed_dataset, arch)
    if arch == CNN_ARCH:
        return out
    write_json_atomic(derive_arch_plans(load_json(str(cnn_file)), arch), out)
    return out
