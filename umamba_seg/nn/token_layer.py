"""Token layer: run a sequence mixer on a feature map ``(B, C, *spatial)``.

The map is flattened to ``(B, L, C)`` (voxels are tokens, row-major), normalised with
LayerNorm over channels, mixed, and reshaped back; optionally ``x + mixer(LN(x))``
(SegMamba) instead of ``mixer(LN(x))`` (U-Mamba), or no norm at all when the mixer
brings its own (xLSTM-UNet's ViL block). In channel-token mode (U-Mamba and xLSTM-UNet
Enc, for stages with no more voxels than channels) the channels are the tokens and the
voxels the features: ``(B, C, N)`` with LayerNorm over ``N``.

The mixer is registered under ``mixer_name`` (``mixer`` by default): U-Mamba's layer
calls it ``mamba`` and xLSTM-UNet's ``vil``, so state dicts carry the authors' key names;
:attr:`TokenLayer.mixer` reaches it whatever its name.

``fp32=True`` runs the layer in float32 with autocast off, as U-Mamba does for its Mamba
layer: the scan accumulates in fp32 anyway, and the projections around it are the
usual source of fp16 overflow, so this is what keeps AMP training from NaN-ing.

Mixers take ``(x, spatial_shape)``; any ``nn.Module`` with that forward plugs in
(Mamba, tri-orientated Mamba, ViL blocks). The layer is itself a
:class:`~umamba_seg.nn.token_mixer.TokenMixer`, so its norm and fp32 copies count with the mixer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from umamba_seg.nn.token_mixer import TokenMixer


def use_channel_tokens(channels: int, feature_map_size: Sequence[int]) -> bool:
    """U-Mamba's rule: channels become the tokens when a stage has no more voxels than channels."""
    return math.prod(feature_map_size) <= channels


class TokenLayer(TokenMixer):
    """``(B, C, *spatial) -> (B, C, *spatial)`` via LayerNorm + a sequence mixer."""

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        channel_token: bool = False,
        residual: bool = False,
        fp32: bool = True,
        norm: bool = True,
        mixer_name: str = "mixer",
    ) -> None:
        super().__init__()
        self.dim = self.d_model = dim
        self.norm = nn.LayerNorm(dim) if norm else None
        self.mixer_name = mixer_name
        self.add_module(mixer_name, mixer)
        self.channel_token = channel_token
        self.residual = residual
        self.fp32 = fp32

    @property
    def mixer(self) -> nn.Module:
        """The sequence mixer (registered as ``mixer_name``)."""
        try:
            return self._modules[self.__dict__.get("mixer_name", "mixer")]
        except KeyError:  # not registered yet (nn.Module.add_module probes the name)
            raise AttributeError("mixer") from None

    @property
    def state_size(self) -> int:
        """The wrapped mixer's (0 for a mixer that is not a :class:`TokenMixer`)."""
        mixer = self.mixer
        return mixer.state_size if isinstance(mixer, TokenMixer) else 0

    def _normed(self, seq: torch.Tensor) -> torch.Tensor:
        return seq if self.norm is None else self.norm(seq)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        spatial = tuple(x.shape[2:])
        flat = x.reshape(b, c, -1)
        if self.channel_token:
            seq = flat  # (B, C tokens, N features)
            out = self.mixer(self._normed(seq), None)
        else:
            seq = flat.transpose(1, 2)  # (B, N tokens, C features)
            out = self.mixer(self._normed(seq), spatial)
        if self.residual:
            out = out + seq
        if not self.channel_token:
            out = out.transpose(1, 2)
        return out.reshape(b, c, *spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = math.prod(x.shape[2:]) if self.channel_token else x.shape[1]
        if features != self.dim:
            raise ValueError(f"TokenLayer(dim={self.dim}, channel_token={self.channel_token}) got {tuple(x.shape)}")
        if not self.fp32:
            return self._mix(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._mix(x.float()).to(x.dtype)


MixerFactory = Callable[[int], nn.Module]


def make_token_layer(
    channels: int,
    feature_map_size: Sequence[int] | None,
    mixer_factory: MixerFactory,
    channel_tokens: bool = True,
    **layer_options: Any,
) -> TokenLayer:
    """A token layer for a stage of ``channels`` x ``feature_map_size``; ``mixer_factory(d_model)``
    builds the mixer; with ``channel_tokens`` and a known size the U-Mamba rule picks the token
    axis (an unknown size, ``None``, keeps the voxels as tokens). ``layer_options`` are
    :class:`TokenLayer`'s (``residual``, ``fp32``, ``norm``, ``mixer_name``)."""
    channel_token = channel_tokens and feature_map_size is not None and use_channel_tokens(channels, feature_map_size)
    dim = math.prod(feature_map_size) if channel_token else channels
    return TokenLayer(dim, mixer_factory(dim), channel_token=channel_token, **layer_options)
