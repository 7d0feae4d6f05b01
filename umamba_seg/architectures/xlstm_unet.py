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
Each class registers itself with its class keywords (``xlstm_bot``/``xlstm_enc`` and their
``_nossm`` ablations; :meth:`TokenMixerUNet.__init_subclass__`), described by its docstring.
"""

from __future__ import annotations

from umamba_seg.architectures.presets import XLSTMPreset
from umamba_seg.architectures.token_mixer_unet import TokenMixerUNet


class XLSTMUNetBot(TokenMixerUNet, preset=XLSTMPreset(), placement="bottleneck"):
    """xLSTM-UNet Bot: residual U-Net, ViL on the bottleneck."""


class XLSTMUNetEnc(TokenMixerUNet, preset=XLSTMPreset(), placement="encoder"):
    """xLSTM-UNet Enc: residual U-Net, ViL after the encoder stages."""
