"""U-Mamba (Ma et al. 2024), Bot and Enc, in 2D and 3D, constructible from nnunetv2 plans.

Both are the token-mixer U-Net (:mod:`umamba_seg.architectures.token_mixer_unet`) with
Mamba layers ``mamba(LN(x))`` (no residual around them, run in fp32), as in
bowang-lab/U-Mamba's ``UMambaBot_{2d,3d}.py`` and ``UMambaEnc_{2d,3d}.py``:

* ``UMambaBot``: one Mamba layer on the bottleneck, voxels as tokens (``mamba_layer``).
* ``UMambaEnc``: a Mamba layer after every encoder stage in 3D, after alternate stages
  ending with the last in 2D (``encoder.mamba_layers``); a stage with no more voxels than
  channels uses the channels as tokens.

Same modules, names and parameter shapes as the authors' networks built from the same
nnU-Net plan; the Mamba block is mamba-ssm's on our selective scan (no CUDA extension).
``mixer="none"`` in the plan drops every Mamba layer (``*_nossm`` ablations; Bot's and
Enc's are then the same network).
"""

from __future__ import annotations

from umamba_seg.architectures.presets import UMambaPreset
from umamba_seg.architectures.token_mixer_unet import TokenMixerUNet, register_family


class UMambaBot(TokenMixerUNet):
    """U-Mamba Bot: a Mamba layer on the bottleneck (voxels as tokens)."""

    default_placement = "bottleneck"
    preset = UMambaPreset()


class UMambaEnc(TokenMixerUNet):
    """U-Mamba Enc: Mamba layers after the encoder stages (all in 3D, alternate in 2D)."""

    default_placement = "encoder"
    preset = UMambaPreset()


_SPECS = register_family(
    "umamba", "mamba", __name__, {"bot": "UMambaBot", "enc": "UMambaEnc"},
    {"bot": "U-Mamba Bot: residual U-Net, Mamba on the bottleneck",
     "enc": "U-Mamba Enc: residual U-Net, Mamba after the encoder stages"},
)  # fmt: skip
UMAMBA_BOT, UMAMBA_BOT_NOSSM = _SPECS["umamba_bot"], _SPECS["umamba_bot_nossm"]
UMAMBA_ENC, UMAMBA_ENC_NOSSM = _SPECS["umamba_enc"], _SPECS["umamba_enc_nossm"]
