"""Plans for every architecture, derived from the CNN's plans by either plans source.

``ssm`` (default): the SSM-aware planner. Each configuration keeps the CNN's spacing,
normalisation and ``data_identifier`` (so the preprocessed data is shared); patch, topology
and batch are searched for the architecture with its measured memory model
(:mod:`umamba_seg.planning.ssm_planner`).
``cnn``: the CNN's plan unchanged with the network swapped (:mod:`umamba_seg.planning.cnn_source`).
The result is a valid nnunetv2 plans file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError, require_all_in
from umamba_seg.planning.naming import CNN_ARCH, DEFAULT_PLAN_SOURCE, check_plan_source, plans_identifier


def plans_file(preprocessed_dataset: Path, arch: str, plan_source: str = DEFAULT_PLAN_SOURCE) -> Path:
    return preprocessed_dataset / f"{plans_identifier(arch, plan_source)}.json"


def require_configuration(
    configuration: str, planned: Sequence[str], path: Path, choices: Sequence[str] | None = None
) -> None:
    """A one-line error naming ``path`` unless ``configuration`` is one of ``planned``; the fix lists
    ``choices`` (default: every planned configuration)."""
    require_all_in(
        [configuration],
        planned,
        lambda _: f"configuration '{configuration}' is not in the plans",
        path,
        f"choose one of {', '.join(planned if choices is None else choices)}",
    )


def load_plans_with(path: Path, configuration: str) -> dict:
    """The plans dict at ``path``, which must hold ``configuration`` (:func:`require_configuration`)."""
    plans = load_json(str(path))
    require_configuration(configuration, PlansManager(plans).available_configurations, path)
    return plans


def derive_arch_plans(
    cnn_plans: dict, arch: str, dataset_json: dict, gpu_memory_gb: float = 8.0, preset: str = "default"
) -> dict:
    """The plans dict for ``arch`` from the CNN's plans dict and the dataset's ``dataset.json``."""
    from umamba_seg.planning.ssm_planner import plan_arch_from_cnn

    return plan_arch_from_cnn(cnn_plans, arch, dataset_json, gpu_memory_gb, preset=preset)


def write_arch_plans(
    preprocessed_dataset: Path,
    arch: str,
    gpu_memory_gb: float = 8.0,
    plan_source: str = DEFAULT_PLAN_SOURCE,
    preset: str = "default",
) -> Path:
    """Write ``arch``'s plans of ``plan_source`` (``umambaPlans_<arch>.json`` /
    ``umambaCNNPlans_<arch>.json``) from the stored CNN plans, its family's preset at size
    ``preset``; returns its path."""
    if check_plan_source(plan_source) == "cnn":
        from umamba_seg.planning.cnn_source import write_cnn_source_plans

        written = write_cnn_source_plans(preprocessed_dataset, arch, preset=preset)
        return preprocessed_dataset / f"{written.plans_name}.json"
    cnn_file = plans_file(preprocessed_dataset, CNN_ARCH)
    if not cnn_file.is_file():
        raise UserInputError(
            "no CNN plans to derive from", cnn_file, "run `umamba-seg plan-and-preprocess -d <ID>` first"
        )
    out = plans_file(preprocessed_dataset, arch)
    if arch == CNN_ARCH:
        return out
    dataset_json = preprocessed_dataset / "dataset.json"
    if not dataset_json.is_file():
        raise UserInputError(
            "dataset.json missing from the preprocessed dataset",
            dataset_json,
            "rerun `umamba-seg plan-and-preprocess -d <ID>`",
        )
    plans = derive_arch_plans(load_json(str(cnn_file)), arch, load_json(str(dataset_json)), gpu_memory_gb, preset)
    write_json_atomic(plans, out)
    return out
