"""Residual U-Net encoder/decoder with a pluggable per-stage token mixer.

Shared by U-Mamba (Bot, Enc) and xLSTM-UNet: the convolutional parts are nnU-Net's
ResEnc (``dynamic_network_architectures``' ``ResidualEncoder`` with ``BasicBlockD``
stacks, reused as is), and after each stage an optional token layer mixes the whole
feature map. Which stages get one, and what it is, comes from a factory:

    token_layer_factory(stage_index, channels, feature_map_size) -> nn.Module | None

(``None`` means no layer at that stage). ``feature_map_size`` is the stage's spatial
size for the plan's patch (``None`` without a patch), so layers that depend on it (U-Mamba's channel tokens) can
be built. The decoder mirrors U-Mamba's: upsample (nearest + 1^d conv, or a transposed
conv), concatenate the skip, residual blocks, 1^d segmentation heads for nnunetv2 deep
supervision; it also accepts a token layer factory for decoder stages.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, StackedResidualBlocks
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from torch import nn

from umamba_seg.nn.upsample import NearestUpsampleConv

# (stage index, channels, stage feature-map size or None when no patch is known) -> layer
TokenLayerFactory = Callable[[int, int, "Sequence[int] | None"], "nn.Module | None"]


def stage_feature_map_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial size of each stage's output for ``patch_size`` (cumulative strides)."""
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // t for s, t in zip(size, stride)]
        sizes.append(size)
    return sizes


def _as_lists(strides: Sequence, dim: int) -> list[list[int]]:
    return [[int(s)] * dim if isinstance(s, int) else [int(v) for v in s] for s in strides]


