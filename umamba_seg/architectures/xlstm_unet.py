"""xLSTM-UNet (Chen et al. 2024), Bot and Enc, in 2D and 3D, constructible from nnunetv2 plans.

U-Mamba's residual encoder/decoder (:mod:`umamba_seg.architectures.unet_parts`) with the
Mamba layer replaced by Vision-LSTM blocks ``x + ViLLayer(LN(x))``
(:mod:`umamba_seg.nn.vil_layer`) on our mLSTM op, so there is no quadratic L x L matrix
and 3D volumes fit:

* ``XLSTMUNetBot``: ViL on the bottleneck (the last encoder stage), voxels as tokens.
* ``XLSTMUNetEnc``: ViL after every encoder stage in 3D, after alternate stages ending
  with the last in 2D (U-Mamba Enc's placement, which the authors' code follows); a stage
  with no more voxels than channels uses the channels as tokens.

Every ViL block of a network scans in the direction opposite to the previous one
(forward, backward, forward, ...; Vision-LSTM's alternation), counting blocks through the
encoder stages in order and within a stage when ``vil_depth > 1``. Block counts follow
U-Mamba (one residual block in the coarse half of the encoder and the finest decoder
stages). Every such choice is stored in the plan's ``arch_kwargs``; ``use_ssm=False``
drops every ViL block (``*_nossm`` ablations, the same network as U-Mamba's ablation).
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
from umamba_seg.architectures.umamba import all_stages, alternate_stages, umamba_block_counts
from umamba_seg.architectures.unet_parts import ResidualUpDecoder, TokenResidualEncoder
from umamba_seg.nn.vil_layer import make_vil_blocks

_STAGE_RULES = {"all": all_stages, "alternate": alternate_stages}


def _resolve(op: type | str | None) -> type | None:
    return pydoc.locate(op) if isinstance(op, str) else op


class _XLSTMUNet(nn.Module):
    """Residual U-Net with ViL blocks after the encoder stages in ``xlstm_stages``."""

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
        xlstm_stages: Sequence[int] | None = None,
        channel_tokens: bool | None = None,
        conv_bias: bool = True,
        norm_op: type[nn.Module] | str | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | str | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | str | None = None,
        nonlin_kwargs: dict | None = None,
        vil_depth: int = 1,
        expansion: int = 2,
        qkv_block_size: int = 4,
        num_heads: int = 4,
        conv_kernel_size: int = 4,
        mlstm_chunk: int = 64,
        vil_fp32: bool = True,
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
        if xlstm_stages is None:
            xlstm_stages = self.default_xlstm_stages(n_stages, dim)
        if channel_tokens is None:
            channel_tokens = self.default_channel_tokens
        if channel_tokens and use_ssm and patch_size is None:
            raise ValueError("channel tokens need the plan's patch_size in arch_kwargs")
        self.xlstm_stages = sorted(int(s) for s in xlstm_stages) if use_ssm else []
        self.patch_size = None if patch_size is None else list(patch_size)
        layer_kwargs = dict(
            expansion=expansion, qkv_block_size=qkv_block_size, num_heads=num_heads,
            conv_kernel_size=conv_kernel_size, chunk=mlstm_chunk,
        )  # fmt: skip

        def token_layer(stage: int, channels: int, size: Sequence[int]) -> nn.Module | None:
            if stage not in self.xlstm_stages:
                return None
            if patch_size is None:  # no patch known: voxels are the tokens
                size = [math.inf]
            first = self.xlstm_stages.index(stage) * vil_depth  # blocks before this stage
            return make_vil_blocks(
                channels, size, vil_depth, first_direction=first, channel_tokens=channel_tokens, fp32=vil_fp32,
                **layer_kwargs,
            )  # fmt: skip

        self.encoder = TokenResidualEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_blocks_per_stage,
            patch_size if patch_size is not None else [0] * dim, token_layer, conv_bias, _resolve(norm_op),
            norm_op_kwargs, _resolve(dropout_op), dropout_op_kwargs, _resolve(nonlin), nonlin_kwargs,
        )  # fmt: skip
        self.decoder = ResidualUpDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, upsample=upsample
        )
        # nnU-Net's He init touches only Conv2d/3d (and transposed): the ViL layers keep their own
        self.apply(InitWeights_He(1e-2))

    @staticmethod
    def default_xlstm_stages(n_stages: int, dim: int) -> list[int]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Activation count proxy for nnU-Net style planners (umamba_seg plans with its memory model)."""
        return self.encoder.compute_conv_feature_map_size(input_size) + self.decoder.compute_conv_feature_map_size(
            input_size
        )


