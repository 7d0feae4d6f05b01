"""Issue 8: SegMamba (2D and 3D) built from nnunetv2 plans, its size, and its CLI run."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from tests.architectures.cli_runs import assert_every_case_predicted, planned_plans
from tests.architectures.test_umamba import SSM_PARAMS
from tests.helpers import as_stored, check_bf16_backward, check_deep_supervision, network_from_block, plain_cnn_block
from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.architectures import registry
from umamba_seg.architectures.segmamba import SegMamba, adjust_patch
from umamba_seg.nn.tri_oriented import TriOrientedMamba

SMALL = {"feature_size": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "hidden_size": 32}


def authors_segmamba_parameters(in_ch: int, out_ch: int, feats=(48, 96, 192, 384), depths=(2, 2, 2, 2),
                                hidden: int = 768) -> int:  # fmt: skip
    """Parameter count of ge-xing/SegMamba's 3D network, written out from its structure."""

    def conv(i, o, k):  # 3D conv with bias
        return i * o * k**3 + o

    def mamba(c):  # Mamba with bimamba v3: shared in/out projections, three scan branches
        d, r, n = 2 * c, math.ceil(c / 16), 16
        branch = (d * 4 + d) + d * (r + 2 * n) + (r * d + d) + d * n + d
        return c * 2 * d + 3 * branch + d * c

    def res_block(i, o):  # MONAI UnetResBlock: two 3^3 convs (no bias), IN (no affine), 1^3 shortcut if i != o
        return i * o * 27 + o * o * 27 + (i * o if i != o else 0)

    total = conv(in_ch, feats[0], 7) + sum(conv(feats[i], feats[i + 1], 2) for i in range(3))
    for c, depth in zip(feats, depths):
        total += 2 * conv(c, c, 3) + 2 * conv(c, c, 1)  # GSC
        total += depth * (2 * c + mamba(c))  # LayerNorm + ToM
        total += conv(c, 2 * c, 1) + conv(2 * c, c, 1)  # channel MLP
    skips = [(in_ch, feats[0]), (feats[0], feats[1]), (feats[1], feats[2]), (feats[2], feats[3]), (feats[3], hidden)]
    total += sum(res_block(i, o) for i, o in skips)
    ups = [(hidden, feats[3]), (feats[3], feats[2]), (feats[2], feats[1]), (feats[1], feats[0])]
    total += sum(i * o * 8 + res_block(2 * o, o) for i, o in ups)  # transposed conv 2^3 (no bias) + res block
    total += res_block(feats[0], feats[0]) + conv(feats[0], out_ch, 1)
    return total


def build(dim: int, patch: list[int], deep_supervision: bool = True, use_ssm: bool = True, **overrides):
    name = "segmamba" if use_ssm else "segmamba_nossm"
    cnn = plain_cnn_block(dim, [4, 8, 16], [[1] * dim, [2] * dim, [2] * dim])
    spec = registry.get(name)
    block = spec.architecture_block(cnn, spec.adjust_patch(patch))
    block["arch_kwargs"].update(overrides)
    block = as_stored(block)
    return network_from_block(block, 2, 3, deep_supervision=deep_supervision), block


def test_reference_configuration_has_the_authors_parameter_count():
    """4 in / 4 out, features [48, 96, 192, 384], depths 2, bottleneck 768: 67.4 M in the
    authors' code; ours within 2% (exact, apart from the unused deep-supervision heads)."""
    net = SegMamba(4, 4, deep_supervision=False)
    total = sum(p.numel() for p in net.parameters())
    heads = sum(p.numel() for p in net.decoder.ds_heads.parameters())
    assert abs(total - 67.4e6) / 67.4e6 < 0.02, total
    assert total - heads == authors_segmamba_parameters(4, 4)
    mixers = [m for m in net.modules() if isinstance(m, TriOrientedMamba)]
    assert len(mixers) == 8 and all(len(m.branches) == 3 for m in mixers)


