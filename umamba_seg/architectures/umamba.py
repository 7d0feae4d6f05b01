"""U-Mamba (Ma et al. 2024), Bot and Enc, in 2D and 3D, constructible from nnunetv2 plans.

Both are nnU-Net's residual encoder U-Net (:mod:`umamba_seg.architectures.unet_parts`)
with Mamba token layers (``mixer(LN(x))`` on the flattened map, run in fp32):

* ``UMambaBot``: one layer on the bottleneck (the last encoder stage).
* ``UMambaEnc``: a layer after every encoder stage in 3D, after alternate stages ending
  with the last in 2D (the authors' choice to bound 2D memory); a stage with no more
  voxels than channels uses the channels as tokens.

As in the authors' code, the second half of the encoder stages has one residual block
and the finest decoder stages one block each; the decoder upsamples with nearest + 1^d
conv. Plans store every such choice in ``arch_kwargs`` (``mamba_stages``,
``n_blocks_per_stage``, ``patch_size``, ...), so the network built from a plan is fully
described by it. ``use_ssm=False`` drops every Mamba layer (``*_nossm`` ablations; the
Bot and Enc ablations are then the same network).
"""

from __future__ import annotations

import math
import pydoc
from functools import partial
from typing import Sequence

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from umamba_seg.architectures.presets import load_preset
from umamba_seg.architectures.registry import ArchSpec, register
from umamba_seg.architectures.unet_parts import ResidualUpDecoder, TokenResidualEncoder
from umamba_seg.nn.mamba_mixer import MambaMixer
from umamba_seg.nn.token_layer import TokenLayer, make_token_layer


def _resolve(op: type | str | None) -> type | None:
    return pydoc.locate(op) if isinstance(op, str) else op


def all_stages(n_stages: int) -> list[int]:
    """Every encoder stage (U-Mamba Enc in 3D)."""
    return list(range(n_stages))


def alternate_stages(n_stages: int) -> list[int]:
    """Every other stage, ending with the last (U-Mamba Enc in 2D)."""
    return [s for s in range(n_stages) if s % 2 != n_stages % 2]


class _UMambaUNet(nn.Module):
    """Residual U-Net with Mamba token layers after the encoder stages in ``mamba_stages``."""

    default_channel_tokens = True

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        *,
        n_stages: int,
        features_per_stage: Sequence[int],
        conv_op: type[nn.Module] | str,
        kernel_sizes: Sequence,
        strides: Sequence,
        n_blocks_per_stage: Sequence[int] | int,
        n_conv_per_stage_decoder: Sequence[int] | int,
        patch_size: Sequence[int] | None = None,
        mamba_stages: Sequence[int] | None = None,
        channel_tokens: bool | None = None,
        conv_bias: bool = True,
        norm_op: type[nn.Module] | str | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | str | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | str | None = None,
        nonlin_kwargs: dict | None = None,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        ssm_fp32: bool = True,
        upsample: str = "nearest_conv",
        use_ssm: bool = True,
    ) -> None:
        super().__init__()
        conv_op = _resolve(conv_op)
        dim = convert_conv_op_to_dim(conv_op)
        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        if mamba_stages is None:
            mamba_stages = self.default_mamba_stages(n_stages, dim)
        if channel_tokens is None:
            channel_tokens = self.default_channel_tokens
        if channel_tokens and use_ssm and patch_size is None:
            raise ValueError("channel tokens need the plan's patch_size in arch_kwargs")
        self.mamba_stages = sorted(int(s) for s in mamba_stages) if use_ssm else []
        self.patch_size = None if patch_size is None else list(patch_size)
        mixer = partial(MambaMixer, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank)

        def token_layer(stage: int, channels: int, size: Sequence[int] | None) -> nn.Module | None:
            if stage not in self.mamba_stages:
                return None
            if size is None:  # no patch known: voxels are the tokens
                return TokenLayer(channels, mixer(channels), fp32=ssm_fp32)
            return make_token_layer(channels, size, mixer, channel_tokens=channel_tokens, fp32=ssm_fp32)

        self.encoder = TokenResidualEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_blocks_per_stage,
            patch_size, token_layer, conv_bias, _resolve(norm_op),
            norm_op_kwargs, _resolve(dropout_op), dropout_op_kwargs, _resolve(nonlin), nonlin_kwargs,
        )  # fmt: skip
        self.decoder = ResidualUpDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, upsample=upsample
        )
        self.apply(InitWeights_He(1e-2))

    @staticmethod
    def default_mamba_stages(n_stages: int, dim: int) -> list[int]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Activation count proxy for nnU-Net style planners."""
        return self.encoder.compute_conv_feature_map_size(input_size) + self.decoder.compute_conv_feature_map_size(
            input_size
        )


class UMambaBot(_UMambaUNet):
    """U-Mamba Bot: a single Mamba layer on the bottleneck (voxels as tokens)."""

    default_channel_tokens = False

    @staticmethod
    def default_mamba_stages(n_stages: int, dim: int) -> list[int]:
        return [n_stages - 1]


class UMambaEnc(_UMambaUNet):
    """U-Mamba Enc: Mamba layers after the encoder stages (all in 3D, alternate in 2D)."""

    default_channel_tokens = True

    @staticmethod
    def default_mamba_stages(n_stages: int, dim: int) -> list[int]:
        return all_stages(n_stages) if dim == 3 else alternate_stages(n_stages)


_STAGE_RULES = {"all": all_stages, "alternate": alternate_stages}


def umamba_block_counts(n_stages: int, encoder: Sequence[int], decoder: Sequence[int]) -> tuple[list, list]:
    """The authors' block counts: one residual block in the second half of the encoder
    stages and in the finest decoder stages; the plan's counts elsewhere."""
    enc = list(encoder)
    dec = list(decoder)
    for s in range(math.ceil(n_stages / 2), n_stages):
        enc[s] = 1
    for s in range(math.ceil((n_stages - 1) / 2 + 0.5), n_stages - 1):
        dec[s] = 1
    return enc, dec


