"""Issue 11: the ViL layer and xLSTM-UNet Bot/Enc (2D and 3D) built from nnunetv2 plans, and their CLI run."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from umamba_seg.architectures import registry
from umamba_seg.architectures.presets import load_preset
from umamba_seg.architectures.xlstm_unet import XLSTMUNetBot, XLSTMUNetEnc, build_kwargs
from umamba_seg.atomic import write_json_atomic
from umamba_seg.nn.vil_layer import ViLBlock, ViLLayer, make_vil_blocks
from umamba_seg.ops.mlstm import mlstm_recurrent_reference

GATE_PARAMS = ("igate.weight", "igate.bias", "fgate.weight", "fgate.bias")


def cnn_architecture(dim: int, features: list[int], strides: list[list[int]]) -> dict:
    """A CNN ``architecture`` block as nnunetv2's planner writes it into plans."""
    n = len(features)
    conv = "Conv2d" if dim == 2 else "Conv3d"
    norm = "InstanceNorm2d" if dim == 2 else "InstanceNorm3d"
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": features, "conv_op": f"torch.nn.modules.conv.{conv}",
            "kernel_sizes": [[3] * dim] * n, "strides": strides, "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.{norm}", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },  # fmt: skip
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


CASES = {
    2: (cnn_architecture(2, [4, 8, 16, 32, 32], [[1, 1]] + [[2, 2]] * 4), [32, 32]),
    3: (cnn_architecture(3, [4, 8, 16, 24], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]), [8, 16, 16]),
}


def build(name: str, dim: int, deep_supervision: bool = True, in_ch: int = 2, classes: int = 3):
    cnn, patch = CASES[dim]
    block = json.loads(json.dumps(registry.get(name).architecture_block(cnn, patch)))  # as a plans file stores it
    net = get_network_from_plans(
        block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"], in_ch, classes,
        deep_supervision=deep_supervision,
    )  # fmt: skip
    return net, block, patch


def vil_layers(net: torch.nn.Module) -> list[ViLLayer]:
    return [m for m in net.modules() if isinstance(m, ViLLayer)]


# --------------------------------------------------------------------------- the ViL layer


def _vil_spec(layer: ViLLayer, x: torch.Tensor) -> torch.Tensor:
    """The ViL layer written out with dense matrices, an explicit causal convolution loop
    and the step-by-step mLSTM recurrence, head by head (independent of the layer's layout)."""
    inner, heads, dh = layer.inner, layer.num_heads, layer.head_dim
    if layer.direction == "backward":
        x = x.flip(1)
    up = x @ layer.proj_up.weight.T + layer.proj_up.bias
    xc, z = up[..., :inner], up[..., inner:]
    w = layer.conv.conv.weight[:, 0, :]  # (inner, k): tap k-1 is the current token
    ksize = w.shape[1]
    conv = torch.zeros_like(xc) + layer.conv.conv.bias
    for t in range(x.shape[1]):
        for j in range(ksize):
            if t - j >= 0:
                conv[:, t] += w[:, ksize - 1 - j] * xc[:, t - j]
    a = F.silu(conv)

    def dense(p):
        return torch.block_diag(*p.weight)

    q = a @ dense(layer.q_proj).T + layer.q_proj.bias
    k = a @ dense(layer.k_proj).T + layer.k_proj.bias
    v = xc @ dense(layer.v_proj).T + layer.v_proj.bias
    gin = torch.cat((q, k, v), -1)
    ig = gin @ layer.igate.weight.T + layer.igate.bias
    fg = gin @ layer.fgate.weight.T + layer.fgate.bias
    outs = []
    for n in range(heads):
        sl = slice(n * dh, (n + 1) * dh)
        h = mlstm_recurrent_reference(
            q[None, :, :, sl].transpose(0, 1), k[None, :, :, sl].transpose(0, 1), v[None, :, :, sl].transpose(0, 1),
            ig[None, :, :, n].transpose(0, 1), fg[None, :, :, n].transpose(0, 1),
        )[:, 0]  # fmt: skip
        mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        hn = (h - mu) / torch.sqrt(var + layer.out_norm.eps)
        outs.append(hn * (1 + layer.out_norm.weight[n, 0]) + layer.out_norm.bias[n, 0])
    h = torch.cat(outs, -1)
    y = ((h + layer.learnable_skip * a) * F.silu(z)) @ layer.proj_down.weight.T + layer.proj_down.bias
    return y.flip(1) if layer.direction == "backward" else y


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dim", [8, 9])  # 9: inner width 18, which 4 heads do not divide (channel tokens of 3x3)
def test_vil_layer_matches_written_out_spec(direction, dim):
    torch.manual_seed(0)
    layer = ViLLayer(dim, direction=direction).double()
    with torch.no_grad():  # move away from the init (zero gate weights, identity norm) so every term matters
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 13, dim, dtype=torch.float64)
    with torch.no_grad():
        ours, spec = layer(x), _vil_spec(layer, x)
    assert ours.shape == (2, 13, dim)
    torch.testing.assert_close(ours, spec, rtol=1e-9, atol=1e-10)
    # the chunkwise op gives the same layer as the quadratic parallel form, chunk boundaries inside
    layer.chunk, layer.backend = 4, "torch"
    chunked = layer(x)
    layer.backend = "reference"
    torch.testing.assert_close(chunked, layer(x), rtol=1e-9, atol=1e-10)


