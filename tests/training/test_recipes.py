"""Training recipes as trainer classes: per recipe and network the optimizer, its lr and weight-decay
groups, the schedule, the loss, deep supervision, the batch and the plans source; a resumed run's
lr; stock nnunetv2 finding the same classes through ``nnUNet_extTrainer``.

Trainers are built on the session's planned 2D dataset (``trained_2d_workdir``), with each
network's plans derived in memory from the CNN's; nothing is trained here.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from umamba_seg.architectures import registry
from umamba_seg.planning.naming import plans_identifier
from umamba_seg.training import recipes
from umamba_seg.training.fold_run import FoldRun
from umamba_seg.training.param_groups import NO_DECAY_FLAG
from umamba_seg.training.recipe_trainers import RECIPE_TRAINERS, trainer_class
from umamba_seg.training.schedules import EpochCosineAnnealingLR, cosine_lr
from umamba_seg.training.trainer import umambaTrainer

DS = "Dataset903_SynthEndoscopy"
CONFIG = "2d"
ARCHS = ("cnn", "umamba_bot", "xlstm_bot", "xlstm_enc", "segmamba", "vmunet")


@pytest.fixture
def workspace(trained_2d_workdir: Path, tmp_path: Path, monkeypatch) -> Path:
    """A preprocessed dataset folder of our own (plans written here), its data shared read-only."""
    src = trained_2d_workdir / "preprocessed" / DS
    pre = tmp_path / "preprocessed" / DS
    pre.mkdir(parents=True)
    for name in ("dataset.json", "splits_final.json", "dataset_fingerprint.json", "umambaPlans_cnn.json"):
        shutil.copy(src / name, pre / name)
    data_id = json.loads((src / "umambaPlans_cnn.json").read_text())["configurations"][CONFIG]["data_identifier"]
    for shared in (data_id, "gt_segmentations"):
        (pre / shared).symlink_to(src / shared)
    (tmp_path / "raw").symlink_to(trained_2d_workdir / "raw")
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_raw", str(trained_2d_workdir / "raw"))
    return pre


def _plans(pre: Path, arch: str) -> dict:
    """``arch``'s plans derived from the CNN's (same configuration, patch adjusted), written next to them."""
    plans = json.loads((pre / "umambaPlans_cnn.json").read_text())
    conf = plans["configurations"][CONFIG]
    spec = registry.get(arch)
    patch = spec.adjust_patch(conf["patch_size"]) if spec.adjust_patch else list(conf["patch_size"])
    conf["architecture"] = spec.architecture_block(conf["architecture"], patch)
    conf["patch_size"] = patch
    plans["configurations"] = {CONFIG: conf}
    plans["plans_name"] = plans_identifier(arch)
    (pre / f"{plans['plans_name']}.json").write_text(json.dumps(plans))
    return plans


def _trainer(pre: Path, arch: str, recipe: str, dataset_json: dict | None = None, cls=None) -> umambaTrainer:
    plans = copy.deepcopy(_plans(pre, arch))
    plans["continue_training"] = False
    cls = cls or trainer_class(recipes.trainer_name(arch, recipe))
    t = cls(
        plans=plans,
        configuration=CONFIG,
        fold=0,
        dataset_json=dataset_json or json.loads((pre / "dataset.json").read_text()),
        device=torch.device("cpu"),
    )
    t.initialize()
    return t


def _decaying(trainer) -> tuple[set[str], set[str]]:
    """Names of the parameters the optimizer decays, and of those it does not."""
    names = {id(p): n for n, p in trainer.network.named_parameters()}
    decay, keep = set(), set()
    for group in trainer.optimizer.param_groups:
        (decay if group["weight_decay"] > 0 else keep).update(names[id(p)] for p in group["params"])
    return decay, keep


def _lr_at(trainer, epoch: int) -> float:
    trainer.lr_scheduler.step(epoch)  # as nnunetv2's on_train_epoch_start does
    return trainer.optimizer.param_groups[0]["lr"]


def test_recipe_names_and_trainer_names():
    assert recipes.RECIPES == ("nnunet", "authors") and recipes.DEFAULT_RECIPE == "nnunet"
    for arch in registry.available():
        assert recipes.trainer_name(arch, "nnunet") == "umambaTrainer"
        assert recipes.trainer_name(arch, "authors") in {c.__name__ for c in RECIPE_TRAINERS}
    assert recipes.trainer_name("cnn", "authors") == "umambaTrainer"  # nnU-Net is the CNN's authors
    assert recipes.trainer_name("umamba_enc_nossm", "authors") == "umambaTrainer_UMambaAuthors"  # as its parent
    assert recipes.trainer_name("xlstm_enc", "authors") == "umambaTrainer_xLSTMUNetEncAuthors"
    assert recipes.recipe_for("xlstm_bot", "authors").plan_source == "cnn"
    assert recipes.recipe_for("segmamba", "authors").batch_size(3) == 2
    assert recipes.recipe_for("segmamba", "authors").batch_size(2) is None  # the plan's
    for r in recipes.ALL_RECIPES:  # every value of a recipe says where it comes from
        assert {"optimizer", "lr", "weight_decay", "schedule", "epochs", "loss"} <= set(r.sources), r.trainer
        if r is not recipes.NNUNET:  # umambaTrainer is nnU-Net's trainer itself
            assert trainer_class(r.trainer).recipe is r
    with pytest.raises(Exception, match="unknown recipe 'paper'.*choose one of: nnunet, authors"):
        recipes.check_recipe("paper")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_recipe_trainer(workspace, arch, recipe):
    r = recipes.recipe_for(arch, recipe)
    t = _trainer(workspace, arch, recipe)
    assert type(t).__name__ == r.trainer
    assert Path(t.output_folder).parent.name == f"{r.trainer}__{plans_identifier(arch)}__{CONFIG}"
    assert r.plan_source == (
        "cnn" if (recipe, registry.get(arch).family) in {("authors", "umamba"), ("authors", "xlstm")} else "ssm"
    )
    # optimizer, lr, weight decay
    group = t.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(r.lr)
    decay, keep = _decaying(t)
    if r.optimizer == "sgd":
        assert type(t.optimizer) is torch.optim.SGD and group["momentum"] == 0.99 and group["nesterov"]
        assert group["weight_decay"] == r.weight_decay and not keep  # nnU-Net's SGD decays everything
    else:
        assert type(t.optimizer) is torch.optim.AdamW and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
        marked = {n for n, p in t.network.named_parameters() if getattr(p, NO_DECAY_FLAG, False)}
        assert keep == marked and all(n.endswith((".A_logs", ".Ds")) for n in keep)
        assert len(keep) == 2 * sum(1 for m in t.network.modules() if hasattr(m, "A_logs"))  # every VSS block
        assert {g["weight_decay"] for g in t.optimizer.param_groups} == {r.weight_decay, 0.0}
    # schedule at epochs 0, 1 and the last
    last = t.num_epochs - 1
    assert t.num_epochs == r.epochs
    if r.schedule == "poly":
        assert isinstance(t.lr_scheduler, PolyLRScheduler)
        expected = [r.lr * (1 - e / r.epochs) ** 0.9 for e in (0, 1, last)]
    else:
        assert isinstance(t.lr_scheduler, EpochCosineAnnealingLR) and t.cosine_t_max() == 50  # binary dataset
        expected = [cosine_lr(r.lr, e, 50, 1e-5) for e in (0, 1, last)]
    assert [_lr_at(t, e) for e in (0, 1, last)] == pytest.approx(expected)
    # loss and deep supervision
    assert t.enable_deep_supervision is r.deep_supervision
    assert t.network.decoder.deep_supervision is r.deep_supervision
    inner = t.loss.loss if isinstance(t.loss, DeepSupervisionWrapper) else t.loss
    assert isinstance(t.loss, DeepSupervisionWrapper) is r.deep_supervision
    assert type(inner) is {"dice_ce": DC_and_CE_loss, "bce_dice": DC_and_CE_loss, "ce": RobustCrossEntropyLoss}[r.loss]
    if r.loss == "bce_dice":  # binary: Dice on the foreground only, per sample (their BceDiceLoss)
        assert not inner.dc.do_bg and not inner.dc.batch_dice and inner.weight_ce == inner.weight_dice == 1
    # batch: the recipe's, else the plan's
    assert t.batch_size == (r.batch_size(2) or t.configuration_manager.batch_size)
    assert (r.iterations_per_epoch is None) is getattr(t, "_iterations_from_cases", False)


@pytest.mark.parametrize("arch", ["segmamba", "vmunet"])
def test_single_output_losses_run_on_the_network_output(workspace, arch):
    t = _trainer(workspace, arch, "authors")
    x = torch.randn(2, t.num_input_channels, *t.configuration_manager.patch_size)
    target = torch.randint(0, 2, (2, 1, *t.configuration_manager.patch_size)).float()
    out = t.network(x)
    assert torch.is_tensor(out)  # one output, no deep supervision list
    assert torch.isfinite(t.loss(out, target))


def test_vmunet_multiclass_cosine_period_and_dice_with_background(workspace):
    dataset_json = json.loads((workspace / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "instrument": 1, "tissue": 2}
    t = _trainer(workspace, "vmunet", "authors", dataset_json)
    assert t.cosine_t_max() == 100  # their Synapse config
    assert t.loss.dc.do_bg and t.loss.dc.batch_dice


def test_vmunet_iterations_are_one_pass_over_the_training_cases_unless_overridden(workspace):
    t = _trainer(workspace, "vmunet", "authors")
    train_keys, _ = t.do_split()
    assert t.one_pass_iterations() == math.ceil(len(train_keys) / 32)
    t.configure_schedule(epochs=3, iters_per_epoch=5, val_iters=1)  # the CLI's overrides win
    assert not t._iterations_from_cases and (t.num_epochs, t.num_iterations_per_epoch) == (3, 5)
    assert isinstance(t.lr_scheduler, EpochCosineAnnealingLR)


@pytest.mark.parametrize("arch", ["vmunet", "umamba_bot"])
def test_continue_mid_schedule_sets_the_uninterrupted_lr(workspace, arch, tmp_path):
    a = _trainer(workspace, arch, "authors")
    k = 70  # past the first cosine restart (T_max 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated scheduler path
        for epoch in range(k):
            _lr_at(a, epoch)
            a.optimizer.step()
        uninterrupted = _lr_at(a, k)
        b = _trainer(workspace, arch, "authors")
        b.optimizer.load_state_dict(a.optimizer.state_dict())  # what load_checkpoint restores
        resumed = _lr_at(b, k)
    assert resumed == pytest.approx(uninterrupted)
    assert resumed == pytest.approx(cosine_lr(1e-3, k, 50, 1e-5) if arch == "vmunet" else 1e-2 * (1 - k / 1000) ** 0.9)


def test_ddp_trainer_of_a_recipe(workspace):
    from umamba_seg.training.ddp import recipe_ddp_class, umambaTrainerDDP

    assert recipe_ddp_class("umambaTrainer") is umambaTrainerDDP
    cls = recipe_ddp_class("umambaTrainer_VMUNetAuthors")
    assert cls.__name__ == "umambaTrainer_VMUNetAuthors" and cls.__mro__[1] is umambaTrainerDDP
    assert issubclass(cls, trainer_class("umambaTrainer_VMUNetAuthors"))
    t = _trainer(workspace, "vmunet", "authors", cls=cls)  # no process group: a single-process run
    assert type(t.optimizer) is torch.optim.AdamW and not t.enable_deep_supervision and t.batch_size == 32
    assert Path(t.output_folder).parent.name.startswith("umambaTrainer_VMUNetAuthors__")


def test_vil_marks_no_parameter(workspace):
    t = _trainer(workspace, "xlstm_enc", "nnunet")
    vil = [m for m in t.network.modules() if type(m).__name__ == "ViLLayer"]
    assert vil and not any(getattr(p, NO_DECAY_FLAG, False) for m in vil for p in m.parameters())


def test_train_fold_picks_the_recipe_class_its_plans_and_the_cli_schedule(workspace, monkeypatch):
    from umamba_seg.training import run
    from umamba_seg.workspace import Workspace

    seen = []

    def fake_training(self):  # the run itself is not under test here: the trainer that would run is
        self.initialize()
        seen.append(self)
        self.current_epoch = self.num_epochs

    monkeypatch.setattr(umambaTrainer, "run_training", fake_training)
    ws = Workspace.from_workdir(workspace.parents[1])
    assert run.training_plan_source(None, "umamba_bot", "authors") == "cnn"  # as U-Mamba was published
    assert run.training_plan_source("ssm", "umamba_bot", "authors") == "ssm"  # --plan-source wins
    assert run.training_plan_source(None, "vmunet", "authors") == run.training_plan_source() == "ssm"
    out = run.train_fold(
        ws,
        DS,
        FoldRun(
            CONFIG,
            0,
            "umamba_bot",
            epochs=1,
            iters_per_epoch=2,
            val_iters=1,
            device="cpu",
            recipe="authors",
            validate=False,
        ),
    )
    plans = plans_identifier("umamba_bot", "cnn")
    assert out.parent.name == f"umambaTrainer_UMambaAuthors__{plans}__{CONFIG}"
    assert out == run.output_folder(
        ws, DS, "umamba_bot", CONFIG, 0, trainer_name="umambaTrainer_UMambaAuthors", plan_source="cnn"
    )
    (t,) = seen
    assert type(t).__name__ == "umambaTrainer_UMambaAuthors" and t.plans_manager.plans_name == plans
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (1, 2, 1)  # CLI on top
    assert t.enable_deep_supervision and type(t.optimizer) is torch.optim.SGD


@pytest.mark.parametrize("arch,recipe", [("vmunet", "authors"), ("segmamba", "authors"), ("umamba_bot", "nnunet")])
def test_stock_nnunet_finds_the_same_trainer(workspace, monkeypatch, arch, recipe):
    from nnunetv2.run.run_training import get_trainer_from_args

    from umamba_seg.training.nnunet_trainers import FOLDER

    ours = _trainer(workspace, arch, recipe)
    monkeypatch.setenv("nnUNet_extTrainer", str(FOLDER))
    stock = get_trainer_from_args(
        DS, CONFIG, 0, recipes.trainer_name(arch, recipe), plans_identifier(arch), device=torch.device("cpu")
    )
    stock.initialize()
    assert type(stock) is type(ours)  # the very class, not a copy
    assert type(stock.optimizer) is type(ours.optimizer)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in stock.optimizer.param_groups] == [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in ours.optimizer.param_groups
    ]
    assert _decaying(stock) == _decaying(ours)
    assert type(stock.loss) is type(ours.loss) and type(stock.lr_scheduler) is type(ours.lr_scheduler)
    assert stock.enable_deep_supervision is ours.enable_deep_supervision
    assert (stock.batch_size, stock.num_epochs, stock.initial_lr) == (ours.batch_size, ours.num_epochs, ours.initial_lr)
    assert stock.output_folder == ours.output_folder