class TokenResidualEncoder(nn.Module):
    """nnU-Net's residual encoder with a token layer after the stages the factory chooses.

    Exposes the attributes nnU-Net decoders read (``output_channels``, ``strides``,
    ``conv_op``, ``norm_op``, ``kernel_sizes``, ...). Returns all stage outputs
    (the skips), finest first.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: Sequence[int],
        conv_op: type[nn.Module],
        kernel_sizes: Sequence,
        strides: Sequence,
        n_blocks_per_stage: Sequence[int],
        patch_size: Sequence[int] | None,
        token_layer_factory: TokenLayerFactory | None = None,
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.convs = ResidualEncoder(
            input_channels, n_stages, list(features_per_stage), conv_op, list(kernel_sizes), list(strides),
            list(n_blocks_per_stage), conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs,
            nonlin, nonlin_kwargs, block=BasicBlockD, return_skips=True,
        )  # fmt: skip
        dim = len(self.convs.strides[0])
        self.feature_map_sizes = (
            None if patch_size is None else stage_feature_map_sizes(patch_size, _as_lists(strides, dim))
        )
        layers = []
        for s in range(n_stages):
            size = None if self.feature_map_sizes is None else self.feature_map_sizes[s]
            layer = None if token_layer_factory is None else token_layer_factory(s, features_per_stage[s], size)
            layers.append(nn.Identity() if layer is None else layer)
        self.token_layers = nn.ModuleList(layers)
        for attr in (
            "output_channels", "strides", "conv_op", "norm_op", "norm_op_kwargs", "nonlin", "nonlin_kwargs",
            "dropout_op", "dropout_op_kwargs", "conv_bias", "kernel_sizes",
        ):  # fmt: skip
            setattr(self, attr, getattr(self.convs, attr))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.convs.stem is not None:
            x = self.convs.stem(x)
        skips = []
        for stage, token_layer in zip(self.convs.stages, self.token_layers):
            x = token_layer(stage(x))
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """nnU-Net's activation count of the convolutions plus a proxy for the token layers
        (about 8 maps of the stage's size: norm, in-projection x and z, conv, scan, gate)."""
        total = self.convs.compute_conv_feature_map_size(list(input_size))
        size = list(input_size)
        for s, layer in enumerate(self.token_layers):
            size = [i // j for i, j in zip(size, self.strides[s])]
            if not isinstance(layer, nn.Identity):
                total += np.int64(8 * self.output_channels[s] * math.prod(size))
        return np.int64(total)


class ResidualUpDecoder(nn.Module):
    """U-Mamba's decoder: per stage upsample -> concat skip -> residual blocks -> [token layer].

    ``deep_supervision`` (toggled by nnunetv2's trainer) returns one logits map per
    decoder stage, finest first; otherwise only the finest.
    """

    def __init__(
        self,
        encoder: TokenResidualEncoder,
        num_classes: int,
        n_blocks_per_stage: Sequence[int],
        deep_supervision: bool,
        upsample: str = "nearest_conv",
        token_layer_factory: TokenLayerFactory | None = None,
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder_strides = [list(s) for s in encoder.strides]
        self.output_channels = list(encoder.output_channels)
        self.num_classes = num_classes
        n = len(encoder.output_channels)
        if len(n_blocks_per_stage) != n - 1:
            raise ValueError(f"n_conv_per_stage_decoder needs {n - 1} entries, got {list(n_blocks_per_stage)}")
        if upsample not in ("nearest_conv", "transpconv"):
            raise ValueError(f"upsample must be 'nearest_conv' or 'transpconv', got {upsample!r}")
        sizes = getattr(encoder, "feature_map_sizes", None)
        ups, stages, heads, layers = [], [], [], []
        for s in range(1, n):
            below, skip = encoder.output_channels[-s], encoder.output_channels[-(s + 1)]
            stride = encoder.strides[-s]
            if upsample == "nearest_conv":
                ups.append(NearestUpsampleConv(encoder.conv_op, below, skip, stride))
            else:
                transp = get_matching_convtransp(encoder.conv_op)
                ups.append(transp(below, skip, stride, stride, bias=encoder.conv_bias))
            stages.append(
                StackedResidualBlocks(
                    n_blocks_per_stage[s - 1], encoder.conv_op, 2 * skip, skip, encoder.kernel_sizes[-(s + 1)], 1,
                    encoder.conv_bias, encoder.norm_op, encoder.norm_op_kwargs, encoder.dropout_op,
                    encoder.dropout_op_kwargs, encoder.nonlin, encoder.nonlin_kwargs, block=BasicBlockD,
                )
            )  # fmt: skip
            heads.append(encoder.conv_op(skip, num_classes, 1, 1, 0, bias=True))
            layer = None
            if token_layer_factory is not None and sizes is not None:
                layer = token_layer_factory(n - 1 - s, skip, sizes[-(s + 1)])
            layers.append(nn.Identity() if layer is None else layer)
        self.upsample_layers = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(heads)
        self.token_layers = nn.ModuleList(layers)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for s, (up, stage, head, token_layer) in enumerate(
            zip(self.upsample_layers, self.stages, self.seg_layers, self.token_layers)
        ):
            x = token_layer(stage(torch.cat((up(x), skips[-(s + 2)]), 1)))
            if self.deep_supervision or s == last:
                outputs.append(head(x))
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """nnU-Net's decoder activation count (``input_size`` is the encoder's input)."""
        skip_sizes, size = [], list(input_size)
        for stride in self.encoder_strides[:-1]:
            size = [i // j for i, j in zip(size, stride)]
            skip_sizes.append(size)
        total = np.int64(0)
        for s, stage in enumerate(self.stages):
            sz = skip_sizes[-(s + 1)]
            total += stage.compute_conv_feature_map_size(sz)
            total += np.prod([self.output_channels[-(s + 2)], *sz], dtype=np.int64)
            if self.deep_supervision or s == len(self.stages) - 1:
                total += np.prod([self.num_classes, *sz], dtype=np.int64)
            if not isinstance(self.token_layers[s], nn.Identity):
                total += np.int64(8 * self.output_channels[-(s + 2)] * math.prod(sz))
        return total