@pytest.mark.parametrize("dim,patch", [(2, [32, 48]), (3, [32, 32, 32])])
def test_from_plans_deep_supervision_shapes_and_gradients(dim, patch):
    torch.manual_seed(0)
    net, block = build(dim, patch, **SMALL)
    kw = block["arch_kwargs"]
    assert kw["patch_size"] == patch and kw["strides"] == [[1] * dim] + [[2] * dim] * 4
    batch = 2 if dim == 2 else 1

    def ssm_gradients_reach_every_stage() -> None:
        ssm = {n: p for n, p in net.named_parameters() if n.endswith(SSM_PARAMS)}
        assert len(ssm) == len(SSM_PARAMS) * 3 * 4  # three branches in each of the four stages' layer
        for name, p in ssm.items():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    check_deep_supervision(net, kw["strides"], torch.randn(batch, 2, *patch), 3, ssm_gradients_reach_every_stage)


def test_default_plan_builds_the_authors_widths_in_2d():
    net, block = build(2, [64, 64], deep_supervision=False)
    kw = block["arch_kwargs"]
    assert kw["feature_size"] == [48, 96, 192, 384] and kw["hidden_size"] == 768 and kw["depths"] == [2, 2, 2, 2]
    assert kw["conv_op"] == "torch.nn.modules.conv.Conv2d" and block["_kw_requires_import"] == ["conv_op"]
    assert isinstance(net.encoder.downsample_layers[0], torch.nn.Conv2d)
    with torch.no_grad():
        assert list(net(torch.randn(1, 2, 32, 32)).shape) == [1, 3, 32, 32]


def test_patch_is_not_fixed_and_must_divide_by_16():
    """Slice counts come from the map at run time: one network runs any patch divisible by 16."""
    assert adjust_patch([44, 50, 7]) == [48, 48, 32] and adjust_patch([64, 64]) == [64, 64]
    net, block = build(3, [32, 32, 32], deep_supervision=False, **SMALL)
    assert block["arch_kwargs"]["patch_size"] == [32, 32, 32]
    net.eval()
    with torch.no_grad():
        for shape in ([32, 32, 32], [48, 16, 32]):
            assert list(net(torch.randn(1, 2, *shape)).shape) == [1, 3, *shape]
        with pytest.raises(ValueError, match="divisible by 16"):
            net(torch.randn(1, 2, 32, 32, 24))
    with pytest.raises(ValueError, match="strides"):
        SegMamba(1, 2, conv_op=torch.nn.Conv3d, strides=[[1, 1, 1], [1, 2, 2]], **SMALL)


def test_nossm_ablation_replaces_every_mamba_layer_with_identity():
    full, _ = build(3, [32, 32, 32], **SMALL)
    ablated, block = build(3, [32, 32, 32], use_ssm=False, **SMALL)
    assert block["arch_kwargs"]["use_ssm"] is False and not registry.get("segmamba_nossm").has_ssm
    assert all(isinstance(s, torch.nn.Identity) for s in ablated.encoder.stages)
    mamba = sum(p.numel() for p in full.encoder.stages.parameters())
    assert mamba > 0
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in ablated.parameters()) == mamba
    assert set(ablated.state_dict()) < set(full.state_dict())


def test_bf16_autocast_forward_backward_is_finite():
    torch.manual_seed(0)
    patch = [32, 32]
    net, _ = build(2, patch, **SMALL)
    check_bf16_backward(net, torch.randn(1, 2, *patch))


@pytest.mark.slow
def test_cli_plan_train_predict(tmp_path, raw_2d_dataset):
    workdir = tmp_path / "workdir"
    shutil.copytree(raw_2d_dataset, workdir / "raw" / raw_2d_dataset.name)
    raw = workdir / "raw" / raw_2d_dataset.name
    ds_id = raw.name[7:10]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", "segmamba", "-c", "2d", "-np", "1", "--workdir", workdir)
    _, plans = planned_plans(workdir, raw.name, "segmamba")
    conf = plans["configurations"]["2d"]
    assert conf["architecture"]["network_class_name"] == "umamba_seg.architectures.segmamba.SegMamba"
    assert all(p % 16 == 0 for p in conf["patch_size"])
    run_cli(*train_args(workdir, ds_id, "2d", "0", "-a", "segmamba", *TINY_SCHEDULE))
    out = tmp_path / "pred"
    run_cli(*predict_args(workdir, raw / "imagesTs", out, ds_id, "2d", "-a", "segmamba", "-f", "0", "--no-tta"))
    assert_every_case_predicted(raw, out)
