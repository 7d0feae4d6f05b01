"""Architecture presets: one frozen dataclass per family, the only place a default lives.

:class:`UMambaPreset`, :class:`XLSTMPreset`, :class:`SegMambaPreset` and
:class:`VMUNetPreset` hold every setting of their family that the CNN plan does not
decide (state size, widths, depths, stage rules, ...); their field defaults are the
authors' configuration. The registry's ``build_kwargs`` write a preset into the plans'
``arch_kwargs``, and the network constructors take their keyword defaults from the same
dataclass, so a default is written once.

Named *sizes* (``small``) list only what differs from the defaults, in
``preset_sizes.yaml`` next to this module, read with :mod:`importlib.resources` (it
ships in the wheel as package data). ``umamba-seg plan-and-preprocess --preset SIZE``
plans every network at that size. A key a preset does not have, a value of the wrong
type or an unknown size is a :class:`~umamba_seg.errors.UserInputError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal

import yaml

from umamba_seg.errors import UserInputError
from umamba_seg.nn.ssm_config import SSMConfig

DEFAULT_SIZE = "default"
SIZES_RESOURCE = "preset_sizes.yaml"  # in this package (umamba_seg.architectures)

# U-Net stage rules of the Enc networks (what follows each encoder stage); the functions are
# ``token_mixer_unet.STAGE_RULES``
StageRule = Literal["all", "alternate", "xlstm_enc_3d", "xlstm_enc_2d"]


@dataclass(frozen=True)
class Preset:
    """Base of the family presets: overrides checked against the fields."""

    family: ClassVar[str] = ""

    def override(self, changes: Mapping[str, Any], where: str = "preset overrides") -> Preset:
        """A copy with ``changes`` applied; an unknown key or a value of the wrong type is a
        :class:`UserInputError` naming the key, the preset and ``where`` it was written."""
        hints = typing.get_type_hints(type(self))
        known = [f.name for f in dataclasses.fields(self)]
        values = {}
        for key, value in changes.items():
            if key not in known:
                raise UserInputError(
                    f"unknown key '{key}' in the {type(self).__name__} ({self.family}) preset", where,
                    f"use one of its keys: {', '.join(known)}",
                )  # fmt: skip
            if not _matches(value, hints[key]):
                raise UserInputError(
                    f"{type(self).__name__} ({self.family}) key '{key}' must be {_describe(hints[key])}, "
                    f"got {value!r}", where, f"fix '{key}' (the default is {_plain(getattr(self, key))!r})",
                )  # fmt: skip
            values[key] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(self, **values)


class MambaBlockPreset:
    """Mixin of the presets with a Mamba block's sizes (fields ``d_state``, ``d_conv``, ``expand``,
    ``dt_rank``): the nn modules take them as one :class:`~umamba_seg.nn.ssm_config.SSMConfig`."""

    def ssm_config(self) -> SSMConfig:
        """This preset's Mamba block settings."""
        return SSMConfig(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank)


@dataclass(frozen=True)
class TokenMixerPreset(Preset):
    """Settings shared by the token-mixer U-Nets (U-Mamba, xLSTM-UNet), whose topology
    (stages, widths, kernels, strides) comes from the CNN plan."""

    mixer: ClassVar[str] = ""
    mixer_fp32: bool = True  # run the token layers in fp32 under AMP, as the authors do
    # Enc networks: what follows each encoder stage, in 3D and in 2D (``StageRule``)
    enc_stages_3d: StageRule = "all"
    enc_stages_2d: StageRule = "alternate"
    # whether the decoder concatenates the finest skip (the authors' 2D decoders do not)
    concat_finest_skip_3d: bool = True
    concat_finest_skip_2d: bool = False

    def stage_rule(self, dim: int) -> str:
        """The Enc stage rule for ``dim``-D networks."""
        return self.enc_stages_3d if dim == 3 else self.enc_stages_2d

    def finest_skip(self, dim: int) -> bool:
        """Whether ``dim``-D decoders concatenate the finest skip."""
        return self.concat_finest_skip_3d if dim == 3 else self.concat_finest_skip_2d


