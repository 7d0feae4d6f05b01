"""Issue 11: the ViL layer and xLSTM-UNet Bot/Enc (2D and 3D) built from nnunetv2 plans, and their CLI run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tests.architectures.cli_runs import assert_every_case_predicted, shrink_plans
from tests.architectures.mixer_unet_cases import CASES, build, check_planned_deep_supervision
from tests.helpers import check_bf16_backward
from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.architectures import registry
from umamba_seg.architectures.presets import XLSTMPreset, load_preset
from umamba_seg.architectures.token_mixer_unet import TokenMixerUNet, xlstm_enc_2d_stages, xlstm_enc_3d_stages
from umamba_seg.architectures.xlstm_unet import XLSTMUNetBot, XLSTMUNetEnc
from umamba_seg.nn.vil_layer import ViLBlock, ViLLayer, qkv_block_size_for
from umamba_seg.ops.mlstm import mlstm_recurrent_reference

GATE_PARAMS = ("igate.weight", "igate.bias", "fgate.weight", "fgate.bias")


def vil_layers(net: torch.nn.Module) -> list[ViLLayer]:
    return [m for m in net.modules() if isinstance(m, ViLLayer)]


# --------------------------------------------------------------------------- the ViL layer


def _vil_spec(layer: ViLLayer, x: torch.Tensor) -> torch.Tensor:
    """The ViL layer written out with dense matrices, an explicit causal convolution loop
    and the step-by-step mLSTM recurrence, head by head (independent of the layer's layout)."""
    inner, heads = layer.inner, layer.num_heads
    dh = inner // heads
    up = x @ layer.proj_up.weight.T
    xc, z = up[..., :inner], up[..., inner:]
    conv_mod = layer.conv1d["conv"]
    w = conv_mod.weight[:, 0, :]  # (inner, k): tap k-1 is the current token
    ksize = w.shape[1]
    conv = torch.zeros_like(xc) + conv_mod.bias
    for t in range(x.shape[1]):
        for j in range(ksize):
            if t - j >= 0:
                conv[:, t] += w[:, ksize - 1 - j] * xc[:, t - j]
    a = F.silu(conv)

    def dense(p):
        return torch.block_diag(*p.weight)

    q, k, v = a @ dense(layer.q_proj).T, a @ dense(layer.k_proj).T, xc @ dense(layer.v_proj).T
    cell = layer.mlstm_cell
    gin = torch.cat((q, k, v), -1)
    ig = gin @ cell.igate.weight.T + cell.igate.bias
    fg = gin @ cell.fgate.weight.T + cell.fgate.bias
    outs = []
    for n in range(heads):
        sl = slice(n * dh, (n + 1) * dh)
        h = mlstm_recurrent_reference(
            q[None, :, :, sl].transpose(0, 1), k[None, :, :, sl].transpose(0, 1), v[None, :, :, sl].transpose(0, 1),
            ig[None, :, :, n].transpose(0, 1), fg[None, :, :, n].transpose(0, 1),
        )[:, 0]  # fmt: skip
        mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        outs.append((h - mu) / torch.sqrt(var + cell.outnorm.eps))
    h = torch.cat(outs, -1) * (1 + cell.outnorm.weight)  # no bias, as Vision-LSTM's head norm
    return ((h + layer.learnable_skip * a) * F.silu(z)) @ layer.proj_down.weight.T


@pytest.mark.parametrize("dim", [8, 9, 10])  # 9, 10: not multiples of 4, so blocks of 2 and 2 heads (authors' rule)
def test_vil_layer_matches_written_out_spec(dim):
    torch.manual_seed(0)
    layer = ViLLayer(dim).double()
    assert layer.num_heads == layer.q_proj.block == (4 if dim % 4 == 0 else 2) == qkv_block_size_for(dim)
    with torch.no_grad():  # move away from the init (zero gate weights, identity norm) so every term matters
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 13, dim, dtype=torch.float64)
    with torch.no_grad():
        ours, spec = layer(x), _vil_spec(layer, x)
    assert ours.shape == (2, 13, dim)
    torch.testing.assert_close(ours, spec, rtol=1e-9, atol=1e-10)
    # the chunkwise op gives the same layer as the quadratic parallel form, chunk boundaries inside
    layer.mlstm_cell.chunk, layer.mlstm_cell.backend = 4, "torch"
    chunked = layer(x)
    layer.mlstm_cell.backend = "reference"
    torch.testing.assert_close(chunked, layer(x), rtol=1e-9, atol=1e-10)


