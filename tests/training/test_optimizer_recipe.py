"""The optimizer is the trainer's recipe, not a plans key: plans carry none, old plans that do are
refused, and the planner's memory budget counts the state of the authors' optimizer."""

from __future__ import annotations

import json

import pytest

from umamba_seg.architectures import registry
from umamba_seg.architectures.plans_allowlist import check_plans
from umamba_seg.errors import UserInputError
from umamba_seg.planning.ssm_planner import TopologyKnobs, cnn_architecture, search_configuration


def _block(arch: str, patch=(64, 80)) -> dict:
    patch, cnn, _ = cnn_architecture((1.0, 1.0), list(patch), TopologyKnobs())
    spec = registry.get(arch)
    return spec.architecture_block(cnn, spec.adjust_patch(patch) if spec.adjust_patch else patch)


def test_plans_carry_no_training_setting():
    for arch in ("cnn", "umamba_bot", "segmamba", "xlstm_enc", "vmunet", "vmunet_nossm"):
        assert set(_block(arch)) == {"network_class_name", "arch_kwargs", "_kw_requires_import"}, arch


def test_plans_with_the_retired_optimizer_key_ask_to_plan_again(tmp_path):
    plans_file = tmp_path / "umambaPlans_vmunet.json"
    block = {**_block("vmunet"), "umamba_optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2}}
    plans_file.write_text(json.dumps({"configurations": {"2d": {"architecture": block}}}))
    with pytest.raises(UserInputError) as e:
        check_plans(json.loads(plans_file.read_text()), plans_file)
    line = str(e.value)
    assert "\n" not in line and str(plans_file) in line
    assert "umamba_optimizer" in line and "plan again" in line


def test_planner_budget_counts_the_authors_optimizer_state():
    assert registry.get("vmunet").authors_optimizer == registry.get("vmunet_nossm").authors_optimizer == "adamw"
    assert {registry.get(a).authors_optimizer for a in registry.available() if registry.get(a).family != "vmunet"} == {
        "sgd"
    }
    kw = dict(
        spacing=(1.0, 1.0),
        median_shape=(256, 256),
        n_voxels_dataset=256 * 256 * 100,
        input_channels=3,
        num_classes=2,
        gpu_memory_gb=8.0,
    )
    adamw = search_configuration("vmunet", **kw)
    sgd = search_configuration("vmunet", optimizer="sgd", **kw)
    assert adamw.budget.optimizer == "adamw" and sgd.budget.optimizer == "sgd"
    n = adamw.estimate.n_parameters
    assert adamw.budget.optimizer_bytes == 8 * n and sgd.budget.optimizer_bytes == 4 * n
    assert search_configuration("umamba_bot", **kw).budget.optimizer == "sgd"


def test_the_planners_optimizer_is_the_authors_recipes():
    """The planner (architectures layer) cannot import the recipes (training layer), so each ArchSpec
    states its authors' optimizer; it must be the one the authors' recipe trains with."""
    from umamba_seg.training.recipes import recipe_for

    for arch in registry.available():
        assert registry.get(arch).authors_optimizer == recipe_for(arch, "authors").optimizer, arch
