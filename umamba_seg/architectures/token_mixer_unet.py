"""One residual U-Net with token mixers: U-Mamba Bot/Enc and xLSTM-UNet Bot/Enc are settings of it.

The backbone is the authors' residual encoder/decoder (:mod:`umamba_seg.architectures.unet_parts`);
a *mixer* (``mamba``: a Mamba layer ``mamba(LN(x))``; ``vil``: a Vision-LSTM block
``x + ViLLayer(LN(x))``; ``none``: the ablation without either) runs on flattened
feature maps at the places a *placement* chooses:

* ``bottleneck`` (the *Bot* networks): one mixer on the last encoder stage's output,
  voxels as tokens, registered as ``mamba_layer`` (U-Mamba) or ``xlstm`` (xLSTM-UNet);
* ``encoder`` (the *Enc* networks): a layer after each encoder stage as ``stage_layers``
  says: ``"mixer"``, ``"conv"`` (one more ``BasicBlockD``) or ``"none"``, registered as
  ``encoder.mamba_layers`` / ``encoder.xlstm_layers``. A stage with no more voxels than
  channels uses the channels as tokens (the voxels are then the features).

The stage rules are the authors' (:data:`STAGE_RULES`): U-Mamba Enc has a Mamba layer
after every stage in 3D and after alternate stages ending with the last in 2D;
xLSTM-UNet Enc has a ``BasicBlockD`` after stages 0-2 and ViL after the others in 3D,
and in 2D a ``BasicBlockD`` after stage 1 and ViL after alternate stages from 2 on,
ending with the last. In 2D both authors' decoders leave out the finest skip
(``concat_finest_skip=False``). Block counts (one residual block in the coarse half of
the encoder and in the finest decoder stages) are theirs too (:func:`umamba_block_counts`).

State dicts: module names and nesting are the authors', so every key and shape of
theirs is a key and shape here, except the two tensors of the ``nn.LayerNorm`` that
xLSTM-UNet's ViL wrapper creates and never uses (:func:`authors_unused_keys`); nothing
needs renaming. Computation: the same up to the mixer ops (our selective scan and
chunkwise mLSTM), with the mixer in fp32 under AMP as theirs.

Where we deliberately differ: the layer's output goes back to the input's dtype under
AMP (theirs stays fp32); a plan's dropout is honoured (theirs drops it); the networks
are described by their plan's ``arch_kwargs`` alone (``stage_layers``, block counts,
mixer settings), so other rules can be planned without code.
"""

from __future__ import annotations

import math
import pydoc
import re
from collections.abc import Iterable, Sequence
from functools import partial

import torch
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from umamba_seg.architectures.presets import TokenMixerPreset, UMambaPreset, XLSTMPreset, load_preset
from umamba_seg.architectures.registry import register_with_ablation
from umamba_seg.architectures.unet_parts import ResidualDecoder, ResidualEncoder
from umamba_seg.errors import UserInputError
from umamba_seg.nn.mamba_mixer import MambaMixer
from umamba_seg.nn.ssm_config import SSMConfig
from umamba_seg.nn.token_layer import TokenLayer, make_token_layer
from umamba_seg.nn.vil_layer import ViLBlock

MIXERS = ("mamba", "vil", "none")
VARIANTS = {"bottleneck": "bot", "encoder": "enc"}  # placement -> the networks' name suffix (Bot, Enc)
PLACEMENTS = tuple(VARIANTS)
# the authors' attribute names: (bottleneck layer, per-stage layers in the encoder)
LAYER_NAMES = {"mamba": ("mamba_layer", "mamba_layers"), "vil": ("xlstm", "xlstm_layers")}
# the preset whose defaults configure each mixer (``mixer_kwargs`` left out of the plan)
MIXER_PRESETS: dict[str, type[TokenMixerPreset]] = {"mamba": UMambaPreset, "vil": XLSTMPreset}


def _ends_with_last(s: int, n_stages: int) -> bool:
    """Alternate stages, chosen so that the last stage is one of them."""
    return s % 2 != n_stages % 2


def all_stages(n_stages: int) -> list[str]:
    """U-Mamba Enc 3D: a mixer after every stage."""
    return ["mixer"] * n_stages


def alternate_stages(n_stages: int) -> list[str]:
    """U-Mamba Enc 2D: a mixer after alternate stages, ending with the last."""
    return ["mixer" if _ends_with_last(s, n_stages) else "none" for s in range(n_stages)]


def xlstm_enc_3d_stages(n_stages: int) -> list[str]:
    """xLSTM-UNet Enc 3D: ``BasicBlockD`` after stages 0-2, a mixer after the others."""
    return ["conv" if s < 3 else "mixer" for s in range(n_stages)]


