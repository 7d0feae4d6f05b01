"""VM-UNet: parameter count vs the authors' layout, cross-scan correctness, nnunetv2 plumbing."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.architectures.cli_runs import assert_every_case_predicted, shrink_plans
from tests.helpers import check_deep_supervision, network_from_block
from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.architectures import registry
from umamba_seg.architectures.presets import VMUNetPreset
from umamba_seg.architectures.vmunet import VMUNet, accepted_patch, vmunet_strides
from umamba_seg.nn.cross_scan import CrossScanSSM
from umamba_seg.nn.patch_tokens import PatchExpand, PatchMerging
from umamba_seg.ops.selective_scan import selective_scan_ref

TINY = dict(dims=[8, 16, 16, 16], depths=[1, 1, 1, 1], depths_decoder=[1, 1, 1, 1], d_state=4, drop_path_rate=0.0)


def _authors_param_count(in_ch, classes, dims, depths, depths_dec, n=16, K=4, k=3):
    """Parameter count of JCruan519/VM-UNet's VSSM (2D), written out layer by layer."""

    def ss2d(c):
        e, r = 2 * c, math.ceil(c / 16)
        return c * 2 * e + e * k * k + e + K * (r + 2 * n) * e + K * e * r + K * e + K * e * n + K * e + 2 * e + e * c

    def vss(c):
        return 2 * c + ss2d(c)

    total = in_ch * dims[0] * 16 + dims[0] + 2 * dims[0]  # patch embed conv + LN
    for i, (c, d) in enumerate(zip(dims, depths)):
        total += d * vss(c)
        if i < len(dims) - 1:
            total += 8 * c + 4 * c * 2 * c  # merging: LN(4C) + Linear(4C, 2C)
    rdims = dims[::-1]
    for j, (c, d) in enumerate(zip(rdims, depths_dec)):
        if j > 0:
            total += 2 * c * 4 * c + 2 * c  # expand: Linear(2C, 4C) + LN(C)
        total += d * vss(c)
    c0 = dims[0]
    total += c0 * 4 * c0 + 2 * (c0 // 4)  # final expand x4 + LN(C/4)
    total += (c0 // 4) * classes + classes  # 1x1 conv
    return total


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_2d_parameter_count_matches_authors():
    net = VMUNet(3, 1, deep_supervision=False)
    ours = _count(net) - _count(net.decoder.seg_heads)
    authors = _authors_param_count(3, 1, [96, 192, 384, 768], [2, 2, 2, 2], [2, 2, 2, 1])
    assert ours == authors == 27_427_561
    assert abs(ours - 27.43e6) / 27.43e6 < 0.02
    # deep-supervision heads are tiny and always present
    assert _count(net.decoder.seg_heads) == (96 + 192 + 384) * 1 + 3


def _plan_block(arch: str, patch: list[int]) -> dict:
    conv = f"torch.nn.modules.conv.Conv{len(patch)}d"
    spec = registry.get(arch)
    block = spec.architecture_block({"network_class_name": "cnn", "arch_kwargs": {"conv_op": conv}}, patch)
    json.dumps(block)  # plans must be JSON
    return block


def _build(arch: str, patch: list[int], in_ch: int, classes: int, ds: bool, **over) -> tuple[nn.Module, dict]:
    block = _plan_block(arch, patch)
    kwargs = {**block["arch_kwargs"], **TINY, **over}
    return network_from_block({**block, "arch_kwargs": kwargs}, in_ch, classes, deep_supervision=ds), kwargs


@pytest.mark.parametrize("patch", [[32, 48], [8, 16, 16]])
def test_from_plans_deep_supervision_scales_and_backward(patch):
    torch.manual_seed(0)
    net, kwargs = _build("vmunet", patch, in_ch=2, classes=3, ds=True)
    assert kwargs["conv_op"].endswith(f"Conv{len(patch)}d")
    strides = kwargs["strides"]
    assert len(strides) == len(kwargs["dims"]) + 1 and all(s == 1 for s in strides[0])
    ssm = net.encoder.stages[0][0].ssm

    def scan_and_embedding_gradients() -> None:
        for p in (ssm.x_proj_weight, ssm.dt_projs_weight, ssm.A_logs, ssm.Ds, net.encoder.embed.proj.weight):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0

    check_deep_supervision(net, strides, torch.randn(2, 2, *patch), 3, scan_and_embedding_gradients)
    assert ssm.num_directions == 2 * len(patch)


def test_nossm_ablation_drops_the_scan_and_still_trains():
    torch.manual_seed(0)
    net, kwargs = _build("vmunet_nossm", [16, 32], in_ch=1, classes=2, ds=False)
    full, _ = _build("vmunet", [16, 32], in_ch=1, classes=2, ds=False)
    assert kwargs["use_ssm"] is False
    names = {n for n, _ in net.named_parameters()}
    assert not any("x_proj" in n or "A_logs" in n for n in names)
    assert _count(net) < _count(full)
    out = net(torch.randn(1, 1, 16, 32))
    out.mean().backward()
    assert out.shape == (1, 2, 16, 32)
    assert registry.get("vmunet").has_ssm and not registry.get("vmunet_nossm").has_ssm


def _ss_core_by_hand(ssm: CrossScanSSM, x: torch.Tensor) -> torch.Tensor:
    """K separate reference scans with each direction's own parameters, merged by hand."""
    b, e = x.shape[:2]
    shape = x.shape[2:]
    nd = len(shape)
    R, n = ssm.dt_rank, ssm.d_state
    A = -torch.exp(ssm.A_logs.float()).view(ssm.num_directions, e, n)
    Ds = ssm.Ds.view(ssm.num_directions, e)
    bias = ssm.dt_projs_bias
    total = torch.zeros(b, e, *shape, dtype=torch.float64)
    k = 0
    for reverse in (False, True):
        for rot in range(nd):
            axes = [(i + rot) % nd for i in range(nd)]
            xt = x.permute(0, 1, *(a + 2 for a in axes))
            seq = xt.reshape(b, e, -1)
            if reverse:
                seq = seq.flip(-1)
            dbl = torch.einsum("bel,ce->bcl", seq, ssm.x_proj_weight[k])
            dt, Bk, Ck = dbl.split([R, n, n], dim=1)
            dt = torch.einsum("brl,er->bel", dt, ssm.dt_projs_weight[k])
            y = selective_scan_ref(
                seq.double(),
                dt.double(),
                A[k].double(),
                Bk.double(),
                Ck.double(),
                Ds[k].double(),
                delta_bias=bias[k].double(),
                delta_softplus=True,
            )
            if reverse:
                y = y.flip(-1)
            y = y.reshape(b, e, *xt.shape[2:])
            inv = [axes.index(i) for i in range(nd)]
            total += y.permute(0, 1, *(a + 2 for a in inv))
            k += 1
    return total.reshape(b, e, -1)


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4)])
def test_one_grouped_scan_equals_k_separate_scans(shape):
    torch.manual_seed(0)
    ssm = CrossScanSSM(8, dataclasses.replace(VMUNetPreset().ssm_config(), d_state=4), spatial_dims=len(shape))
    x = torch.randn(2, ssm.d_inner, *shape)
    with torch.no_grad():
        got = ssm.scan_core(x)
        want = _ss_core_by_hand(ssm, x)
    assert ssm.num_directions == 2 * len(shape)
    assert torch.allclose(got.double(), want, atol=1e-4, rtol=1e-4)


