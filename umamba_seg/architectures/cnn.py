"""The nnU-Net CNN baseline (PlainConvUNet), exactly as nnunetv2's planner plans it."""

from __future__ import annotations

from collections.abc import Sequence

from umamba_seg.architectures.registry import ArchSpec, register


def _same_as_cnn(cnn_kwargs: dict, patch_size: Sequence[int]) -> dict:
    return cnn_kwargs


CNN = register(
    ArchSpec(
        name="cnn",
        network_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
        build_kwargs=_same_as_cnn,
        family="cnn",
        description="nnU-Net PlainConvUNet baseline",
        has_ssm=False,
    )
)
