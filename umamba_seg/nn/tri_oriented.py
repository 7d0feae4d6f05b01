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

from umamba_seg.nn.ssm_branch import SelectiveSSMBranch, resolve_dt_rank
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.ops.scan_orders import ScanOrder, inter_slice_order, merge, reversed_order, row_major_order, scan

BRANCHES = ("row_major", "reversed", "inter_slice")


def tri_oriented_orders(spatial_shape: Sequence[int]) -> list[ScanOrder]:
    """The three ToM scan orders of a grid, in :data:`BRANCHES` order."""
    return [row_major_order(spatial_shape), reversed_order(spatial_shape), inter_slice_order(spatial_shape)]


class TriOrientedMamba(TokenMixer):
    """ToM mixer; needs the spatial shape of the token grid in ``forward``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        bias: bool = False,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_inner = int(expand * d_model)
        rank = resolve_dt_rank(dt_rank, d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.branches = nn.ModuleDict(
            {name: SelectiveSSMBranch(self.d_inner, d_state, d_conv, rank, conv_bias=conv_bias) for name in BRANCHES}
        )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    @property
    def state_size(self) -> int:
        """One scan state per branch."""
        return sum(branch.state_size for branch in self.branches.values())

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """``x``: ``(B, L, d_model)`` in row-major order of a grid of ``spatial_shape``."""
        if spatial_shape is None:
            raise ValueError("TriOrientedMamba needs the spatial shape of the token grid")
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2 * d_inner, L)
        u, z = xz.chunk(2, dim=1)
        y = None
        for name, order in zip(BRANCHES, tri_oriented_orders(spatial_shape)):
            y_k = merge(self.branches[name](scan(u, order).contiguous()), order)
            y = y_k if y is None else y + y_k
        y = y * F.silu(z)
        return self.out_proj(y.transpose(1, 2))