def test_patch_merging_and_expand_match_authors_layout():
    x = torch.randn(2, 4, 6, 3)
    m = PatchMerging(3, 5, 2)
    with torch.no_grad():
        m.norm.weight.fill_(1.0)
        m.norm.bias.zero_()
        cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        want = m.reduction(F.layer_norm(cat, (12,)))
        assert torch.allclose(m(x), want, atol=1e-6)
    e = PatchExpand(4, 3, 2)
    y = torch.randn(1, 2, 2, 4)
    with torch.no_grad():
        z = e.expand(y)  # (1, 2, 2, p1*p2*c)
        ref = torch.empty(1, 4, 4, 3)
        for h in range(2):
            for w in range(2):
                for p1 in range(2):
                    for p2 in range(2):
                        ref[0, 2 * h + p1, 2 * w + p2] = z[0, h, w, (p1 * 2 + p2) * 3 : (p1 * 2 + p2 + 1) * 3]
        assert torch.allclose(e(y), F.layer_norm(ref, (3,)), atol=1e-6)


def test_strides_and_accepted_patches():
    assert vmunet_strides([256, 256]) == [[1, 1], [4, 4], [2, 2], [2, 2], [2, 2]]
    # anisotropic 3D: the thin axis is downsampled only as far as it allows
    s = vmunet_strides([20, 128, 96])
    total = np.prod(np.array(s), axis=0).tolist()
    assert total == [4, 32, 16]
    assert all(p // t >= 4 for p, t in zip([20, 128, 96], total))
    for patch in ([250, 130], [20, 100, 97], [7, 3], [64, 40]):
        acc = accepted_patch(patch)
        tot = np.prod(np.array(vmunet_strides(acc)), axis=0)
        assert all(a % t == 0 for a, t in zip(acc, tot)), (patch, acc)
        assert all(2 * abs(a - p) <= t for a, p, t in zip(acc, patch, tot)), (patch, acc)  # nearest multiple
    assert accepted_patch([256, 192]) == [256, 192]
    assert registry.get("vmunet").adjust_patch([250, 130]) == accepted_patch([250, 130])


def test_bf16_autocast_forward_is_finite():
    torch.manual_seed(0)
    net, _ = _build("vmunet", [16, 16], in_ch=1, classes=2, ds=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 1, 16, 16))
    assert torch.isfinite(out.float()).all()


