"""Any registered network from an nnU-Net v2 CNN plan, in one call.

``build_from_cnn_plan("umamba_bot", plans["configurations"]["3d_fullres"]["architecture"],
patch_size, input_channels, num_classes)`` gives exactly the network that ``train -a
umamba_bot`` trains on that plan: the registry turns the CNN's ``architecture`` block into
the architecture's own (:meth:`ArchSpec.architecture_block`, the same call the planners
and the benchmark make) and nnunetv2's ``get_network_from_plans`` builds it, as the trainer
does. Useful to compare networks on one plan, or to load weights trained elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from umamba_seg.architectures import registry
from umamba_seg.architectures.plans_allowlist import check_architecture
from umamba_seg.errors import UserInputError


def build_from_cnn_plan(
    arch: str,
    cnn_architecture: dict,
    patch_size: Sequence[int],
    input_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
    preset: str = "default",
) -> nn.Module:
    """The ``arch`` network for a CNN plan.

    ``cnn_architecture``: the ``architecture`` block of an nnU-Net v2 plans configuration
    (``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``); ``patch_size``: that
    configuration's patch. ``num_classes`` is the number of segmentation heads (labels, or
    regions for region-based training); ``preset``: the size of the family's preset
    (``plan-and-preprocess --preset``). Raises :class:`UserInputError` for an unknown
    ``arch`` or preset size, a block without ``arch_kwargs``, or a patch the network cannot
    take (VM-UNet and SegMamba accept only some patches; the message names the nearest one
    they accept).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    spec = registry.get(arch).at_size(preset)
    if not isinstance(cnn_architecture, dict) or not isinstance(cnn_architecture.get("arch_kwargs"), dict):
        raise UserInputError(
            "the CNN architecture block has no 'arch_kwargs'",
            "cnn_architecture",
            "pass plans['configurations'][CONFIG]['architecture'] of nnU-Net v2 plans",
        )
    patch = [int(p) for p in patch_size]
    if len(patch) not in (2, 3):
        raise UserInputError(f"patch size {patch} is neither 2D nor 3D", "patch_size", "pass the configuration's patch")
    if spec.adjust_patch is not None:
        accepted = [int(p) for p in spec.adjust_patch(patch)]
        if accepted != patch:
            raise UserInputError(
                f"{arch} does not accept the patch {patch}",
                "patch_size",
                f"use the nearest patch it accepts, {accepted}",
            )
    block = spec.architecture_block(cnn_architecture, patch)
    check_architecture(block, "cnn_architecture")  # nothing the block names is imported unless allow-listed
    return get_network_from_plans(
        block["network_class_name"],
        block["arch_kwargs"],
        block["_kw_requires_import"],
        int(input_channels),
        int(num_classes),
        allow_init=True,
        deep_supervision=deep_supervision,
    )
