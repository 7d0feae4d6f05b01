"""U-Mamba's residual encoder and decoder, shared by U-Mamba and xLSTM-UNet.

Both papers' networks (bowang-lab/U-Mamba, tianrun-chen/xLSTM-UNet-PyTorch) use the same
convolutional backbone; this is it, module for module, so that their state dicts load
into ours with the same keys:

* :class:`ResidualBlock` (their ``BasicResBlock``): ``conv(k, stride)-norm-act-conv(k)-norm``
  plus a 1^d conv shortcut carrying the stride (no norm on it), then the activation. The
  shortcut conv is there in every such block, also where the shapes do not change.
* :class:`ResidualEncoder`: a stem ``ResidualBlock(in -> f0)`` followed by
  ``n_blocks[0] - 1`` of nnU-Net's ``BasicBlockD``; then every stage ``s`` (stage 0
  included) is ``ResidualBlock(f_{s-1} -> f_s, stride_s)`` followed by
  ``n_blocks[s] - 1`` ``BasicBlockD``. Optionally a layer after each stage, per
  ``stage_layers``: ``"mixer"`` (U-Mamba Enc's Mamba layers, xLSTM-UNet Enc's ViL
  layers), ``"conv"`` (one more ``BasicBlockD``, xLSTM-UNet Enc) or ``"none"``, in a list
  registered under the name the authors use (``mamba_layers`` / ``xlstm_layers``).
* :class:`ResidualDecoder`: per stage nearest upsampling + 1^d conv, concatenation of
  the skip, ``ResidualBlock(2f -> f)`` and ``n - 1`` ``BasicBlockD``, and a 1^d
  segmentation head per stage (nnunetv2's deep supervision). In 2D the authors' decoder
  does not concatenate the finest skip (its last stage reads ``f`` channels):
  ``concat_finest_skip=False``. The decoder keeps a reference to the encoder (as theirs
  and nnU-Net's do), so state dicts also hold the encoder's tensors under ``decoder.encoder``.

As theirs, the residual block's three convs always carry a bias (the plan's ``conv_bias``
applies to the ``BasicBlockD``), and its norm and activation are the plan's. Where we
differ on purpose: a plan's ``dropout_op`` (None in nnU-Net's plans, ignored by the
authors' code) is applied after each block's first conv; the encoder does not compute
nnU-Net's ``compute_conv_feature_map_size`` proxy (our planner measures activation memory
on the network itself, :mod:`umamba_seg.planning.memory_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from torch import nn

from umamba_seg.nn.upsample import NearestUpsampleConv

# (channels, stage feature-map size or None without a patch) -> a token-mixing layer
MixerFactory = Callable[[int, "Sequence[int] | None"], nn.Module]
STAGE_LAYER_KINDS = ("mixer", "conv", "none")


def stage_feature_map_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial size of each stage's output for ``patch_size`` (cumulative strides)."""
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // t for s, t in zip(size, stride)]
        sizes.append(size)
    return sizes


def _as_lists(values: Sequence, dim: int) -> list[list[int]]:
    return [[int(v)] * dim if isinstance(v, int) else [int(x) for x in v] for v in values]


