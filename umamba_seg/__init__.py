"""umamba-seg: self-configuring Mamba/xLSTM medical image segmentation on nnU-Net v2.

Extends (never forks) nnunetv2: our plans name our networks by import path, so the
stock nnU-Net trainer and predictor can run them too. Sequence layers run on our own
Triton scan kernels on GPU and on vectorised PyTorch on CPU.
"""

__version__ = "0.1.0"
