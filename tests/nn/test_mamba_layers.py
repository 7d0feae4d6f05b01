"""Issue 8: the Mamba mixer, SegMamba's tri-orientated mixer, the token layer and GSC."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from umamba_seg.architectures.presets import SegMambaPreset, UMambaPreset
from umamba_seg.nn.gsc import GSC
from umamba_seg.nn.mamba_mixer import MambaMixer
from umamba_seg.nn.ssm_branch import SelectiveSSMBranch, inverse_softplus
from umamba_seg.nn.ssm_config import SSMConfig, resolve_dt_rank
from umamba_seg.nn.token_layer import TokenLayer, make_token_layer, use_channel_tokens
from umamba_seg.nn.tri_oriented import BRANCHES, TriOrientedMamba, tri_oriented_orders
from umamba_seg.ops.scan_orders import merge, scan

SSM_PARAMS = ("A_log", "D", "dt_proj.bias", "conv1d.weight", "conv1d.bias")
# the networks' Mamba settings (mamba-ssm's: d_state 16, d_conv 4, expand 2, dt_rank auto)
UMAMBA, SEGMAMBA = UMambaPreset().ssm_config(), SegMambaPreset().ssm_config()
MIXER_CONFIG = {MambaMixer: UMAMBA, TriOrientedMamba: SEGMAMBA}


def build_mixer(cls: type, d_model: int) -> nn.Module:
    """A Mamba mixer of ``cls`` with its network's settings."""
    return cls(d_model, MIXER_CONFIG[cls])


def factory(cls: type):
    """``d_model -> mixer`` for :func:`make_token_layer`."""
    return partial(build_mixer, cls)


def mamba_param_count(d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, branches: int = 1) -> int:
    """mamba-ssm's Mamba layout (bias-free projections, conv bias), ``branches`` scan branches."""
    d_inner, rank = expand * d_model, math.ceil(d_model / 16)
    per_branch = d_inner * d_conv + d_inner + d_inner * (rank + 2 * d_state) + rank * d_inner + d_inner
    per_branch += d_inner * d_state + d_inner  # A_log, D
    return d_model * 2 * d_inner + branches * per_branch + d_inner * d_model


