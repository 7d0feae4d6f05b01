"""xLSTM-UNet (Chen et al. 2024), Bot and Enc, in 2D and 3D, constructible from nnunetv2 plans.

Both are the token-mixer U-Net (:mod:`umamba_seg.architectures.token_mixer_unet`), the
U-Mamba backbone, with Vision-LSTM blocks ``x + ViLLayer(LN(x))``
(:mod:`umamba_seg.nn.vil_layer`) in fp32, as in tianrun-chen/xLSTM-UNet-PyTorch's
``UxLSTMBot_{2d,3d}.py`` and ``UxLSTMEnc_{2d,3d}.py``:

* ``XLSTMUNetBot``: one ViL block on the bottleneck, voxels as tokens (``xlstm``).
* ``XLSTMUNetEnc`` (``encoder.xlstm_layers``): in 3D a ``BasicBlockD`` after stages 0-2
  and ViL after the others; in 2D a ``BasicBlockD`` after stage 1 and ViL after
  alternate stages from 2 on, ending with the last. A stage with no more voxels than
  channels uses the channels as tokens.

Every block scans row-wise from the first voxel, as theirs. Same modules, names and
parameter shapes as the authors' networks, except the ``nn.LayerNorm`` their ViL wrapper
creates and never uses (left out here). Where we differ: the mLSTM runs on our chunkwise
op (memory linear in the number of tokens, the same values), so 3D maps fit where the
authors' quadratic form does not. ``mixer="none"`` in the plan drops every ViL block
(``*_nossm`` ablations; Enc's keeps its extra ``BasicBlockD``).
"""

from __future__ import annotations

from umamba_seg.architectures.presets import XLSTMPreset
from umamba_seg.architectures.token_mixer_unet import TokenMixerUNet, register_family


class XLSTMUNetBot(TokenMixerUNet):
    """xLSTM-UNet Bot: a ViL block on the bottleneck (voxels as tokens)."""

    default_placement = "bottleneck"
    preset = XLSTMPreset()


class XLSTMUNetEnc(TokenMixerUNet):
    """xLSTM-UNet Enc: ViL blocks (and extra residual blocks) after the encoder stages."""

    default_placement = "encoder"
    preset = XLSTMPreset()


_SPECS = register_family(
    "xlstm", "vil", __name__, {"bot": "XLSTMUNetBot", "enc": "XLSTMUNetEnc"},
    {"bot": "xLSTM-UNet Bot: residual U-Net, ViL on the bottleneck",
     "enc": "xLSTM-UNet Enc: residual U-Net, ViL after the encoder stages"},
)  # fmt: skip
XLSTM_BOT, XLSTM_BOT_NOSSM = _SPECS["xlstm_bot"], _SPECS["xlstm_bot_nossm"]
XLSTM_ENC, XLSTM_ENC_NOSSM = _SPECS["xlstm_enc"], _SPECS["xlstm_enc_nossm"]
