"""SegMamba's tri-orientated Mamba (ToM) mixer: ``(B, L, C) -> (B, L, C)`` on a grid.

Shared in_proj (-> ``x``, gate ``z``) and out_proj, with three scan branches, each with
its own conv1d/x_proj/dt_proj/A/D (:class:`~umamba_seg.nn.ssm_branch.SelectiveSSMBranch`):

* forward: row-major order,
* reversed: row-major walked backwards,
* inter-slice: position ``p`` of every slice along the first spatial axis, then ``p+1``
  (:func:`umamba_seg.ops.scan_orders.inter_slice_order`); in 2D the slices are rows, so
  this is the column scan.

Each branch output is put back in row-major order and the three are summed, then gated
by ``silu(z)``. SegMamba gates each branch inside its scan; since ``z`` is permuted with
the branch and un-permuted after, ``sum_k P_k^-1(y_k * P_k silu(z)) = (sum_k P_k^-1 y_k) *
silu(z)`` exactly, so gating once is the same function with less work. The slice count
is the first spatial size of the map at run time (the authors hard-code it for 128^3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from umamba_seg.nn.mamba_projections import MambaProjections
from umamba_seg.nn.ssm_branch import SelectiveSSMBranch
from umamba_seg.nn.ssm_config import SSMConfig
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.ops.scan_orders import ScanOrder, inter_slice_order, merge, reversed_order, row_major_order, scan

BRANCHES = ("row_major", "reversed", "inter_slice")


def tri_oriented_orders(spatial_shape: Sequence[int]) -> list[ScanOrder]:
    """The three ToM scan orders of a grid, in :data:`BRANCHES` order."""
    return [row_major_order(spatial_shape), reversed_order(spatial_shape), inter_slice_order(spatial_shape)]


class TriOrientedMamba(TokenMixer, MambaProjections):
    """ToM mixer; needs the spatial shape of the token grid in ``forward``."""

    def __init__(self, d_model: int, config: SSMConfig) -> None:
        super().__init__()
        self.add_in_proj(d_model, config)
        self.branches = nn.ModuleDict({name: SelectiveSSMBranch(d_model, config) for name in BRANCHES})
        self.add_out_proj(config)

    @property
    def state_size(self) -> int:
        """One scan state per branch."""
        return sum(branch.state_size for branch in self.branches.values())

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``x``: ``(B, L, d_model)`` in row-major order of a grid of ``spatial_shape``."""
        if spatial_shape is None:
            raise ValueError("TriOrientedMamba needs the spatial shape of the token grid")
        u, z = self.project_in(x)
        y = None
        for name, order in zip(BRANCHES, tri_oriented_orders(spatial_shape)):
            y_k = merge(self.branches[name](scan(u, order).contiguous()), order)
            y = y_k if y is None else y + y_k
        return self.project_out(y * F.silu(z))