def test_vil_layer_layout_init_and_parameter_count():
    c = 16
    layer = ViLLayer(c)
    inner = 2 * c
    assert layer.proj_up.out_features == 4 * c and layer.num_heads == 4 and layer.head_dim == inner // 4
    # Vision-LSTM's layout: up-proj, 3 headwise (4x4 blocks) q/k/v, conv1d k=4, gates from 3 * inner,
    # multi-head norm, skip, down-proj
    expected = (c * 4 * c + 4 * c) + 3 * (inner * 4 + inner) + (inner * 4 + inner) + 2 * (3 * inner * 4 + 4)
    expected += 2 * inner + inner + (inner * c + c)
    assert sum(p.numel() for p in layer.parameters()) == expected
    fb = layer.fgate.bias.detach()
    assert fb.min() >= 3.0 and fb.max() <= 6.0 and fb[0] == 3.0 and fb[-1] == 6.0 and (fb.diff() > 0).all()
    assert (layer.fgate.weight == 0).all() and (layer.igate.weight == 0).all()
    assert layer.igate.bias.abs().max() < 1.0 and (layer.learnable_skip == 1).all()
    assert layer.conv.kernel_size == 4 and layer.conv.conv.groups == inner


def test_vil_layer_is_causal_in_its_direction():
    torch.manual_seed(0)
    x = torch.randn(1, 20, 8)
    x2 = x.clone()
    x2[:, 12] += 1.0
    for direction, unaffected, affected in (("forward", slice(0, 12), slice(12, 20)),
                                            ("backward", slice(13, 20), slice(0, 13))):  # fmt: skip
        layer = ViLLayer(8, direction=direction)
        with torch.no_grad():
            d = (layer(x2) - layer(x)).abs()
        assert d[:, unaffected].max() == 0, direction
        assert d[:, affected].amax(-1).min() > 0, direction  # the change reaches every later token


def test_stacked_blocks_alternate_direction_and_use_channel_tokens():
    stack = make_vil_blocks(16, [2, 2, 2], depth=3, first_direction=1)
    assert [b.direction for b in stack] == ["backward", "forward", "backward"]
    assert all(isinstance(b, ViLBlock) and b.channel_token and b.dim == 8 and b.residual for b in stack)
    single = make_vil_blocks(16, [4, 4, 4], depth=1)
    assert isinstance(single, ViLBlock) and not single.channel_token and single.dim == 16
    x = torch.randn(2, 16, 2, 2, 2)
    assert stack(x).shape == x.shape


# --------------------------------------------------------------------------- networks from plans


