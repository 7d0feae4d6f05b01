"""The SSM-aware planner's walk over patches is nnunetv2's: same knobs, same patches, same CNN blocks.

nnunetv2 keeps the walk inline in ``ExperimentPlanner.get_plans_for_configuration`` (with its
own memory proxy), so :mod:`umamba_seg.planning.ssm_planner` mirrors it; this pins the mirror
to the installed nnunetv2.
"""

from __future__ import annotations

import json

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)

from umamba_seg.planning.ssm_planner import TopologyKnobs, candidate_path
from umamba_seg.workspace import Workspace


def _plain(obj):
    """JSON round trip: tuples and numpy numbers as a plans file holds them."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else o.tolist()))


def test_nnunets_own_plan_lies_on_the_candidate_path(raw_2d_dataset, workdir_factory, monkeypatch):
    workdir = workdir_factory(raw_2d_dataset)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, "")  # restored after the test; activate() sets them
    Workspace.from_workdir(workdir).activate()
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # nnunetv2's memory proxy sets torch threads from it
    # the planner reads a fingerprint; of it, planning one configuration uses only this value
    (workdir / "preprocessed" / raw_2d_dataset.name).mkdir(parents=True)
    (workdir / "preprocessed" / raw_2d_dataset.name / "dataset_fingerprint.json").write_text(
        json.dumps({"median_relative_size_after_cropping": 1.0})
    )
    planner = ExperimentPlanner(raw_2d_dataset.name, gpu_memory_target_in_gb=8)
    knobs = TopologyKnobs()
    unet = planner.UNet_class
    assert knobs == TopologyKnobs(
        planner.UNet_base_num_features,
        planner.UNet_max_features_2d,
        planner.UNet_max_features_3d,
        planner.UNet_featuremap_min_edge_length,
        tuple(planner.UNet_blocks_per_stage_encoder),
        tuple(planner.UNet_blocks_per_stage_decoder),
        f"{unet.__module__}.{unet.__name__}",
        planner.UNet_min_batch_size,
        planner.max_dataset_covered,
    )
    # shapes large enough that nnunetv2 shrinks its patch; anisotropic 3D and 2D
    for spacing, median in (((3.0, 0.8, 0.8), (60, 320, 320)), ((1.0, 1.0), (1800, 1600))):
        plan = planner.get_plans_for_configuration(spacing, median, "x", float(np.prod(median)) * 50, {})
        path = [(_plain(p), _plain(b)) for p, b in candidate_path(spacing, median, knobs)]
        assert (_plain(plan["patch_size"]), _plain(plan["architecture"])) in path, (spacing, plan["patch_size"])
        assert _plain(plan["patch_size"]) != path[0][0], "nnunetv2 did not shrink: the check proves little"