def test_mamba_initialisation():
    torch.manual_seed(0)
    branch = SelectiveSSMBranch(256, SSMConfig(d_state=16, d_conv=4, expand=1, dt_rank=8))
    dt = F.softplus(branch.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    assert dt.max() / dt.min() > 20  # log-uniform over the range, not a constant
    assert torch.allclose(branch.A_log.exp(), torch.arange(1, 17.0).expand(256, 16))
    assert branch.A_log.dtype == torch.float32
    assert torch.equal(branch.D, torch.ones(256))
    assert branch.dt_proj.weight.abs().max() <= 8**-0.5
    y = torch.tensor([1e-4, 1e-2, 0.5, 3.0])
    assert torch.allclose(F.softplus(inverse_softplus(y)), y, rtol=1e-5)
    assert resolve_dt_rank("auto", 48) == 3 and resolve_dt_rank(5, 48) == 5


@pytest.mark.parametrize("d_model,branches,cls", [(8, 1, MambaMixer), (48, 1, MambaMixer), (48, 3, TriOrientedMamba)])
def test_parameter_layout_matches_mamba(d_model, branches, cls):
    assert sum(p.numel() for p in build_mixer(cls, d_model).parameters()) == mamba_param_count(
        d_model, branches=branches
    )


def test_mixer_is_causal():
    """Output at t depends on inputs up to t only (causal conv1d + forward scan)."""
    torch.manual_seed(0)
    mixer = MambaMixer(8, UMAMBA).double()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    y = mixer(x)
    x2 = x.clone()
    x2[:, 11:] += torch.randn_like(x2[:, 11:])
    y2 = mixer(x2)
    assert torch.allclose(y[:, :11], y2[:, :11], atol=1e-12)
    assert not torch.allclose(y[:, 11:], y2[:, 11:])


def test_tri_oriented_equals_per_branch_gating():
    """Gating once after summing equals SegMamba's gating inside each branch's scan."""
    torch.manual_seed(0)
    shape = (3, 4, 5)
    mixer = TriOrientedMamba(8, SEGMAMBA).double()
    x = torch.randn(2, math.prod(shape), 8, dtype=torch.float64)
    u, z = mixer.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    total = 0
    for name, order in zip(BRANCHES, tri_oriented_orders(shape)):
        total = total + merge(mixer.branches[name](scan(u, order), scan(z, order)), order)
    expected = mixer.out_proj(total.transpose(1, 2))
    assert torch.allclose(mixer(x, shape), expected, atol=1e-10)


def test_tri_oriented_inter_slice_branch_scans_across_slices():
    """With only the inter-slice branch, a change in slice 0 at in-slice position p reaches
    that position in later slices but no position before p in any slice."""
    torch.manual_seed(0)
    shape = (4, 3, 3)
    mixer = TriOrientedMamba(8, SEGMAMBA).double()
    with torch.no_grad():
        for name in ("row_major", "reversed"):  # silence the other branches' outputs
            mixer.branches[name].D.zero_()
            mixer.branches[name].x_proj.weight.zero_()
    x = torch.randn(1, 36, 8, dtype=torch.float64)
    grid = lambda t: t.reshape(1, *shape, 8)  # noqa: E731
    x2 = x.clone()
    grid(x2)[0, 0, 1, 1] += 1.0  # slice 0, in-slice position 4
    diff = (grid(mixer(x2, shape)) - grid(mixer(x, shape))).abs().sum(-1)[0]  # (4, 3, 3)
    assert (diff[:, 1, 1] > 1e-8).all()  # same position, every slice
    flat = diff.reshape(4, 9)
    assert (flat[:, :4] < 1e-12).all()  # earlier in-slice positions untouched
    with pytest.raises(ValueError):
        mixer(x)


@pytest.mark.parametrize("cls,kwargs", [(MambaMixer, {}), (TriOrientedMamba, {"spatial_shape": (2, 3, 2)})])
def test_gradient_reaches_every_ssm_parameter(cls, kwargs):
    torch.manual_seed(0)
    layer = build_mixer(cls, 8)
    x = torch.randn(2, 12, 8, requires_grad=True)
    layer(x, **kwargs).square().mean().backward()
    named = dict(layer.named_parameters())
    ssm = [n for n in named if n.endswith(SSM_PARAMS)]
    assert len(ssm) == len(SSM_PARAMS) * (3 if cls is TriOrientedMamba else 1)
    for name, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_token_layer_patch_and_channel_tokens():
    torch.manual_seed(0)
    # 4 x 4 = 16 voxels > 8 channels: voxels are tokens, LN over 8 channels
    patch = make_token_layer(8, (4, 4), factory(MambaMixer))
    assert not patch.channel_token and patch.dim == 8 and patch.mixer.d_model == 8
    # 2 x 2 x 2 = 8 voxels <= 32 channels: channels are tokens, LN over 8 voxels
    chan = make_token_layer(32, (2, 2, 2), factory(MambaMixer))
    assert chan.channel_token and chan.dim == 8 and chan.norm.normalized_shape == (8,)
    assert use_channel_tokens(16, (4, 4)) and not use_channel_tokens(15, (4, 4))
    off = make_token_layer(32, (2, 2, 2), factory(MambaMixer), channel_tokens=False)
    assert not off.channel_token and off.dim == 32
    x = torch.randn(2, 32, 2, 2, 2)
    assert chan(x).shape == x.shape
    with pytest.raises(ValueError):
        chan(torch.randn(2, 32, 4, 2, 2))  # the layer is tied to the stage's voxel count


def test_token_layer_flattening_and_residual():
    """An identity mixer makes the layer LN over channels (+ x with the residual)."""

    class Identity(nn.Module):
        def forward(self, x, spatial_shape=None):
            return x

    x = torch.randn(2, 6, 3, 5)
    plain = TokenLayer(6, Identity())
    ref = F.layer_norm(x.movedim(1, -1), (6,)).movedim(-1, 1)
    assert torch.allclose(plain(x), ref, atol=1e-6)
    res = TokenLayer(6, Identity(), residual=True)
    assert torch.allclose(res(x), x + ref, atol=1e-6)
    chan = TokenLayer(15, Identity(), channel_token=True)
    ref_c = F.layer_norm(x.reshape(2, 6, 15), (15,)).reshape(x.shape)
    assert torch.allclose(chan(x), ref_c, atol=1e-6)


def test_token_layer_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = make_token_layer(8, (3, 4), factory(TriOrientedMamba), channel_tokens=False, residual=True)
    x = torch.randn(2, 8, 3, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        loss = y.float().square().mean()
    loss.backward()
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    # fp32=False lets autocast run the projections in bf16; still finite
    layer16 = make_token_layer(8, (3, 4), factory(MambaMixer), fp32=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = layer16(x)
    assert torch.isfinite(y16).all()


@pytest.mark.parametrize("conv_op,shape", [(nn.Conv2d, (2, 6, 8, 8)), (nn.Conv3d, (1, 6, 4, 4, 4))])
def test_gsc_shapes_parameters_and_residual(conv_op, shape):
    gsc = GSC(6, conv_op)
    k = 3 ** (len(shape) - 2)
    assert sum(p.numel() for p in gsc.parameters()) == 2 * (36 * k + 6) + 2 * (36 + 6)
    x = torch.randn(shape)
    assert gsc(x).shape == x.shape
    with torch.no_grad():
        gsc.fuse[0].weight.zero_()
        gsc.fuse[0].bias.fill_(-1.0)  # fuse branch -> IN(const) = 0 -> ReLU = 0
    assert torch.allclose(gsc(x), x)