def xlstm_enc_2d_stages(n_stages: int) -> list[str]:
    """xLSTM-UNet Enc 2D: ``BasicBlockD`` after stage 1, a mixer after alternate stages
    from 2 on ending with the last, nothing after the others."""
    return [
        "mixer" if s > 1 and _ends_with_last(s, n_stages) else "conv" if s == 1 else "none" for s in range(n_stages)
    ]


STAGE_RULES = {
    "all": all_stages,
    "alternate": alternate_stages,
    "xlstm_enc_3d": xlstm_enc_3d_stages,
    "xlstm_enc_2d": xlstm_enc_2d_stages,
}


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


_UNUSED = re.compile(r"(^|\.)(xlstm|xlstm_layers\.\d+)\.norm\.(weight|bias)$")


def authors_unused_keys(keys: Iterable[str]) -> list[str]:
    """The keys of an authors' state dict that have no tensor here.

    Only xLSTM-UNet has any: its ViL wrapper (``xlstm``, ``encoder.xlstm_layers.<s>``, and
    their copies under ``decoder.encoder``) creates an ``nn.LayerNorm`` (``norm.weight``,
    ``norm.bias``) that its forward never calls. Every other key of the authors' U-Mamba
    and xLSTM-UNet state dicts is a key of ours with the same shape.
    """
    return [k for k in keys if _UNUSED.search(k)]


def mixer_layer(
    mixer: str, channels: int, feature_map_size: Sequence[int] | None, channel_tokens: bool, fp32: bool, **kwargs
) -> TokenLayer:
    """The token layer of ``mixer`` for a map of ``channels`` x ``feature_map_size``.

    ``mamba``: ``mamba(LN(x))`` (the authors' ``MambaLayer``: ``norm``, ``mamba``), ``kwargs``
    the :class:`~umamba_seg.nn.ssm_config.SSMConfig`; ``vil``: ``x + ViLLayer(LN(x))`` (their
    ViL wrapper: ``vil`` = ``norm`` + ``layer``), ``kwargs`` the ViL block's. With
    ``channel_tokens`` and a known size, U-Mamba's rule picks the token axis.
    """
    if mixer == "mamba":
        config = SSMConfig(**kwargs)
        factory, options = partial(MambaMixer, config=config), {"mixer_name": "mamba"}
    elif mixer == "vil":
        factory, options = partial(ViLBlock, **kwargs), {"norm": False, "mixer_name": "vil"}
    else:
        raise ValueError(f"mixer must be 'mamba' or 'vil' here, got {mixer!r}")
    return make_token_layer(channels, feature_map_size, factory, channel_tokens, fp32=fp32, **options)


def _resolve(op: type | str | None) -> type | None:
    return pydoc.locate(op) if isinstance(op, str) else op


