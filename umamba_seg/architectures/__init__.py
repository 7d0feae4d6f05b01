"""Whole networks, constructible from nnunetv2 plans; see :mod:`.registry`.

:func:`build_from_cnn_plan` builds any registered network from an nnU-Net v2 CNN plan.
"""

from umamba_seg.architectures.from_cnn_plan import build_from_cnn_plan

__all__ = ["build_from_cnn_plan"]