@pytest.mark.parametrize("name", ["xlstm_bot", "xlstm_enc"])
@pytest.mark.parametrize("dim", [2, 3])
def test_from_plans_deep_supervision_shapes_and_gate_gradients(name, dim):
    torch.manual_seed(0)
    net, block, patch = build(name, dim)
    assert isinstance(net, XLSTMUNetBot if name == "xlstm_bot" else XLSTMUNetEnc)
    strides = block["arch_kwargs"]["strides"]
    x = torch.randn(2, 2, *patch)
    outs = net(x)
    scales = 1 / np.cumprod(np.vstack(strides), axis=0)[:-1]  # nnunetv2's deep-supervision scales
    assert len(outs) == len(strides) - 1
    for out, scale in zip(outs, scales):
        assert list(out.shape) == [2, 3, *(int(round(p * s)) for p, s in zip(patch, scale))]
    sum(o.square().mean() for o in outs).backward()
    layers = vil_layers(net)
    assert len(layers) == len(net.xlstm_stages) > 0
    for i, layer in enumerate(layers):
        for pname, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (i, pname)
            if pname in GATE_PARAMS:
                assert p.grad.abs().sum() > 0, (i, pname)
    net.decoder.deep_supervision = False  # what nnunetv2's trainer toggles
    with torch.no_grad():
        single = net(x[:1])
    assert torch.is_tensor(single) and list(single.shape) == [1, 3, *patch]


def test_layer_placement_directions_and_channel_tokens():
    bot2, _, _ = build("xlstm_bot", 2)
    assert bot2.xlstm_stages == [4] and not bot2.encoder.token_layers[4].channel_token
    enc2, blk2, _ = build("xlstm_enc", 2)
    assert enc2.xlstm_stages == [0, 2, 4] == blk2["arch_kwargs"]["xlstm_stages"]
    assert [getattr(t, "direction", None) for t in enc2.encoder.token_layers] == [
        "forward", None, "backward", None, "forward"
    ]
    enc3, _, _ = build("xlstm_enc", 3)
    layers = enc3.encoder.token_layers
    assert enc3.xlstm_stages == [0, 1, 2, 3] and all(isinstance(t, ViLBlock) for t in layers)
    assert [t.direction for t in layers] == ["forward", "backward", "forward", "backward"]
    # stage sizes for 8x16x16: 8x16x16, 8x8x8, 4x4x4, 2x2x2 with 4, 8, 16, 24 channels
    assert [t.channel_token for t in layers] == [False, False, False, True] and layers[3].dim == 8


def test_pairs_preset_alternates_within_and_across_stages():
    cnn, patch = CASES[3]
    kwargs = build_kwargs(cnn["arch_kwargs"], patch, variant="enc", size="pairs")
    assert kwargs["vil_depth"] == 2 == load_preset("xlstm", "pairs")["vil_depth"]
    net = XLSTMUNetEnc(1, 2, **kwargs)
    dirs = [b.direction for stage in net.encoder.token_layers for b in stage]
    assert dirs == ["forward", "backward"] * 4


def test_nossm_ablation_is_the_umamba_ablation():
    for name in ("xlstm_bot", "xlstm_enc"):
        full, _, _ = build(name, 3)
        ablated, block, patch = build(name + "_nossm", 3)
        assert block["arch_kwargs"]["use_ssm"] is False and not registry.get(name + "_nossm").has_ssm
        assert not vil_layers(ablated)
        umamba, _, _ = build(name.replace("xlstm", "umamba") + "_nossm", 3)
        assert {k: v.shape for k, v in ablated.state_dict().items()} == {
            k: v.shape for k, v in umamba.state_dict().items()
        }
        vil = sum(p.numel() for layer in full.encoder.token_layers for p in layer.parameters())
        assert vil > 0 and sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in ablated.parameters()) == vil
    assert {"xlstm_bot", "xlstm_enc", "xlstm_bot_nossm", "xlstm_enc_nossm"} <= set(registry.available())


@pytest.mark.parametrize("name,dim,fp32", [("xlstm_enc", 2, True), ("xlstm_bot", 3, True), ("xlstm_enc", 3, False)])
def test_bf16_autocast_forward_backward_is_finite(name, dim, fp32):
    torch.manual_seed(0)
    cnn, patch = CASES[dim]
    kwargs = build_kwargs(cnn["arch_kwargs"], patch, variant=name.split("_")[1])
    kwargs["vil_fp32"] = fp32  # False: the whole ViL layer (projections and mLSTM op) under bf16 autocast
    net = (XLSTMUNetBot if name == "xlstm_bot" else XLSTMUNetEnc)(2, 3, deep_supervision=True, **kwargs)
    x = torch.randn(2, 2, *patch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(x)
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o.float()).all() for o in outs)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    for layer in vil_layers(net):
        assert all(torch.isfinite(getattr(layer, g.split(".")[0]).weight.grad).all() for g in GATE_PARAMS)