def test_vil_block_layout_init_and_parameter_count():
    """Vision-LSTM's layout: bias-free up-proj, headwise q/k/v (4x4 blocks), conv1d k=4 with
    bias, gates from 3 * inner, bias-free head norm, skip, bias-free down-proj; bias-free block norm."""
    c = 16
    block = ViLBlock(c)
    layer, inner = block.layer, 2 * c
    assert layer.proj_up.out_features == 4 * c and layer.num_heads == 4 and layer.proj_up.bias is None
    expected = c * 4 * c + 3 * (inner * 4) + (inner * 4 + inner) + 2 * (3 * inner * 4 + 4) + inner + inner + inner * c
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert sum(p.numel() for p in block.parameters()) == expected + c  # the block norm: a scale, no bias
    assert sorted(k for k, _ in block.named_parameters()) == sorted([
        "norm.weight", "layer.proj_up.weight", "layer.q_proj.weight", "layer.k_proj.weight", "layer.v_proj.weight",
        "layer.conv1d.conv.weight", "layer.conv1d.conv.bias", "layer.mlstm_cell.igate.weight",
        "layer.mlstm_cell.igate.bias", "layer.mlstm_cell.fgate.weight", "layer.mlstm_cell.fgate.bias",
        "layer.mlstm_cell.outnorm.weight", "layer.learnable_skip", "layer.proj_down.weight",
    ])  # fmt: skip
    cell = layer.mlstm_cell
    fb = cell.fgate.bias.detach()
    assert fb[0] == 3.0 and fb[-1] == 6.0 and (fb.diff() > 0).all()
    assert (cell.fgate.weight == 0).all() and (cell.igate.weight == 0).all()
    assert cell.igate.bias.abs().max() < 1.0 and (layer.learnable_skip == 1).all()
    assert (cell.outnorm.weight == 0).all() and (block.norm.weight == 0).all()  # scales stored as offsets from 1
    assert layer.conv1d["conv"].kernel_size == (4,) and layer.conv1d["conv"].groups == inner
    x = torch.randn(2, 5, c)
    normed = F.layer_norm(x, (c,))
    torch.testing.assert_close(block(x), x + layer(normed))


def test_vil_layer_is_causal_row_wise_from_the_first_token():
    torch.manual_seed(0)
    x = torch.randn(1, 20, 8)
    x2 = x.clone()
    x2[:, 12] += 1.0
    layer = ViLLayer(8)
    with torch.no_grad():
        d = (layer(x2) - layer(x)).abs()
    assert d[:, :12].max() == 0
    assert d[:, 12:].amax(-1).min() > 0  # the change reaches every later token


# --------------------------------------------------------------------------- networks from plans


def _gate_gradients_reach_every_vil_layer(net: torch.nn.Module, block: dict) -> None:
    layers = vil_layers(net)
    bot = block["network_class_name"].endswith(".XLSTMUNetBot")  # one ViL layer, at the bottleneck
    n_mixers = 1 if bot else block["arch_kwargs"]["stage_layers"].count("mixer")
    assert len(layers) == len(net.token_layers) == n_mixers > 0
    for i, layer in enumerate(layers):
        for pname, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (i, pname)
            if pname.startswith("mlstm_cell.") and pname.endswith(GATE_PARAMS):
                assert p.grad.abs().sum() > 0, (i, pname)


@pytest.mark.parametrize("name", ["xlstm_bot", "xlstm_enc"])
@pytest.mark.parametrize("dim", [2, 3])
def test_from_plans_deep_supervision_shapes_and_gate_gradients(name, dim):
    cls = XLSTMUNetBot if name == "xlstm_bot" else XLSTMUNetEnc
    check_planned_deep_supervision(name, dim, cls, _gate_gradients_reach_every_vil_layer)