@pytest.mark.slow
def test_cli_plan_train_predict(cli_dataset, tmp_path):
    raw_src, workdir, ds_id, name, config = cli_dataset
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", "vmunet", "vmunet_nossm", "-c", config, "--workdir", workdir)
    for arch in ("vmunet", "vmunet_nossm"):
        plans = shrink_plans(workdir, name, arch, config, lambda kwargs: kwargs.update(TINY))
        conf = plans["configurations"][config]
        assert conf["architecture"]["network_class_name"] == "umamba_seg.architectures.vmunet.VMUNet"
        assert conf["architecture"]["arch_kwargs"]["use_ssm"] is (arch == "vmunet")
        assert conf["data_identifier"] == f"umambaPlans_{config}"  # shared with the CNN
        assert registry.get(arch).adjust_patch(conf["patch_size"]) == list(conf["patch_size"])
        assert "umamba_optimizer" not in conf["architecture"]  # the optimizer is the trainer's recipe
        if arch == "vmunet_nossm" and config != "2d":
            continue  # the ablation's plumbing is the same in 3D; save CI time
        run_cli(*train_args(workdir, ds_id, config, "0", "-a", arch, *TINY_SCHEDULE))
        fold = workdir / "results" / name / f"umambaTrainer__umambaPlans_{arch}__{config}" / "fold_0"
        assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    images = workdir / "raw" / name / "imagesTs"
    run_cli(*predict_args(workdir, images, out, ds_id, config, "-a", "vmunet", "-f", "0", "--no-tta"))
    assert_every_case_predicted(raw_src, out)


def test_memory_proxy_grows_with_patch_and_with_the_scan():
    small = VMUNet(1, 2, strides=vmunet_strides([64, 64]), **TINY)
    big = VMUNet(1, 2, strides=vmunet_strides([128, 128]), **TINY)
    nossm = VMUNet(1, 2, strides=vmunet_strides([64, 64]), use_ssm=False, **TINY)
    a, b, c = (m.compute_conv_feature_map_size(p) for m, p in ((small, [64, 64]), (big, [128, 128]), (nossm, [64, 64])))
    assert 3.5 * a < b < 4.5 * a  # activations scale with the number of voxels
    assert c < a