def test_preset_file_reaches_the_plan():
    cnn, patch = CASES[2]
    kw = build_kwargs(cnn["arch_kwargs"], patch, variant="enc")
    preset = load_preset("xlstm")
    for key in ("expansion", "qkv_block_size", "num_heads", "conv_kernel_size", "vil_depth", "mlstm_chunk"):
        assert kw[key] == preset[key], key
    assert kw["n_blocks_per_stage"] == [2, 2, 2, 1, 1] and kw["n_conv_per_stage_decoder"] == [2, 2, 2, 1]
    assert kw["patch_size"] == [32, 32] and kw["channel_tokens"] is True
    with pytest.raises(ValueError, match="variant"):
        build_kwargs(cnn["arch_kwargs"], patch, variant="middle")


# --------------------------------------------------------------------------- CLI

# the CLI runs check plumbing, not capacity: planned networks are shrunk to these widths
TINY_FEATURES = {"2d": [4, 8, 16, 16, 16], "3d_fullres": [4, 8, 8, 16]}


def _shrink_plans(plans_file, config: str) -> dict:
    plans = json.loads(plans_file.read_text())
    kwargs = plans["configurations"][config]["architecture"]["arch_kwargs"]
    n = kwargs["n_stages"]
    kwargs["features_per_stage"] = (TINY_FEATURES[config] * n)[:n]
    write_json_atomic(plans, plans_file)
    return plans


@pytest.mark.slow
@pytest.mark.parametrize("dataset_fixture,config", [("raw_2d_dataset", "2d"), ("raw_3d_dataset", "3d_fullres")])
def test_cli_plan_train_predict(request, workdir_factory, tmp_path, dataset_fixture, config):
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    from pipeline_fixtures import TINY_SCHEDULE, run_cli

    raw_src = request.getfixturevalue(dataset_fixture)
    workdir = workdir_factory(raw_src)
    ds_id, name = raw_src.name[7:10], raw_src.name
    archs = ["xlstm_bot", "xlstm_enc", "xlstm_bot_nossm", "xlstm_enc_nossm"]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", *archs, "-c", config, "-np", "1", "--workdir", workdir)
    pre = workdir / "preprocessed" / name
    for arch in archs:
        plans = _shrink_plans(pre / f"umambaPlans_{arch}.json", config)
        conf = plans["configurations"][config]
        kw = conf["architecture"]["arch_kwargs"]
        cls = "XLSTMUNetBot" if "bot" in arch else "XLSTMUNetEnc"
        assert conf["architecture"]["network_class_name"] == f"umamba_seg.architectures.xlstm_unet.{cls}"
        assert kw["use_ssm"] is not arch.endswith("_nossm") and kw["patch_size"] == list(conf["patch_size"])
        assert conf["data_identifier"] == f"umambaPlans_{config}"  # preprocessed data shared with the CNN
    # one training run per configuration (CI time): Bot in 2D, Enc in 3D (a ViL block on every stage,
    # the full-resolution one included); the from-plans tests cover the other combinations
    arch = "xlstm_bot" if config == "2d" else "xlstm_enc"
    run_cli("train", "-d", ds_id, "-c", config, "-f", "0", "-a", arch, "--workdir", workdir, *TINY_SCHEDULE)
    fold = workdir / "results" / name / f"umambaTrainer__umambaPlans_{arch}__{config}" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    run_cli("predict", "-i", workdir / "raw" / name / "imagesTs", "-o", out, "-d", ds_id, "-c", config, "-a",
            arch, "-f", "0", "--no-tta", "--device", "cpu", "--workdir", workdir)  # fmt: skip
    ending = json.loads((raw_src / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name for p in (raw_src / "labelsTs").iterdir() if p.name.endswith(ending))
    assert sorted(p.name for p in out.glob(f"*{ending}")) == cases
    assert math.isfinite(json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"])
