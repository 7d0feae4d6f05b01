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
Each class registers itself with its class keywords (``umamba_bot``/``umamba_enc`` and their
``_nossm`` ablations; :meth:`TokenMixerUNet.__init_subclass__`), described by its docstring.
"""

from __future__ import annotations

from umamba_seg.architectures.presets import UMambaPreset
from umamba_seg.architectures.token_mixer_unet import TokenMixerUNet


class UMambaBot(TokenMixerUNet, preset=UMambaPreset(), placement="bottleneck"):
    """U-Mamba Bot: residual U-Net, Mamba on the bottleneck."""


class UMambaEnc(TokenMixerUNet, preset=UMambaPreset(), placement="encoder"):
    """U-Mamba Enc: residual U-Net, Mamba after the encoder stages."""
