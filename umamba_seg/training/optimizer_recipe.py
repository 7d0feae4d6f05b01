"""The optimizer a network trains with, as its plans state it.

nnU-Net trains every CNN with SGD (lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5) and a
poly schedule; U-Mamba, SegMamba and xLSTM-UNet were trained that way by their authors too.
VM-UNet was not: its authors (and nnU-Net ports of it) train with AdamW (lr 1e-3, weight decay
1e-2). Its LayerNorm'd, truncated-normal-initialised VSS blocks learn slowly under nnU-Net's
SGD. A family states its optimizer in its preset YAML (``optimizer:``), the registry copies it
into the plans' ``architecture`` block under :data:`RECIPE_KEY`, and the trainer builds it. The
plans stay valid nnunetv2 plans: the stock trainer ignores the key and uses SGD. The schedule
stays nnU-Net's poly decay for every optimizer, so one pipeline drives them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RECIPE_KEY = "umamba_optimizer"
_NAMES = ("sgd", "adamw")


@dataclass(frozen=True)
class OptimizerRecipe:
    """``name`` ("sgd": nnU-Net's Nesterov SGD, momentum 0.99; "adamw"), peak ``lr``, ``weight_decay``."""

    name: str = "sgd"
    lr: float = 1e-2
    weight_decay: float = 3e-5

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise ValueError(f"optimizer must be one of {', '.join(_NAMES)}, got {self.name!r}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"optimizer needs lr > 0 and weight_decay >= 0, got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")

    @classmethod
    def from_settings(cls, settings: dict | None) -> "OptimizerRecipe":
        """From a preset's or a plan's ``{name, lr, weight_decay}`` (missing: nnU-Net's SGD)."""
        if not settings:
            return cls()
        unknown = set(settings) - {"name", "lr", "weight_decay"}
        if unknown:
            raise ValueError(f"unknown optimizer settings {sorted(unknown)} (known: name, lr, weight_decay)")
        return cls(str(settings.get("name", "sgd")).lower(), float(settings.get("lr", 1e-2)),
                   float(settings.get("weight_decay", 3e-5)))

    @classmethod
    def from_architecture(cls, architecture: dict) -> "OptimizerRecipe":
        """The recipe a plans ``architecture`` block states (nnU-Net's SGD if none)."""
        return cls.from_settings(architecture.get(RECIPE_KEY))

    def as_settings(self) -> dict:
        return asdict(self)