def build_kwargs(
    cnn_kwargs: dict, patch_size: Sequence[int], variant: str = "bot", use_ssm: bool = True, size: str = "default"
) -> dict:
    """U-Mamba ``arch_kwargs`` from the CNN plan's ``arch_kwargs`` and patch size."""
    preset = load_preset("umamba", size)
    n = int(cnn_kwargs["n_stages"])
    dim = len(patch_size)
    per_stage = cnn_kwargs.get("n_blocks_per_stage", cnn_kwargs.get("n_conv_per_stage"))
    if isinstance(per_stage, int):
        per_stage = [per_stage] * n
    dec = cnn_kwargs["n_conv_per_stage_decoder"]
    if isinstance(dec, int):
        dec = [dec] * (n - 1)
    enc_blocks, dec_blocks = umamba_block_counts(n, per_stage, dec)
    if variant == "bot":
        stages, channel_tokens = [n - 1], False
    elif variant == "enc":
        rule = preset["enc_stages_3d"] if dim == 3 else preset["enc_stages_2d"]
        stages, channel_tokens = _STAGE_RULES[rule](n), True
    else:
        raise ValueError(f"unknown U-Mamba variant {variant!r}")
    kwargs = {
        key: cnn_kwargs.get(key)
        for key in (
            "n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "conv_bias", "norm_op",
            "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs",
        )
    }  # fmt: skip
    kwargs.update(
        n_blocks_per_stage=enc_blocks,
        n_conv_per_stage_decoder=dec_blocks,
        patch_size=[int(p) for p in patch_size],
        mamba_stages=stages,
        channel_tokens=channel_tokens,
        d_state=int(preset["d_state"]),
        d_conv=int(preset["d_conv"]),
        expand=int(preset["expand"]),
        dt_rank=preset["dt_rank"],
        ssm_fp32=bool(preset["ssm_fp32"]),
        upsample=str(preset["upsample"]),
        use_ssm=use_ssm,
    )
    return kwargs


def _spec(name: str, variant: str, use_ssm: bool, cls: str, description: str) -> ArchSpec:
    return register(
        ArchSpec(
            name=name,
            network_class_name=f"umamba_seg.architectures.umamba.{cls}",
            build_kwargs=partial(build_kwargs, variant=variant, use_ssm=use_ssm),
            family="umamba",
            description=description,
            has_ssm=use_ssm,
        )
    )


UMAMBA_BOT = _spec("umamba_bot", "bot", True, "UMambaBot", "U-Mamba Bot: residual U-Net, Mamba on the bottleneck")
UMAMBA_BOT_NOSSM = _spec(
    "umamba_bot_nossm", "bot", False, "UMambaBot", "U-Mamba Bot without its Mamba layer (ablation)"
)
UMAMBA_ENC = _spec(
    "umamba_enc", "enc", True, "UMambaEnc", "U-Mamba Enc: residual U-Net, Mamba after the encoder stages"
)
UMAMBA_ENC_NOSSM = _spec(
    "umamba_enc_nossm", "enc", False, "UMambaEnc", "U-Mamba Enc without its Mamba layers (ablation)"
)
