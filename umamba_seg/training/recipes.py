"""Training recipes: what each trainer class trains with, and where each value comes from.

Two recipes per network (``train --recipe``):

* ``nnunet`` (the default): nnU-Net's own trainer for every network, CNN included: SGD (lr 1e-2,
  Nesterov momentum 0.99, weight decay 3e-5), poly decay per epoch, 1000 epochs x 250
  iterations, the plan's batch, Dice + cross-entropy with deep supervision. One recipe makes the
  networks comparable, and it is what stock ``nnUNetv2_train`` does with our plans.
* ``authors``: each network as its authors trained it, every value traced to a line of their
  repository (``Recipe.sources``). U-Mamba's is nnU-Net's unchanged (its trainer is nnU-Net's);
  the CNN's authors are nnU-Net's, so its ``authors`` recipe is ``nnunet``.

Each recipe is a trainer class named after it (:mod:`umamba_seg.training.recipe_trainers`), so the
recipe shows in the results folder ``<Trainer>__<plans>__<config>`` and stock nnU-Net finds the
same class (:mod:`umamba_seg.training.nnunet_trainers`). Nothing of a recipe lives in the plans.
``_nossm`` ablations train with their parent's recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from umamba_seg.errors import UserInputError

RECIPES: tuple[str, ...] = ("nnunet", "authors")
DEFAULT_RECIPE = "nnunet"
NNUNET_TRAINER = "umambaTrainer"  # every existing results folder is named after it

_UMAMBA = "bowang-lab/U-Mamba:umamba/nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py"
_XLSTM = "tianrun-chen/xLSTM-UNet-PyTorch:UxLSTM/nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py"
_XLSTM_BOT_SH = "tianrun-chen/xLSTM-UNet-PyTorch:train_bot.sh"
_XLSTM_ENC_SH = "tianrun-chen/xLSTM-UNet-PyTorch:train_enc.sh"
_SEGMAMBA = "ge-xing/SegMamba:3_train.py"
_SEGMAMBA_TRAINER = "ge-xing/SegMamba:light_training/trainer.py"
_VMUNET_ISIC = "JCruan519/VM-UNet:configs/config_setting.py"
_VMUNET_SYNAPSE = "JCruan519/VM-UNet:configs/config_setting_synapse.py"
_VMUNET_ENGINE = "JCruan519/VM-UNet:engine.py"
_NNUNET = "MIC-DKFZ/nnUNet:nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py (nnunetv2 2.8.1)"


def _frozen(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Recipe:
    """One training recipe. ``batch_size_2d``/``_3d``: None = the plan's batch.

    ``iterations_per_epoch`` None: one pass over the fold's training cases (VM-UNet's epochs).
    ``schedule``: "poly" (``schedule_params``: exponent) or "cosine" (``t_max_binary``,
    ``t_max_multiclass``, ``eta_min``; stepped per epoch). ``loss``: "dice_ce" (nnU-Net's),
    "ce" (cross-entropy only) or "bce_dice" (VM-UNet's: CE + Dice 1:1, see :mod:`.losses`).
    ``plan_source``: the plans the recipe trains on ("cnn": nnU-Net's CNN plan, "ssm": ours).
    """

    name: str
    trainer: str
    optimizer: str = "sgd"
    lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99  # SGD's, Nesterov; AdamW's betas are PyTorch's (0.9, 0.999), eps 1e-8
    schedule: str = "poly"
    schedule_params: Mapping = field(default_factory=lambda: _frozen({"exponent": 0.9}))
    epochs: int = 1000
    iterations_per_epoch: int | None = 250
    batch_size_2d: int | None = None
    batch_size_3d: int | None = None
    loss: str = "dice_ce"
    deep_supervision: bool = True
    plan_source: str = "ssm"
    sources: Mapping = field(default_factory=_frozen)

    def __post_init__(self) -> None:
        if self.loss != "dice_ce" and self.deep_supervision:
            raise ValueError(f"recipe {self.trainer}: loss {self.loss!r} is built without deep supervision")

    def batch_size(self, spatial_dims: int) -> int | None:
        """The recipe's batch for a 2D or 3D configuration (None: the plan's)."""
        return self.batch_size_2d if spatial_dims == 2 else self.batch_size_3d


_NNUNET_SOURCES = _frozen(
    {
        "optimizer": f"{_NNUNET}: configure_optimizers (SGD, momentum 0.99, nesterov)",
        "lr": f"{_NNUNET}: self.initial_lr = 1e-2",
        "weight_decay": f"{_NNUNET}: self.weight_decay = 3e-5",
        "schedule": f"{_NNUNET}: PolyLRScheduler, stepped in on_train_epoch_start",
        "epochs": f"{_NNUNET}: self.num_epochs = 1000",
        "iterations_per_epoch": f"{_NNUNET}: self.num_iterations_per_epoch = 250",
        "loss": f"{_NNUNET}: _build_loss (DC_and_CE_loss)",
        "deep_supervision": f"{_NNUNET}: self.enable_deep_supervision = True",
    }
)

NNUNET = Recipe(name="nnunet", trainer=NNUNET_TRAINER, sources=_NNUNET_SOURCES)

# an authors' recipe is nnU-Net's but for the values it names (each traced in its own ``sources``)
_AUTHORS_BASE = replace(NNUNET, name="authors", sources=_frozen())
# SegMamba and VM-UNet end in one output, so their authors train without deep supervision
_ONE_OUTPUT_AUTHORS = replace(_AUTHORS_BASE, deep_supervision=False)

UMAMBA_AUTHORS = replace(
    _AUTHORS_BASE,
    trainer="umambaTrainer_UMambaAuthors",
    plan_source="cnn",
    sources=_frozen(
        {
            "optimizer": f"{_UMAMBA}:471-472 (SGD, momentum 0.99, nesterov)",
            "lr": f"{_UMAMBA}:142",
            "weight_decay": f"{_UMAMBA}:143",
            "schedule": f"{_UMAMBA}:473 (PolyLRScheduler)",
            "epochs": f"{_UMAMBA}:147",
            "iterations_per_epoch": f"{_UMAMBA}:145",
            "loss": f"{_UMAMBA}: _build_loss (nnU-Net's DC_and_CE_loss)",
            "deep_supervision": f"{_UMAMBA}:149",
            "plan_source": "bowang-lab/U-Mamba:README.md:39,47 (nnUNetv2_plan_and_preprocess, then -tr "
            "nnUNetTrainerUMambaBot on its nnUNetPlans)",
        }
    ),
)


def _xlstm(trainer: str, batch_2d: int, script: str) -> Recipe:
    return replace(
        _AUTHORS_BASE,
        trainer=trainer,
        lr=5e-3,
        epochs=4000,
        batch_size_2d=batch_2d,
        plan_source="cnn",
        sources=_frozen(
            {
                "optimizer": f"{_XLSTM}:475-476 (SGD, momentum 0.99, nesterov; its literal lr 0.00611 is replaced by "
                "the scheduler's initial_lr at the first epoch)",
                "lr": f"{script}:2 (-lr 5e-3); {_XLSTM}:142",
                "weight_decay": f"{_XLSTM}:144",
                "schedule": f"{_XLSTM}:477 (PolyLRScheduler)",
                "epochs": f"{_XLSTM}:148",
                "iterations_per_epoch": f"{_XLSTM}:146",
                "batch_size_2d": f"{script} (-bs {batch_2d}); {_XLSTM}:310",
                "loss": f"{_XLSTM}: _build_loss",
                "deep_supervision": f"{_XLSTM}:150",
                "plan_source": f"{script} (nnUNetv2_train's default plans, nnUNetPlans)",
            }
        ),
    )


XLSTM_BOT_AUTHORS = _xlstm("umambaTrainer_xLSTMUNetBotAuthors", 6, _XLSTM_BOT_SH)
XLSTM_ENC_AUTHORS = _xlstm("umambaTrainer_xLSTMUNetEncAuthors", 1, _XLSTM_ENC_SH)

SEGMAMBA_AUTHORS = replace(
    _ONE_OUTPUT_AUTHORS,
    trainer="umambaTrainer_SegMambaAuthors",
    batch_size_3d=2,
    loss="ce",
    sources=_frozen(
        {
            "optimizer": f"{_SEGMAMBA}:51-52 (SGD, momentum 0.99, nesterov)",
            "lr": f"{_SEGMAMBA}:51",
            "weight_decay": f"{_SEGMAMBA}:51",
            "schedule": f"{_SEGMAMBA}:54 (poly); {_SEGMAMBA_TRAINER}:403,477 (stepped per iteration; here per epoch, "
            "as nnU-Net)",
            "epochs": f"{_SEGMAMBA}:22",
            "iterations_per_epoch": f"{_SEGMAMBA_TRAINER}:58 (num_step_per_epoch = 250)",
            "batch_size_3d": f"{_SEGMAMBA}:23",
            "loss": f"{_SEGMAMBA}:48,55,62 (nn.CrossEntropyLoss only)",
            "deep_supervision": "ge-xing/SegMamba:model_segmamba/segmamba.py:343 (one output)",
            "grad_clip": f"{_SEGMAMBA_TRAINER}:464,469 (clip_grad_norm_ 12, as nnU-Net's train_step)",
        }
    ),
)

VMUNET_AUTHORS = replace(
    _ONE_OUTPUT_AUTHORS,
    trainer="umambaTrainer_VMUNetAuthors",
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-2,
    schedule="cosine",
    schedule_params=_frozen({"t_max_binary": 50, "t_max_multiclass": 100, "eta_min": 1e-5}),
    epochs=300,
    iterations_per_epoch=None,
    batch_size_2d=32,
    loss="bce_dice",
    sources=_frozen(
        {
            "optimizer": f"{_VMUNET_ISIC}:72,90-94 (AdamW, betas (0.9, 0.999), eps 1e-8); {_VMUNET_SYNAPSE}:59",
            "lr": f"{_VMUNET_ISIC}:91; {_VMUNET_SYNAPSE}:78",
            "weight_decay": f"{_VMUNET_ISIC}:94; {_VMUNET_SYNAPSE}:81",
            "schedule": f"{_VMUNET_ISIC}:125,138-139 (CosineAnnealingLR T_max 50, eta_min 1e-5); "
            f"{_VMUNET_SYNAPSE}:112,125-126 (T_max 100); {_VMUNET_ENGINE}:49 (stepped per epoch)",
            "epochs": f"{_VMUNET_ISIC}:46; {_VMUNET_SYNAPSE}:50",
            "iterations_per_epoch": f"{_VMUNET_ENGINE} (one pass over the train loader)",
            "batch_size_2d": f"{_VMUNET_ISIC}:45; {_VMUNET_SYNAPSE}:49",
            "loss": f"{_VMUNET_ISIC}:30 (BceDiceLoss(wb=1, wd=1)); {_VMUNET_SYNAPSE}:36-37 (CeDiceLoss, [1, 1])",
            "deep_supervision": "JCruan519/VM-UNet:models/vmunet/vmunet.py:27-32 (one output)",
            "no_weight_decay": "JCruan519/VM-UNet:models/vmunet/vmamba.py:363,375 mark A_logs and Ds; "
            "utils.py get_optimizer passes model.parameters(), so their run decays them",
        }
    ),
)

# architecture family (``ArchSpec.family``, plus the xLSTM variant) -> its authors' recipe
_AUTHORS: Mapping[str, Recipe] = _frozen(
    {
        "cnn": NNUNET,
        "umamba": UMAMBA_AUTHORS,
        "xlstm_bot": XLSTM_BOT_AUTHORS,
        "xlstm_enc": XLSTM_ENC_AUTHORS,
        "segmamba": SEGMAMBA_AUTHORS,
        "vmunet": VMUNET_AUTHORS,
    }
)
ALL_RECIPES: tuple[Recipe, ...] = (
    NNUNET,
    UMAMBA_AUTHORS,
    XLSTM_BOT_AUTHORS,
    XLSTM_ENC_AUTHORS,
    SEGMAMBA_AUTHORS,
    VMUNET_AUTHORS,
)


def check_recipe(recipe: str) -> str:
    """``recipe`` if it is one of :data:`RECIPES`; a one-line error otherwise."""
    if recipe not in RECIPES:
        raise UserInputError(f"unknown recipe '{recipe}'", "--recipe", f"choose one of: {', '.join(RECIPES)}")
    return recipe


def _authors_key(arch: str) -> str:
    from umamba_seg.architectures import registry

    spec = registry.get(arch)
    if spec.family == "xlstm":
        return "xlstm_enc" if arch.removesuffix("_nossm").endswith("_enc") else "xlstm_bot"
    return spec.family


def recipe_for(arch: str, recipe: str = DEFAULT_RECIPE) -> Recipe:
    """The :class:`Recipe` ``arch`` trains with under ``recipe`` ("nnunet" or "authors")."""
    if check_recipe(recipe) == "nnunet":
        return NNUNET
    key = _authors_key(arch)
    if key not in _AUTHORS:
        raise UserInputError(
            f"no authors' recipe for architecture '{arch}'", "--recipe", "train it with --recipe nnunet"
        )
    return _AUTHORS[key]


def trainer_name(arch: str, recipe: str = DEFAULT_RECIPE) -> str:
    """The trainer class (and results-folder prefix) of ``arch`` under ``recipe``."""
    return recipe_for(arch, recipe).trainer


def by_trainer(name: str) -> Recipe | None:
    """The recipe a trainer class name stands for (None: not one of ours)."""
    return next((r for r in ALL_RECIPES if r.trainer == name), None)