@dataclass(frozen=True)
class UMambaPreset(TokenMixerPreset, MambaBlockPreset):
    """U-Mamba (bowang-lab/U-Mamba): Mamba layers ``mamba(LN(x))`` on the CNN plan's residual U-Net."""

    family: ClassVar[str] = "umamba"
    mixer: ClassVar[str] = "mamba"
    d_state: int = 16  # SSM state size N
    d_conv: int = 4  # causal depthwise conv1d width
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int | Literal["auto"] = "auto"  # auto: ceil(d_model / 16)

    def mixer_kwargs(self) -> dict:
        """Keyword arguments of ``MambaMixer``."""
        return {"d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand, "dt_rank": self.dt_rank}


@dataclass(frozen=True)
class XLSTMPreset(TokenMixerPreset):
    """xLSTM-UNet (tianrun-chen/xLSTM-UNet-PyTorch): Vision-LSTM blocks ``x + ViLLayer(LN(x))``
    on the U-Mamba backbone."""

    family: ClassVar[str] = "xlstm"
    mixer: ClassVar[str] = "vil"
    expansion: int = 2  # inner = expansion * C; the up-projection is C -> 2 * inner (x and z)
    # q/k/v block-diagonal with blocks of 4 (2 where C is not a multiple of 4); the mLSTM cell
    # has as many heads as the block size (the authors' code)
    qkv_block_size: int = 4
    conv_kernel_size: int = 4  # causal depthwise conv1d width
    mlstm_chunk: int = 64  # chunk length of our chunkwise mLSTM (a power of two >= 16 for Triton)
    # a BasicBlockD after stages 0-2 and ViL after the others (3D); a BasicBlockD after stage 1
    # and ViL after alternate stages from 2 on, ending with the last (2D)
    enc_stages_3d: StageRule = "xlstm_enc_3d"
    enc_stages_2d: StageRule = "xlstm_enc_2d"

    def mixer_kwargs(self) -> dict:
        """Keyword arguments of ``ViLBlock``."""
        return {"expansion": self.expansion, "qkv_block_size": self.qkv_block_size,
                "conv_kernel_size": self.conv_kernel_size, "chunk": self.mlstm_chunk}  # fmt: skip


@dataclass(frozen=True)
class SegMambaPreset(Preset, MambaBlockPreset):
    """SegMamba (ge-xing/SegMamba); the defaults give 67.4 M parameters with 4 in / 4 out."""

    family: ClassVar[str] = "segmamba"
    feature_size: tuple[int, ...] = (48, 96, 192, 384)  # channels of the four Mamba encoder stages
    depths: tuple[int, ...] = (2, 2, 2, 2)  # tri-orientated Mamba layers per stage
    hidden_size: int = 768  # bottleneck channels of the UNETR decoder
    stem_kernel: int = 7  # stride-2 stem convolution
    mlp_ratio: int = 2  # channel MLP width after each stage
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | Literal["auto"] = "auto"
    ssm_fp32: bool = True  # run the Mamba layers in fp32 under AMP


@dataclass(frozen=True)
class VMUNetPreset(Preset, MambaBlockPreset):
    """VM-UNet (JCruan519/VM-UNet): the authors' VSSM U-shape; 2D scans 4 orders, 3D 6."""

    family: ClassVar[str] = "vmunet"
    dims: tuple[int, ...] = (96, 192, 384, 768)  # channels per stage
    depths: tuple[int, ...] = (2, 2, 2, 2)  # VSS blocks per encoder stage
    depths_decoder: tuple[int, ...] = (2, 2, 2, 1)  # VSS blocks per decoder stage, bottleneck first
    embed_factor: int = 4  # patch embedding (and final expand) factor per axis
    d_state: int = 16  # SSM state size N
    d_conv: int = 3  # depthwise conv width (3x3 / 3x3x3)
    expand: float = 2  # d_inner = expand * dim
    dt_rank: int | Literal["auto"] = "auto"  # auto: ceil(dim / 16)
    drop_path_rate: float = 0.2  # stochastic depth, as the authors train VM-UNet
    min_bottleneck: int = 4  # smallest feature-map size per axis after all downsampling


PRESETS: dict[str, type[Preset]] = {p.family: p for p in (UMambaPreset, XLSTMPreset, SegMambaPreset, VMUNetPreset)}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML/JSON ``value`` fits the annotation ``hint`` (ints count as floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in args)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def _plain(value: Any) -> Any:
    """A value as YAML would spell it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple:
        return "a list of integers" if args[0] is int else f"a list of ({_describe(args[0])})"
    if args:
        return " or ".join(_describe(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _sizes_file() -> str:
    """Where the sizes live (a file of the installed package), for messages."""
    return str(resources.files(__package__).joinpath(SIZES_RESOURCE))


def parse_sizes(text: str, where: str) -> dict[str, dict[str, dict]]:
    """Named sizes from YAML ``text`` (family -> size -> overrides), checked for shape and for
    families; each size's keys are checked when it is loaded (:meth:`Preset.override`)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise UserInputError("the preset sizes must map families to sizes", where, "restore the file")
    for family, family_sizes in data.items():
        if family not in PRESETS:
            raise UserInputError(
                f"unknown architecture family '{family}' in the preset sizes",
                where,
                f"use one of: {', '.join(PRESETS)}",
            )
        if not isinstance(family_sizes, dict) or not all(isinstance(v, dict) for v in family_sizes.values()):
            raise UserInputError(f"the sizes of '{family}' must map size names to settings", where, "fix the YAML")
        if DEFAULT_SIZE in family_sizes:
            raise UserInputError(
                f"'{family}' redefines the '{DEFAULT_SIZE}' size",
                where,
                f"change the defaults in {PRESETS[family].__name__} instead",
            )
    return data


@cache
def _read_sizes() -> dict[str, dict[str, dict]]:
    """The package's ``preset_sizes.yaml`` (package data, so read through importlib.resources)."""
    text = resources.files(__package__).joinpath(SIZES_RESOURCE).read_text(encoding="utf-8")
    return parse_sizes(text, _sizes_file())


def sizes(family: str) -> list[str]:
    """The size names of ``family``: ``default`` first."""
    return [DEFAULT_SIZE, *_read_sizes().get(_preset_class(family).family, {})]


def all_sizes() -> list[str]:
    """Every size name some family has: ``default`` first."""
    names = [DEFAULT_SIZE]
    for family_sizes in _read_sizes().values():
        names += [s for s in family_sizes if s not in names]
    return names


def _preset_class(family: str) -> type[Preset]:
    if family not in PRESETS:
        raise UserInputError(
            f"no preset for architecture family '{family}'", _sizes_file(), f"use one of: {', '.join(PRESETS)}"
        )
    return PRESETS[family]


def load_preset(family: str, size: str = DEFAULT_SIZE) -> Preset:
    """The preset of ``family`` at ``size``: its dataclass defaults with the size's overrides."""
    cls = _preset_class(family)
    if size == DEFAULT_SIZE:
        return cls()
    family_sizes = _read_sizes().get(family, {})
    if size not in family_sizes:
        raise UserInputError(
            f"unknown preset size '{size}' for '{family}'", _sizes_file(), f"choose one of: {', '.join(sizes(family))}"
        )
    return cls().override(family_sizes[size], f"{_sizes_file()} ({family}: {size})")