class ResidualBlock(nn.Module):
    """``act(norm2(conv2(act(norm1(conv1(x))))) + conv3(x))`` with a strided 1^d ``conv3``."""

    def __init__(
        self,
        conv_op: type[nn.Module],
        input_channels: int,
        output_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        norm_op: type[nn.Module],
        norm_op_kwargs: dict | None,
        nonlin: type[nn.Module],
        nonlin_kwargs: dict | None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        padding = [k // 2 for k in kernel_size]
        self.conv1 = conv_op(input_channels, output_channels, kernel_size, stride=stride, padding=padding)
        self.dropout = None if dropout_op is None else dropout_op(**(dropout_op_kwargs or {}))
        self.norm1 = norm_op(output_channels, **(norm_op_kwargs or {}))
        self.act1 = nonlin(**(nonlin_kwargs or {}))
        self.conv2 = conv_op(output_channels, output_channels, kernel_size, padding=padding)
        self.norm2 = norm_op(output_channels, **(norm_op_kwargs or {}))
        self.act2 = nonlin(**(nonlin_kwargs or {}))
        self.conv3 = conv_op(input_channels, output_channels, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        if self.dropout is not None:
            y = self.dropout(y)
        y = self.norm2(self.conv2(self.act1(self.norm1(y))))
        return self.act2(y + self.conv3(x))


class ResidualEncoder(nn.Module):
    """The authors' residual encoder; returns every stage's output (the skips), finest first.

    ``stage_layers`` (one kind per stage, see :data:`STAGE_LAYER_KINDS`) adds a layer
    after each stage, listed as ``stage_layers_name``; ``mixer_factory(channels, size)``
    builds the ``"mixer"`` ones (``None``: ``nn.Identity`` there, the ablation), ``"none"``
    is ``nn.Identity``. Exposes what the decoder reads
    (``output_channels``, ``strides``, ``kernel_sizes``, ``conv_op``, norm/nonlin/dropout).
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
        conv_bias: bool,
        norm_op: type[nn.Module],
        norm_op_kwargs: dict | None,
        dropout_op: type[nn.Module] | None,
        dropout_op_kwargs: dict | None,
        nonlin: type[nn.Module],
        nonlin_kwargs: dict | None,
        patch_size: Sequence[int] | None = None,
        stage_layers: Sequence[str] | None = None,
        mixer_factory: MixerFactory | None = None,
        stage_layers_name: str = "stage_layers",
    ) -> None:
        super().__init__()
        dim = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[conv_op]
        for name, value in (("features_per_stage", features_per_stage), ("kernel_sizes", kernel_sizes),
                            ("strides", strides), ("n_blocks_per_stage", n_blocks_per_stage)):  # fmt: skip
            if len(value) != n_stages:
                raise ValueError(f"{name} needs {n_stages} entries (one per stage), got {list(value)}")
        self.output_channels = [int(f) for f in features_per_stage]
        self.kernel_sizes = _as_lists(kernel_sizes, dim)
        self.strides = _as_lists(strides, dim)
        self.conv_op, self.conv_bias = conv_op, conv_bias
        self.norm_op, self.norm_op_kwargs = norm_op, norm_op_kwargs
        self.dropout_op, self.dropout_op_kwargs = dropout_op, dropout_op_kwargs
        self.nonlin, self.nonlin_kwargs = nonlin, nonlin_kwargs
        self.feature_map_sizes = None if patch_size is None else stage_feature_map_sizes(patch_size, self.strides)

        self.stem = self._stage(input_channels, 0, [1] * dim, n_blocks_per_stage[0])
        stages, channels = [], self.output_channels[0]
        for s in range(n_stages):
            stages.append(self._stage(channels, s, self.strides[s], n_blocks_per_stage[s]))
            channels = self.output_channels[s]
        self.stages = nn.ModuleList(stages)

        self.stage_layers_name = None
        if stage_layers is not None:
            if len(stage_layers) != n_stages or any(k not in STAGE_LAYER_KINDS for k in stage_layers):
                raise ValueError(f"stage_layers needs {n_stages} entries of {STAGE_LAYER_KINDS}, got {stage_layers}")
            layers = []
            for s, kind in enumerate(stage_layers):
                size = None if self.feature_map_sizes is None else self.feature_map_sizes[s]
                if kind == "conv":
                    layers.append(self.basic_block(s))
                elif kind == "mixer" and mixer_factory is not None:
                    layers.append(mixer_factory(self.output_channels[s], size))
                else:
                    layers.append(nn.Identity())
            self.stage_layers_name = stage_layers_name
            self.add_module(stage_layers_name, nn.ModuleList(layers))

    def basic_block(self, stage: int) -> BasicBlockD:
        """nnU-Net's ``BasicBlockD`` at ``stage``'s width and kernel (stride 1)."""
        c = self.output_channels[stage]
        return BasicBlockD(
            self.conv_op, c, c, self.kernel_sizes[stage], 1, self.conv_bias, self.norm_op, self.norm_op_kwargs,
            self.dropout_op, self.dropout_op_kwargs, self.nonlin, self.nonlin_kwargs,
        )  # fmt: skip

    def _stage(self, in_channels: int, s: int, stride: Sequence[int], n_blocks: int) -> nn.Sequential:
        first = ResidualBlock(
            self.conv_op, in_channels, self.output_channels[s], self.kernel_sizes[s], stride, self.norm_op,
            self.norm_op_kwargs, self.nonlin, self.nonlin_kwargs, self.dropout_op, self.dropout_op_kwargs,
        )  # fmt: skip
        return nn.Sequential(first, *(self.basic_block(s) for _ in range(n_blocks - 1)))

    @property
    def stage_layers(self) -> nn.ModuleList | None:
        """The per-stage layers (``None`` without a factory)."""
        return None if self.stage_layers_name is None else self._modules[self.stage_layers_name]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        layers = self.stage_layers
        skips = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if layers is not None:
                x = layers[s](x)
            skips.append(x)
        return skips


class ResidualDecoder(nn.Module):
    """The authors' decoder: per stage upsample -> [concat skip] -> residual blocks -> head.

    ``deep_supervision`` (toggled by nnunetv2's trainer) returns one logits map per
    decoder stage, finest first; otherwise only the finest.
    """

    def __init__(
        self,
        encoder: ResidualEncoder,
        num_classes: int,
        n_blocks_per_stage: Sequence[int],
        deep_supervision: bool,
        concat_finest_skip: bool = True,
    ) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder
        self.num_classes = num_classes
        self.concat_finest_skip = concat_finest_skip
        n = len(encoder.output_channels)
        if len(n_blocks_per_stage) != n - 1:
            raise ValueError(f"n_conv_per_stage_decoder needs {n - 1} entries, got {list(n_blocks_per_stage)}")
        stages, upsample_layers, seg_layers = [], [], []
        for s in range(1, n):
            below, skip = encoder.output_channels[-s], encoder.output_channels[-(s + 1)]
            upsample_layers.append(NearestUpsampleConv(encoder.conv_op, below, skip, encoder.strides[-s]))
            concat = concat_finest_skip or s < n - 1
            k = encoder.kernel_sizes[-(s + 1)]
            first = ResidualBlock(
                encoder.conv_op, 2 * skip if concat else skip, skip, k, [1] * len(k), encoder.norm_op,
                encoder.norm_op_kwargs, encoder.nonlin, encoder.nonlin_kwargs, encoder.dropout_op,
                encoder.dropout_op_kwargs,
            )  # fmt: skip
            rest = [encoder.basic_block(n - 1 - s) for _ in range(n_blocks_per_stage[s - 1] - 1)]
            stages.append(nn.Sequential(first, *rest))
            seg_layers.append(encoder.conv_op(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.upsample_layers = nn.ModuleList(upsample_layers)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for s, (up, stage, head) in enumerate(zip(self.upsample_layers, self.stages, self.seg_layers)):
            x = up(x)
            if self.concat_finest_skip or s < last:
                x = torch.cat((x, skips[-(s + 2)]), 1)
            x = stage(x)
            if self.deep_supervision or s == last:
                outputs.append(head(x))
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]