def test_authors_stage_rules_placement_and_channel_tokens():
    bot2, _, _ = build("xlstm_bot", 2)
    assert bot2.xlstm is bot2.bottleneck_layer and not bot2.xlstm.channel_token and bot2.xlstm.dim == 32
    assert bot2.encoder.stage_layers is None and isinstance(bot2.xlstm.vil, ViLBlock)
    # 2D: BasicBlockD after stage 1, ViL after alternate stages from 2 on ending with the last
    assert xlstm_enc_2d_stages(7) == ["none", "conv", "mixer", "none", "mixer", "none", "mixer"]
    assert xlstm_enc_2d_stages(6) == ["none", "conv", "none", "mixer", "none", "mixer"]
    enc2, blk2, _ = build("xlstm_enc", 2)
    assert blk2["arch_kwargs"]["stage_layers"] == ["none", "conv", "mixer", "none", "mixer"]
    kinds = [type(m).__name__ for m in enc2.encoder.xlstm_layers]
    assert kinds == ["Identity", "BasicBlockD", "TokenLayer", "Identity", "TokenLayer"]
    # 3D: BasicBlockD after stages 0-2, ViL after the others
    assert xlstm_enc_3d_stages(6) == ["conv"] * 3 + ["mixer"] * 3
    enc3, blk3, _ = build("xlstm_enc", 3)
    layers = enc3.encoder.xlstm_layers
    assert [type(m).__name__ for m in layers] == ["BasicBlockD"] * 3 + ["TokenLayer"]
    # stage 3 of 8x16x16 is 2x2x2 = 8 voxels with 24 channels: the channels are the tokens
    assert layers[3].channel_token and layers[3].dim == 8
    assert blk3["arch_kwargs"]["concat_finest_skip"] is True and blk2["arch_kwargs"]["concat_finest_skip"] is False


def test_nossm_ablation_keeps_the_backbone():
    for name in ("xlstm_bot", "xlstm_enc"):
        full, _, _ = build(name, 3)
        ablated, block, patch = build(name + "_nossm", 3)
        assert block["arch_kwargs"]["mixer"] == "none" and not registry.get(name + "_nossm").has_ssm
        assert not vil_layers(ablated) and not ablated.token_layers
        vil = sum(p.numel() for layer in full.token_layers for p in layer.parameters())
        n_full, n_ablated = (sum(p.numel() for p in m.parameters()) for m in (full, ablated))
        assert vil > 0 and n_full - n_ablated == vil
        assert len(ablated(torch.randn(1, 2, *patch))) == 3
    # Bot without ViL is U-Mamba Bot without Mamba; Enc keeps its extra BasicBlockD
    bot, _, _ = build("xlstm_bot_nossm", 3)
    umamba, _, _ = build("umamba_bot_nossm", 3)
    assert {k: v.shape for k, v in bot.state_dict().items()} == {k: v.shape for k, v in umamba.state_dict().items()}
    enc, _, _ = build("xlstm_enc_nossm", 3)
    assert [type(m).__name__ for m in enc.encoder.xlstm_layers] == ["BasicBlockD"] * 3 + ["Identity"]
    assert {"xlstm_bot", "xlstm_enc", "xlstm_bot_nossm", "xlstm_enc_nossm"} <= set(registry.available())


@pytest.mark.parametrize("name,dim,fp32", [("xlstm_enc", 2, True), ("xlstm_bot", 3, True), ("xlstm_enc", 3, False)])
def test_bf16_autocast_forward_backward_is_finite(name, dim, fp32):
    # One thread: with two, CPU bf16 autocast gave a non-finite gradient in 2 of about 12 runs of this
    # test (not reproduced in isolation, nor with malloc perturbation). The check runs on one thread
    # until that is understood; the multi-threaded case is an open question, not a pass.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _bf16_forward_backward_is_finite(name, dim, fp32)
    finally:
        torch.set_num_threads(threads)