class TokenMixerUNet(nn.Module):
    """The residual U-Net with token mixers; see the module docstring.

    Subclasses fix the family's ``preset`` and the default placement (class keywords ``preset``
    and ``placement``, which also register them). The preset's mixer is
    the default mixer and names the layers (the authors' attribute names, kept by the
    ``none`` ablation); its defaults fill what the plan leaves out: the stage rules, the
    finest skip, the mixer's settings and precision.
    """

    preset: TokenMixerPreset = UMambaPreset()
    default_placement: str = "bottleneck"

    def __init_subclass__(cls, preset: TokenMixerPreset | None = None, placement: str | None = None, **kwargs) -> None:
        """``class UMambaBot(TokenMixerUNet, preset=UMambaPreset(), placement="bottleneck")``: a
        network of the family, registered with its ablation (:func:`register_network`)."""
        super().__init_subclass__(**kwargs)
        if preset is None:
            return
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        cls.preset, cls.default_placement = preset, placement
        register_network(cls)

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
        mixer: str | None = None,
        placement: str | None = None,
        stage_layers: Sequence[str] | None = None,
        concat_finest_skip: bool | None = None,
        mixer_kwargs: dict | None = None,
        mixer_fp32: bool | None = None,
        conv_bias: bool = True,
        norm_op: type[nn.Module] | str | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | str | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | str | None = None,
        nonlin_kwargs: dict | None = None,
        **unknown,
    ) -> None:
        super().__init__()
        if unknown:  # e.g. mamba_stages, use_ssm, upsample: plans of the networks before they matched the authors'
            raise UserInputError(
                f"the plans' arch_kwargs for {type(self).__name__} have keys this version does not know: "
                f"{', '.join(sorted(unknown))}",
                "the plans file's configurations.<config>.architecture",
                "plan again with this version (umamba-seg plan-and-preprocess -d ID -a ARCH); "
                "models trained on the old plans do not load into these networks",
            )
        conv_op = _resolve(conv_op)
        dim = convert_conv_op_to_dim(conv_op)
        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        self.mixer = self.preset.mixer if mixer is None else mixer
        self.placement = self.default_placement if placement is None else placement
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.placement == "encoder":
            if stage_layers is None:
                stage_layers = STAGE_RULES[self.preset.stage_rule(dim)](n_stages)
            if self.mixer != "none" and "mixer" in stage_layers and patch_size is None:
                raise ValueError("the encoder's token layers need the plan's patch_size in arch_kwargs")
        self.stage_layers = None if stage_layers is None else list(stage_layers)
        if concat_finest_skip is None:
            concat_finest_skip = self.preset.finest_skip(dim)
        self.concat_finest_skip = bool(concat_finest_skip)
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]
        if self.mixer != "none":  # settings the plan leaves out: the mixer's preset defaults
            mixer_preset = MIXER_PRESETS[self.mixer]()
            mixer_kwargs = {**mixer_preset.mixer_kwargs(), **(mixer_kwargs or {})}
            mixer_fp32 = mixer_preset.mixer_fp32 if mixer_fp32 is None else mixer_fp32
        make_mixer = partial(mixer_layer, self.mixer, fp32=bool(mixer_fp32), **(mixer_kwargs or {}))
        bottleneck_name, stages_name = LAYER_NAMES[self.preset.mixer]

        self.encoder = ResidualEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_blocks_per_stage,
            conv_bias, _resolve(norm_op), norm_op_kwargs, _resolve(dropout_op), dropout_op_kwargs, _resolve(nonlin),
            nonlin_kwargs, patch_size=patch_size, stage_layers=self.stage_layers,
            mixer_factory=None if self.mixer == "none" else partial(make_mixer, channel_tokens=True),
            stage_layers_name=stages_name,
        )  # fmt: skip
        self.bottleneck_name = None
        if self.placement == "bottleneck" and self.mixer != "none":
            self.bottleneck_name = bottleneck_name
            self.add_module(bottleneck_name, make_mixer(features_per_stage[-1], None, channel_tokens=False))
        self.decoder = ResidualDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, self.concat_finest_skip
        )
        # nnU-Net's He init touches only Conv2d/3d (and transposed): the token mixers keep their own
        self.apply(InitWeights_He(1e-2))

    @classmethod
    def planned_kwargs(
        cls, cnn_kwargs: dict, patch_size: Sequence[int], use_ssm: bool = True, size: str = "default"
    ) -> dict:
        """``arch_kwargs`` of this network from the CNN plan's ``arch_kwargs``, its patch size and
        the family's preset at ``size`` (:mod:`~umamba_seg.architectures.presets`), whose mixer
        (``"mamba"`` or ``"vil"``) it plans at the class's placement; ``use_ssm=False`` plans
        ``mixer="none"`` (the ``*_nossm`` networks), keeping the mixer's settings in the plan for
        reference."""
        preset = load_preset(cls.preset.family, size)
        if not isinstance(preset, TokenMixerPreset):
            raise ValueError(f"the {cls.preset.family} preset is not a token-mixer U-Net's")
        n = int(cnn_kwargs["n_stages"])
        dim = len(patch_size)

        def per_stage(value: Sequence[int] | int, count: int) -> list[int]:
            return [int(value)] * count if isinstance(value, int) else [int(v) for v in value]

        enc_blocks, dec_blocks = umamba_block_counts(
            n,
            per_stage(cnn_kwargs.get("n_blocks_per_stage", cnn_kwargs.get("n_conv_per_stage")), n),
            per_stage(cnn_kwargs["n_conv_per_stage_decoder"], n - 1),
        )
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
            mixer=preset.mixer if use_ssm else "none",
            placement=cls.default_placement,
            stage_layers=STAGE_RULES[preset.stage_rule(dim)](n) if cls.default_placement == "encoder" else None,
            concat_finest_skip=preset.finest_skip(dim),
            mixer_kwargs=preset.mixer_kwargs(),
            mixer_fp32=preset.mixer_fp32,
        )
        return kwargs

    @property
    def bottleneck_layer(self) -> nn.Module | None:
        """The Bot networks' mixer on the bottleneck (``None`` elsewhere)."""
        return None if self.bottleneck_name is None else self._modules[self.bottleneck_name]

    @property
    def token_layers(self) -> list[TokenLayer]:
        """Every token-mixing layer, encoder order."""
        return [m for m in self.modules() if isinstance(m, TokenLayer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = self.encoder(x)
        layer = self.bottleneck_layer
        if layer is not None:
            skips[-1] = layer(skips[-1])
        return self.decoder(skips)


def register_network(cls: type[TokenMixerUNet]) -> None:
    """Register ``<family>_<bot|enc>`` (``cls`` with its preset and default placement) and its
    ``_nossm`` ablation; the description is the first line of the class docstring."""
    family = cls.preset.family
    name = f"{family}_{VARIANTS[cls.default_placement]}"
    text = (cls.__doc__ or name).splitlines()[0].rstrip(".")
    ablation = f"{text} without its token mixer (ablation)"
    register_with_ablation(cls, family, cls.planned_kwargs, text, ablation, name=name)