class XLSTMUNetBot(_XLSTMUNet):
    """xLSTM-UNet Bot: ViL on the bottleneck (voxels as tokens)."""

    default_channel_tokens = False

    @staticmethod
    def default_xlstm_stages(n_stages: int, dim: int) -> list[int]:
        return [n_stages - 1]


class XLSTMUNetEnc(_XLSTMUNet):
    """xLSTM-UNet Enc: ViL after the encoder stages (all in 3D, alternate in 2D)."""

    default_channel_tokens = True

    @staticmethod
    def default_xlstm_stages(n_stages: int, dim: int) -> list[int]:
        return all_stages(n_stages) if dim == 3 else alternate_stages(n_stages)


def _per_stage(value: Sequence[int] | int, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def build_kwargs(
    cnn_kwargs: dict, patch_size: Sequence[int], variant: str = "bot", use_ssm: bool = True, size: str = "default"
) -> dict:
    """xLSTM-UNet ``arch_kwargs`` from the CNN plan's ``arch_kwargs``, its patch size and
    the ``configs/xlstm.yaml`` preset ``size``."""
    preset = load_preset("xlstm", size)
    n = int(cnn_kwargs["n_stages"])
    dim = len(patch_size)
    per_stage = cnn_kwargs.get("n_blocks_per_stage", cnn_kwargs.get("n_conv_per_stage"))
    enc_blocks, dec_blocks = umamba_block_counts(
        n, _per_stage(per_stage, n), _per_stage(cnn_kwargs["n_conv_per_stage_decoder"], n - 1)
    )
    if variant == "bot":
        stages, channel_tokens = [n - 1], False
    elif variant == "enc":
        rule = preset["enc_stages_3d"] if dim == 3 else preset["enc_stages_2d"]
        stages, channel_tokens = _STAGE_RULES[rule](n), True
    else:
        raise ValueError(f"unknown xLSTM-UNet variant {variant!r}")
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
        xlstm_stages=stages,
        channel_tokens=channel_tokens,
        vil_depth=int(preset["vil_depth"]),
        expansion=int(preset["expansion"]),
        qkv_block_size=int(preset["qkv_block_size"]),
        num_heads=int(preset["num_heads"]),
        conv_kernel_size=int(preset["conv_kernel_size"]),
        mlstm_chunk=int(preset["mlstm_chunk"]),
        vil_fp32=bool(preset["vil_fp32"]),
        upsample=str(preset["upsample"]),
        use_ssm=use_ssm,
    )
    return kwargs


def _spec(name: str, variant: str, use_ssm: bool, cls: str, description: str) -> ArchSpec:
    return register(
        ArchSpec(
            name=name,
            network_class_name=f"umamba_seg.architectures.xlstm_unet.{cls}",
            build_kwargs=partial(build_kwargs, variant=variant, use_ssm=use_ssm),
            family="xlstm",
            description=description,
            has_ssm=use_ssm,
        )
    )


XLSTM_BOT = _spec("xlstm_bot", "bot", True, "XLSTMUNetBot", "xLSTM-UNet Bot: residual U-Net, ViL on the bottleneck")
XLSTM_BOT_NOSSM = _spec(
    "xlstm_bot_nossm", "bot", False, "XLSTMUNetBot", "xLSTM-UNet Bot without its ViL layer (ablation)"
)
XLSTM_ENC = _spec(
    "xlstm_enc", "enc", True, "XLSTMUNetEnc", "xLSTM-UNet Enc: residual U-Net, ViL after the encoder stages"
)
XLSTM_ENC_NOSSM = _spec(
    "xlstm_enc_nossm", "enc", False, "XLSTMUNetEnc", "xLSTM-UNet Enc without its ViL layers (ablation)"
)