def _bf16_forward_backward_is_finite(name: str, dim: int, fp32: bool) -> None:
    torch.manual_seed(0)
    cnn, patch = CASES[dim]
    kwargs = registry.get(name).build_kwargs(cnn["arch_kwargs"], patch)
    kwargs["mixer_fp32"] = fp32  # False: the whole ViL block (projections and mLSTM op) under bf16 autocast
    net = (XLSTMUNetBot if name == "xlstm_bot" else XLSTMUNetEnc)(2, 3, deep_supervision=True, **kwargs)
    check_bf16_backward(net, torch.randn(2, 2, *patch))
    for layer in vil_layers(net):
        assert all(torch.isfinite(getattr(layer.mlstm_cell, g).weight.grad).all() for g in ("igate", "fgate"))


def test_preset_file_reaches_the_plan():
    cnn, patch = CASES[2]
    kw = registry.get("xlstm_enc").build_kwargs(cnn["arch_kwargs"], patch)
    preset = load_preset("xlstm")
    assert kw["mixer"] == "vil" and kw["placement"] == "encoder"
    assert kw["mixer_kwargs"] == {
        "expansion": preset.expansion,
        "qkv_block_size": preset.qkv_block_size,
        "conv_kernel_size": preset.conv_kernel_size,
        "chunk": preset.mlstm_chunk,
    }
    assert kw["n_blocks_per_stage"] == [2, 2, 2, 1, 1] and kw["n_conv_per_stage_decoder"] == [2, 2, 2, 1]
    assert kw["patch_size"] == [32, 32] and kw["mixer_fp32"] is True
    with pytest.raises(ValueError, match="placement"):
        type("XLSTMUNetMiddle", (TokenMixerUNet,), {}, preset=XLSTMPreset(), placement="middle")


# --------------------------------------------------------------------------- CLI

# the CLI runs check plumbing, not capacity: planned networks are shrunk to these widths
TINY_FEATURES = {"2d": [4, 8, 16, 16, 16], "3d_fullres": [4, 8, 8, 16]}


def _shrink(config: str) -> Callable[[dict], None]:
    def shrink(kwargs: dict) -> None:
        n = kwargs["n_stages"]
        kwargs["features_per_stage"] = (TINY_FEATURES[config] * n)[:n]

    return shrink


@pytest.mark.slow
def test_cli_plan_train_predict(cli_dataset, tmp_path):
    raw_src, workdir, ds_id, name, config = cli_dataset
    archs = ["xlstm_bot", "xlstm_enc", "xlstm_bot_nossm", "xlstm_enc_nossm"]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", *archs, "-c", config, "-np", "1", "--workdir", workdir)
    for arch in archs:
        plans = shrink_plans(workdir, name, arch, config, _shrink(config))
        conf = plans["configurations"][config]
        kw = conf["architecture"]["arch_kwargs"]
        cls = "XLSTMUNetBot" if "bot" in arch else "XLSTMUNetEnc"
        assert conf["architecture"]["network_class_name"] == f"umamba_seg.architectures.xlstm_unet.{cls}"
        assert (kw["mixer"] == "none") is arch.endswith("_nossm") and kw["patch_size"] == list(conf["patch_size"])
        assert conf["data_identifier"] == f"umambaPlans_{config}"  # preprocessed data shared with the CNN
    # one training run per configuration (CI time): Bot in 2D, Enc in 3D (residual blocks and ViL
    # blocks after the encoder stages); the from-plans tests cover the other combinations
    arch = "xlstm_bot" if config == "2d" else "xlstm_enc"
    run_cli(*train_args(workdir, ds_id, config, "0", "-a", arch, *TINY_SCHEDULE))
    fold = workdir / "results" / name / f"umambaTrainer__umambaPlans_{arch}__{config}" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    images = workdir / "raw" / name / "imagesTs"
    run_cli(*predict_args(workdir, images, out, ds_id, config, "-a", arch, "-f", "0", "--no-tta"))
    assert_every_case_predicted(raw_src, out)
    assert math.isfinite(json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"])
