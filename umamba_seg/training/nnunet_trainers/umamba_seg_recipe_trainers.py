"""Our trainer classes under one module name, for nnunetv2's ``nnUNet_extTrainer`` lookup.

Re-exports, not copies: nnunetv2 gets the very classes ``umamba-seg train`` builds.
"""

from umamba_seg.training.recipe_trainers import (  # noqa: F401 - found by name by nnunetv2
    umambaTrainer,
    umambaTrainer_SegMambaAuthors,
    umambaTrainer_UMambaAuthors,
    umambaTrainer_VMUNetAuthors,
    umambaTrainer_xLSTMUNetBotAuthors,
    umambaTrainer_xLSTMUNetEncAuthors,
)
