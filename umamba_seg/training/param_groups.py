"""AdamW parameter groups: parameters marked ``_no_weight_decay`` are not decayed.

Mamba marks its ``A_log`` and ``D`` this way (``p._no_weight_decay = True``), VMamba its
``A_logs`` and ``Ds``; every mixer of ours marks its own (``nn.ssm_branch``: A_log, D of each
branch, so SegMamba's three directions too; ``nn.cross_scan``: A_logs, Ds of every direction).
Vision-LSTM marks only a positional embedding that xLSTM-UNet's ViL layer does not have, so
our ViL marks nothing. One function for every AdamW recipe.
"""

from __future__ import annotations

from torch import nn

NO_DECAY_FLAG = "_no_weight_decay"


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: marked parameters with weight decay 0, the others with ``weight_decay``
    (a group with no parameters is left out)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if getattr(p, NO_DECAY_FLAG, False) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
