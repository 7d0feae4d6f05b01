"""Per-architecture optimizers: preset -> plans -> trainer, and the planner's budget counts them."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from umamba_seg.architectures import registry
from umamba_seg.planning.ssm_planner import TopologyKnobs, cnn_architecture, search_configuration
from umamba_seg.training.optimizer_recipe import RECIPE_KEY, OptimizerRecipe
from umamba_seg.training.trainer import umambaTrainer


def _block(arch: str, patch=(64, 80)) -> dict:
    patch, cnn, _ = cnn_architecture((1.0, 1.0), list(patch), TopologyKnobs())
    spec = registry.get(arch)
    return spec.architecture_block(cnn, spec.adjust_patch(patch) if spec.adjust_patch else patch)


def test_settings_are_validated():
    assert OptimizerRecipe.from_settings(None) == OptimizerRecipe("sgd", 1e-2, 3e-5)  # nnU-Net's
    assert OptimizerRecipe.from_settings({"name": "AdamW", "lr": "1e-3"}).name == "adamw"
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw, got 'lamb'"):
        OptimizerRecipe.from_settings({"name": "lamb"})
    with pytest.raises(ValueError, match=r"unknown optimizer settings \['momentum'\]"):
        OptimizerRecipe.from_settings({"name": "sgd", "momentum": 0.9})
    with pytest.raises(ValueError, match="lr > 0"):
        OptimizerRecipe("adamw", 0.0, 0.01)


def test_plans_state_vmunet_adamw_and_nothing_for_sgd_networks():
    block = _block("vmunet")
    assert block[RECIPE_KEY] == {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2}
    assert _block("vmunet_nossm")[RECIPE_KEY] == block[RECIPE_KEY]  # the ablation trains the same way
    for arch in ("cnn", "umamba_bot", "segmamba", "xlstm_enc"):
        assert RECIPE_KEY not in _block(arch), arch
    # still a valid nnunetv2 architecture block
    cm = ConfigurationManager({"architecture": block})
    assert cm.network_arch_class_name == "umamba_seg.architectures.vmunet.VMUNet"


def _bare_trainer(block: dict) -> umambaTrainer:
    """A trainer with only what ``configure_optimizers`` reads (no dataset needed)."""
    t = umambaTrainer.__new__(umambaTrainer)
    t.configuration_manager = ConfigurationManager({"architecture": block})
    t.network = torch.nn.Linear(3, 2)
    t.initial_lr, t.weight_decay, t.num_epochs = 1e-2, 3e-5, 10
    t.log_lines = []
    t.print_to_log_file = lambda *a, **k: t.log_lines.append(" ".join(map(str, a)))
    return t


def test_trainer_builds_the_planned_optimizer():
    t = _bare_trainer(_block("vmunet"))
    opt, sched = t.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-2
    assert t.initial_lr == 1e-3 and "adamw" in t.log_lines[0]
    sched.step(5)  # nnU-Net's poly decay from the recipe's lr
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 5 / 10) ** 0.9)

    t = _bare_trainer(_block("umamba_bot"))
    opt, _ = t.configure_optimizers()
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.99
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["lr"] == 1e-2 and not t.log_lines

    # an SGD recipe keeps nnU-Net's SGD (Nesterov, momentum 0.99) at the recipe's lr and weight decay
    t = _bare_trainer({**_block("umamba_bot"), RECIPE_KEY: {"name": "sgd", "lr": 5e-3, "weight_decay": 1e-4}})
    opt, _ = t.configure_optimizers()
    group = opt.param_groups[0]
    assert type(opt) is torch.optim.SGD and group["momentum"] == 0.99 and group["nesterov"]
    assert (group["lr"], group["weight_decay"]) == (5e-3, 1e-4) and "sgd, lr 0.005" in t.log_lines[0]


def test_planner_budget_counts_adamw_state():
    kw = dict(spacing=(1.0, 1.0), median_shape=(256, 256), n_voxels_dataset=256 * 256 * 100, input_channels=3,
              num_classes=2, gpu_memory_gb=8.0)
    adamw = search_configuration("vmunet", **kw)
    sgd = search_configuration("vmunet", optimizer="sgd", **kw)
    assert adamw.budget.optimizer == "adamw" and sgd.budget.optimizer == "sgd"
    n = adamw.estimate.n_parameters
    assert adamw.budget.optimizer_bytes == 8 * n and sgd.budget.optimizer_bytes == 4 * n
    assert search_configuration("umamba_bot", **kw).budget.optimizer == "sgd"
