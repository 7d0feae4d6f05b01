"""Base class of every module that mixes information along a token sequence.

The networks here are convolutional U-Nets with sequence models in some stages: Mamba
mixers and their scan branches (U-Mamba), the tri-orientated Mamba (SegMamba), the
cross-scan SSM and its VSS block (VM-UNet), the ViL layer and block (xLSTM-UNet), and the
token layer that runs any of them on a feature map. They all derive from
:class:`TokenMixer`, so code that needs to tell them apart from convolutions does it with
``isinstance`` instead of by module name: the planner's memory model counts what they
save for backward as the *token mixer* part of a training step's activations.

What a mixer states about itself (the sizes a planner can read without running it):

* ``d_model``: the features of one token it reads and writes;
* ``state_size``: the elements of recurrent state one sequence carries through the mixer
  (per sample; summed over its scans, heads and directions; 0 for a mixer without one).

A wrapper (token layer, VSS block, ViL block) is a mixer too: it reports the state of the
mixer it wraps, and what it saves around it (its norm, the fp32 copy) counts with it.
"""

from __future__ import annotations

import abc

from torch import nn

__all__ = ["TokenMixer"]


class TokenMixer(nn.Module, metaclass=abc.ABCMeta):
    """A module that mixes tokens along a sequence; subclasses set ``d_model`` and define
    :attr:`state_size` (see the module docstring)."""

    d_model: int

    @property
    @abc.abstractmethod
    def state_size(self) -> int:
        """Elements of recurrent state per sequence (per sample)."""
