"""nnunetv2's default experiment planner, renamed into our plans and data identifiers.

The CNN's plan is the anchor: its target spacing per configuration is shared by every
architecture (so preprocessing happens once per configuration) and the other
architectures' plans start from it.
"""

from __future__ import annotations

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from umamba_seg.atomic import write_json_atomic
from umamba_seg.planning.naming import CNN_ARCH, data_identifier, plans_identifier


class UMambaCNNPlanner(ExperimentPlanner):
    """Plans the nnU-Net PlainConvUNet into ``umambaPlans_cnn.json``."""

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8, **kwargs):
        kwargs.setdefault("plans_name", plans_identifier(CNN_ARCH))
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb=gpu_memory_target_in_gb, **kwargs)

    def generate_data_identifier(self, configuration_name: str) -> str:
        return data_identifier(configuration_name)

    def save_plans(self, plans: dict) -> None:
        """Like nnunetv2 (custom configurations already in the file are kept), but atomic."""
        import os

        from nnunetv2.paths import nnUNet_preprocessed

        recursive_fix_for_json_export(plans)
        plans_file = os.path.join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json")
        if os.path.isfile(plans_file):
            old = load_json(plans_file)["configurations"]
            for c in plans["configurations"]:
                old.pop(c, None)
            plans["configurations"].update(old)
        write_json_atomic(plans, plans_file)
