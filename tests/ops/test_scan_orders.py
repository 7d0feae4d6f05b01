"""Scan orders are permutations; scan/merge are exact inverses and agree with perm/inv."""

from __future__ import annotations

import math

import pytest
import torch

from umamba_seg.ops.scan_orders import (
    ScanOrder,
    axis_permuted_order,
    cross_merge,
    cross_scan,
    cross_scan_orders,
    inter_slice_order,
    merge,
    reversed_order,
    row_major_order,
    scan,
)

SHAPES = [(5,), (3, 4), (4, 1), (2, 3, 5), (3, 2, 2, 2)]


def _all_orders(shape):
    orders = [row_major_order(shape), reversed_order(shape)] + cross_scan_orders(shape)
    orders.append(inter_slice_order(shape))
    orders.append(inter_slice_order(shape).reversed())
    if len(shape) >= 2:
        orders.append(axis_permuted_order(shape, list(reversed(range(len(shape))))))
    return orders


@pytest.mark.parametrize("shape", SHAPES)
def test_every_order_is_a_permutation_with_inverse(shape):
    L = math.prod(shape)
    for o in _all_orders(shape):
        assert sorted(o.perm.tolist()) == list(range(L)), o.name
        assert torch.equal(o.perm[o.inv], torch.arange(L)), o.name
        assert torch.equal(o.inv[o.perm], torch.arange(L)), o.name


@pytest.mark.parametrize("shape", SHAPES)
def test_scan_matches_perm_and_merge_inverts(shape):
    x = torch.randn(2, 3, *shape)
    flat = x.reshape(2, 3, -1)
    for o in _all_orders(shape):
        y = scan(x, o)
        assert y.shape == (2, 3, math.prod(shape))
        assert torch.equal(y, flat[..., o.perm]), o.name
        assert torch.equal(merge(y, o), flat), o.name
        assert torch.equal(merge(y, o, spatial=True), x), o.name
        # (B, C, L) input is read as row-major
        assert torch.equal(scan(flat, o), y), o.name
        assert torch.equal(y[..., o.inv], flat), o.name


def test_known_2d_orders_match_vmamba_cross_scan():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    orders = cross_scan_orders((2, 3))
    assert [o.name for o in orders] == ["row_major", "axes_10", "row_major_rev", "axes_10_rev"]
    got = [scan(x, o)[0, 0].tolist() for o in orders]
    assert got[0] == [0, 1, 2, 3, 4, 5]
    assert got[1] == [0, 3, 1, 4, 2, 5]  # column-major
    assert got[2] == [5, 4, 3, 2, 1, 0]
    assert got[3] == [5, 2, 4, 1, 3, 0]


def test_3d_cross_scan_has_six_distinct_orders_each_axis_innermost_once():
    shape = (2, 3, 4)
    orders = cross_scan_orders(shape)
    assert len(orders) == 6
    perms = {tuple(o.perm.tolist()) for o in orders}
    assert len(perms) == 6
    innermost = sorted(o.axes[-1] for o in orders[:3])
    assert innermost == [0, 1, 2]
    assert len(cross_scan_orders(shape, directions=1)) == 3


def test_inter_slice_visits_same_position_across_slices():
    # SegMamba: chunk the sequence into slices, stack on the last dim, flatten
    shape = (4, 2, 3)
    x = torch.randn(1, 2, *shape)
    flat = x.reshape(1, 2, -1)
    ref = torch.stack(flat.chunk(4, dim=-1), dim=-1).flatten(-2)
    o = inter_slice_order(shape)
    assert torch.equal(scan(x, o), ref)
    # with n_slices = first axis it equals the rotation that makes that axis innermost
    assert torch.equal(o.perm, axis_permuted_order(shape, (1, 2, 0)).perm)
    # a different chunk count still makes a permutation
    o2 = inter_slice_order(shape, n_slices=8)
    assert torch.equal(scan(x, o2), torch.stack(flat.chunk(8, dim=-1), dim=-1).flatten(-2))
    with pytest.raises(ValueError):
        inter_slice_order(shape, n_slices=5)


def test_cross_scan_and_merge_sum_back_in_place():
    shape = (3, 4, 2)
    x = torch.randn(2, 5, *shape, requires_grad=True)
    orders = cross_scan_orders(shape)
    ys = cross_scan(x, orders)
    assert ys.shape == (2, 6, 5, 24)
    out = cross_merge(ys, orders, spatial=True)
    assert torch.allclose(out, 6 * x)
    out.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 6.0))


def test_shape_mismatch_raises():
    o = row_major_order((3, 4))
    with pytest.raises(ValueError):
        scan(torch.randn(1, 1, 3, 5), o)
    with pytest.raises(ValueError):
        cross_merge(torch.randn(1, 3, 1, 12), cross_scan_orders((3, 4)))
    with pytest.raises(ValueError):
        ScanOrder("bad", (2, 2), (2, 2), (0, 0))
