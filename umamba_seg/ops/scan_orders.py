"""N-dimensional scan orders: how a (B, C, *spatial) map becomes a 1-D token sequence.

A selective scan reads a sequence; images are grids. Each :class:`ScanOrder` is one
way to walk the grid (row-major, reversed, with the spatial axes permuted, or
SegMamba's inter-slice walk) and is exactly a permutation of the row-major flat
indices. ``perm``/``inv`` expose that permutation and its inverse as index tensors
(the definition, used by tests and by anyone who wants to gather); :func:`scan` and
:func:`merge` apply it with reshape/permute/flip views, which are exact, need no index
tensors on the device and have cheap gradients.

Every order is ``reshape(view_shape) -> permute(axes) -> flatten -> optional flip``:

* row-major:    ``view_shape = spatial shape``, ``axes = identity``
* reversed:     the same with ``reverse=True``
* axis-permuted: ``axes`` a cyclic rotation, so each spatial axis is the fastest
  (innermost) one in exactly one order; VM-UNet's cross-scan is the N rotations
  forward then the same N reversed (2D: row, column, row reversed, column reversed,
  the order of VMamba's ``CrossScan``; 3D: 6 orders)
* inter-slice:  ``view_shape = (n_slices, L // n_slices)``, ``axes = (1, 0)``: the
  same in-slice position visited across all slices, then the next position
  (SegMamba's third ToM direction; with ``n_slices`` = the first spatial size it is
  the rotation that puts the slice axis innermost).

:func:`cross_scan` / :func:`cross_merge` stack K orders into ``(B, K, C, L)`` and sum
them back in place, the layout a grouped selective scan with ``g = K`` consumes after a
reshape to ``(B, K * C, L)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

__all__ = [
    "ScanOrder",
    "row_major_order",
    "reversed_order",
    "axis_permuted_order",
    "cross_scan_orders",
    "inter_slice_order",
    "scan",
    "merge",
    "cross_scan",
    "cross_merge",
]


@dataclass(frozen=True)
class ScanOrder:
    """One walk through a grid of shape ``shape`` (spatial dims only).

    ``perm[i]`` is the row-major flat index of the ``i``-th token of the scan;
    ``inv[j]`` is the scan position of the voxel with row-major flat index ``j``.
    """

    name: str
    shape: tuple[int, ...]
    view_shape: tuple[int, ...]
    axes: tuple[int, ...]
    reverse: bool = False

    def __post_init__(self) -> None:
        if math.prod(self.view_shape) != math.prod(self.shape):
            raise ValueError(f"view_shape {self.view_shape} does not cover shape {self.shape}")
        if sorted(self.axes) != list(range(len(self.view_shape))):
            raise ValueError(f"axes {self.axes} is not a permutation of the view's {len(self.view_shape)} dims")

    @property
    def length(self) -> int:
        """Number of tokens ``L``."""
        return math.prod(self.shape)

    @cached_property
    def perm(self) -> torch.Tensor:
        """Long tensor ``(L,)``: scan position -> row-major flat index."""
        p = torch.arange(self.length).view(self.view_shape).permute(self.axes).reshape(-1)
        return p.flip(0) if self.reverse else p

    @cached_property
    def inv(self) -> torch.Tensor:
        """Long tensor ``(L,)``: row-major flat index -> scan position."""
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(self.length)
        return inv

    @cached_property
    def _inverse_axes(self) -> tuple[int, ...]:
        inv = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inv[a] = i
        return tuple(inv)

    def reversed(self) -> ScanOrder:
        """The same walk in the opposite direction."""
        name = self.name[: -len("_rev")] if self.reverse else self.name + "_rev"
        return ScanOrder(name, self.shape, self.view_shape, self.axes, not self.reverse)


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"spatial shape must be non-empty with positive sizes, got {shape}")
    return shape


def row_major_order(shape: Sequence[int]) -> ScanOrder:
    """C-order flattening (last axis fastest), the identity permutation."""
    shape = _shape(shape)
    return ScanOrder("row_major", shape, shape, tuple(range(len(shape))))


def reversed_order(shape: Sequence[int]) -> ScanOrder:
    """Row-major walked backwards."""
    return row_major_order(shape).reversed()


def axis_permuted_order(shape: Sequence[int], axes: Sequence[int]) -> ScanOrder:
    """Row-major flattening of the grid transposed by ``axes`` (last listed axis fastest)."""
    shape = _shape(shape)
    axes = tuple(int(a) for a in axes)
    return ScanOrder("axes_" + "".join(str(a) for a in axes), shape, shape, axes)


def cross_scan_orders(shape: Sequence[int], directions: int = 2) -> list[ScanOrder]:
    """VM-UNet cross-scan orders for an N-D grid: N cyclic axis rotations, then reversed.

    2D gives ``[row, column, row reversed, column reversed]`` (K = 4), 3D six orders, each
    spatial axis innermost once per direction. ``directions=1`` keeps only the forward N.
    """
    shape = _shape(shape)
    if directions not in (1, 2):
        raise ValueError(f"directions must be 1 or 2, got {directions}")
    n = len(shape)
    forward = [axis_permuted_order(shape, [(i + k) % n for i in range(n)]) for k in range(n)]
    # the rotation by 0 is row-major; name it so
    forward[0] = row_major_order(shape)
    return forward + ([o.reversed() for o in forward] if directions == 2 else [])


def inter_slice_order(shape: Sequence[int], n_slices: int | None = None) -> ScanOrder:
    """SegMamba's inter-slice order: chunk the row-major sequence into ``n_slices`` equal
    slices and visit position 0 of every slice, then position 1, ...

    ``n_slices`` defaults to the first spatial size (the slice axis); it must divide ``L``.
    """
    shape = _shape(shape)
    length = math.prod(shape)
    n_slices = shape[0] if n_slices is None else int(n_slices)
    if n_slices < 1 or length % n_slices:
        raise ValueError(f"n_slices={n_slices} must divide the number of tokens {length} of shape {shape}")
    return ScanOrder("inter_slice", shape, (n_slices, length // n_slices), (1, 0))


def _check(x: torch.Tensor, order: ScanOrder) -> None:
    if x.dim() < 3:
        raise ValueError(f"expected (B, C, *spatial) or (B, C, L), got shape {tuple(x.shape)}")
    if math.prod(x.shape[2:]) != order.length:
        raise ValueError(f"tensor of shape {tuple(x.shape)} does not match scan order of shape {order.shape}")


def scan(x: torch.Tensor, order: ScanOrder) -> torch.Tensor:
    """``(B, C, *spatial)`` or ``(B, C, L)`` (row-major) -> ``(B, C, L)`` in ``order``."""
    _check(x, order)
    b, c = x.shape[:2]
    v = x.reshape(b, c, *order.view_shape).permute(0, 1, *(a + 2 for a in order.axes))
    y = v.reshape(b, c, order.length)
    return y.flip(-1) if order.reverse else y


def merge(y: torch.Tensor, order: ScanOrder, spatial: bool = False) -> torch.Tensor:
    """Inverse of :func:`scan`: ``(B, C, L)`` in ``order`` -> row-major ``(B, C, L)``
    (or ``(B, C, *shape)`` with ``spatial=True``)."""
    _check(y, order)
    b, c = y.shape[:2]
    y = y.reshape(b, c, order.length)
    if order.reverse:
        y = y.flip(-1)
    permuted_shape = [order.view_shape[a] for a in order.axes]
    v = y.reshape(b, c, *permuted_shape).permute(0, 1, *(a + 2 for a in order._inverse_axes))
    return v.reshape(b, c, *order.shape) if spatial else v.reshape(b, c, order.length)


def cross_scan(x: torch.Tensor, orders: Sequence[ScanOrder]) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, K, C, L)``: the map read in each of the K orders."""
    return torch.stack([scan(x, o) for o in orders], dim=1)


def cross_merge(ys: torch.Tensor, orders: Sequence[ScanOrder], spatial: bool = False) -> torch.Tensor:
    """``(B, K, C, L)`` -> ``(B, C, L)`` (or ``(B, C, *shape)``): each direction put back
    in place and the K results summed."""
    if ys.dim() != 4 or ys.shape[1] != len(orders):
        raise ValueError(f"expected (B, {len(orders)}, C, L), got shape {tuple(ys.shape)}")
    out = merge(ys[:, 0], orders[0], spatial=spatial)
    for k in range(1, len(orders)):
        out = out + merge(ys[:, k], orders[k], spatial=spatial)
    return out
