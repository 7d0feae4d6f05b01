"""Issue 8: U-Mamba Bot and Enc (2D and 3D) built from nnunetv2 plans, and their CLI run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.building_blocks.residual import BasicBlockD

from tests.architectures.cli_runs import assert_every_case_predicted, planned_plans
from tests.architectures.mixer_unet_cases import build, check_planned_deep_supervision
from tests.helpers import check_bf16_backward, network_from_block
from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.architectures import registry
from umamba_seg.architectures.token_mixer_unet import alternate_stages, umamba_block_counts
from umamba_seg.architectures.umamba import UMambaBot, UMambaEnc
from umamba_seg.architectures.unet_parts import ResidualBlock
from umamba_seg.errors import UserInputError
from umamba_seg.nn.mamba_mixer import MambaMixer
from umamba_seg.nn.token_layer import TokenLayer

SSM_PARAMS = ("A_log", "D", "dt_proj.bias", "conv1d.weight", "conv1d.bias")


def ssm_parameters(net: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in net.named_parameters() if n.endswith(SSM_PARAMS)}


def _ssm_gradients_reach_every_layer(net: torch.nn.Module, block: dict) -> None:
    grads = ssm_parameters(net)
    assert grads, "no SSM parameters found"
    for pname, p in grads.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["umamba_bot", "umamba_enc"])
@pytest.mark.parametrize("dim", [2, 3])
def test_from_plans_deep_supervision_shapes_and_backward(name, dim):
    cls = UMambaBot if name == "umamba_bot" else UMambaEnc
    check_planned_deep_supervision(name, dim, cls, _ssm_gradients_reach_every_layer)


def test_mamba_layer_placement_and_channel_tokens():
    bot2, _, _ = build("umamba_bot", 2)
    # Bot keeps voxels as tokens even at a 2x2 bottleneck (as the authors do)
    assert bot2.mamba_layer is bot2.bottleneck_layer and bot2.encoder.stage_layers is None
    assert not bot2.mamba_layer.channel_token and bot2.mamba_layer.dim == 32
    assert isinstance(bot2.mamba_layer.mamba, MambaMixer)
    enc2, kw2, _ = build("umamba_enc", 2)
    # alternate stages, ending with the last
    assert kw2["arch_kwargs"]["stage_layers"] == ["mixer", "none", "mixer", "none", "mixer"]
    assert alternate_stages(6) == ["none", "mixer"] * 3
    assert [type(m).__name__ for m in enc2.encoder.mamba_layers] == ["TokenLayer", "Identity"] * 2 + ["TokenLayer"]
    enc3, _, _ = build("umamba_enc", 3)
    layers = enc3.encoder.mamba_layers
    assert all(isinstance(layer, TokenLayer) for layer in layers)  # every stage in 3D
    # 3D stage sizes for patch 8x16x16: 8x16x16, 8x8x8, 4x4x4, 2x2x2 with 4, 8, 16, 24 channels
    assert [layer.channel_token for layer in layers] == [False, False, False, True]
    assert layers[3].dim == 8 and layers[2].dim == 16


def test_backbone_is_the_authors_residual_encoder_decoder():
    """Stem = residual block (1^d conv shortcut) + BasicBlockD; every encoder and decoder stage
    starts with a residual block whose 1^d shortcut carries the stride and has no norm."""
    net, block, _ = build("umamba_bot", 3)
    enc = net.encoder
    kw = block["arch_kwargs"]
    assert isinstance(enc.stem[0], ResidualBlock) and all(isinstance(b, BasicBlockD) for b in enc.stem[1:])
    assert len(enc.stem) == kw["n_blocks_per_stage"][0]
    for s, stage in enumerate(enc.stages):
        first = stage[0]
        assert isinstance(first, ResidualBlock) and len(stage) == kw["n_blocks_per_stage"][s]
        assert first.conv3.kernel_size == (1, 1, 1) and list(first.conv3.stride) == kw["strides"][s]
        assert list(first.conv1.stride) == kw["strides"][s] and first.conv3.bias is not None
    assert sorted(n for n, _ in enc.stages[1][0].named_children()) == [
        "act1",
        "act2",
        "conv1",
        "conv2",
        "conv3",
        "norm1",
        "norm2",
    ]  # no norm on the shortcut
    assert all(isinstance(stage[0], ResidualBlock) for stage in net.decoder.stages)
    assert net.decoder.encoder is net.encoder  # as the authors' and nnU-Net's decoders
    torch.manual_seed(0)
    block_ = ResidualBlock(torch.nn.Conv2d, 3, 5, [3, 3], [2, 2], torch.nn.InstanceNorm2d, {"affine": True},
                           torch.nn.LeakyReLU, {})  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    y = block_.norm2(block_.conv2(block_.act1(block_.norm1(block_.conv1(x)))))
    torch.testing.assert_close(block_(x), torch.nn.functional.leaky_relu(y + block_.conv3(x)))


def test_2d_decoder_leaves_out_the_finest_skip():
    """The authors' 2D decoders do not concatenate the finest skip; their 3D decoders do."""
    for dim, concat in ((2, False), (3, True)):
        net, block, patch = build("umamba_bot", dim)
        assert block["arch_kwargs"]["concat_finest_skip"] is concat and net.decoder.concat_finest_skip is concat
        f0 = block["arch_kwargs"]["features_per_stage"][0]
        assert net.decoder.stages[-1][0].conv1.in_channels == (2 * f0 if concat else f0)
        assert net.decoder.stages[-2][0].conv1.in_channels == 2 * block["arch_kwargs"]["features_per_stage"][1]
    # with the skip, the 2D network is another (valid) network: the plan says which
    _, block, patch = build("umamba_bot", 2)
    kw = {**block["arch_kwargs"], "concat_finest_skip": True}
    net = network_from_block({**block, "arch_kwargs": kw}, 2, 3, deep_supervision=False)
    with torch.no_grad():
        assert list(net(torch.randn(1, 2, *patch)).shape) == [1, 3, *patch]


def test_nossm_ablation_is_the_network_without_mamba():
    for name in ("umamba_bot", "umamba_enc"):
        full, _, _ = build(name, 3)
        ablated, block, patch = build(name + "_nossm", 3)
        assert block["arch_kwargs"]["mixer"] == "none" and not registry.get(name + "_nossm").has_ssm
        assert not ssm_parameters(ablated) and not ablated.token_layers
        mamba = sum(p.numel() for layer in full.token_layers for p in layer.parameters())
        n_full = sum(p.numel() for p in full.parameters())
        n_ablated = sum(p.numel() for p in ablated.parameters())
        assert mamba > 0 and n_full - n_ablated == mamba
        assert set(ablated.state_dict()) < set(full.state_dict())
        out = ablated(torch.randn(1, 2, *patch))
        assert len(out) == 3
    bot, _, _ = build("umamba_bot_nossm", 3)
    enc, _, _ = build("umamba_enc_nossm", 3)
    assert {k: v.shape for k, v in bot.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}


def test_direct_construction_without_a_patch():
    """Without a plan's patch, Bot (voxel tokens) builds; Enc's channel tokens need the patch."""
    kwargs = dict(
        n_stages=3, features_per_stage=[4, 8, 16], conv_op=torch.nn.Conv2d, kernel_sizes=[[3, 3]] * 3,
        strides=[[1, 1], [2, 2], [2, 2]], n_blocks_per_stage=1, n_conv_per_stage_decoder=1,
        norm_op=torch.nn.InstanceNorm2d, nonlin=torch.nn.LeakyReLU,
    )  # fmt: skip
    bot = UMambaBot(1, 2, **kwargs)
    assert bot.mamba_layer.dim == 16 and not bot.mamba_layer.channel_token
    with torch.no_grad():
        assert list(bot(torch.randn(1, 1, 16, 24)).shape) == [1, 2, 16, 24]
    with pytest.raises(ValueError, match="patch_size"):
        UMambaEnc(1, 2, **kwargs)
    with pytest.raises(ValueError, match="stage_layers"):
        UMambaEnc(1, 2, patch_size=[16, 16], stage_layers=["mixer", "later"], **kwargs)
    with pytest.raises(ValueError, match="mixer"):
        UMambaBot(1, 2, mixer="attention", **kwargs)
    # plans written before the networks matched the authors' name keys these networks no longer take
    with pytest.raises(UserInputError, match="mamba_stages, use_ssm.*plan again"):
        UMambaEnc(1, 2, patch_size=[16, 16], mamba_stages=[0, 2], use_ssm=True, **kwargs)


def test_block_counts_follow_the_authors():
    assert umamba_block_counts(6, [2] * 6, [2] * 5) == ([2, 2, 2, 1, 1, 1], [2, 2, 2, 1, 1])
    assert umamba_block_counts(5, [2] * 5, [2] * 4) == ([2, 2, 2, 1, 1], [2, 2, 2, 1])
    _, block, _ = build("umamba_enc", 2)
    kw = block["arch_kwargs"]
    assert kw["n_blocks_per_stage"] == [2, 2, 2, 1, 1] and kw["n_conv_per_stage_decoder"] == [2, 2, 2, 1]
    assert kw["patch_size"] == [32, 32] and kw["mixer"] == "mamba"
    assert kw["mixer_kwargs"] == {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto"}
    assert block["_kw_requires_import"] == ["conv_op", "norm_op", "nonlin"]  # dropout_op is None


@pytest.mark.parametrize("name,dim", [("umamba_bot", 2), ("umamba_enc", 2), ("umamba_enc", 3)])
def test_bf16_autocast_forward_backward_is_finite(name, dim):
    torch.manual_seed(0)
    net, _, patch = build(name, dim)
    check_bf16_backward(net, torch.randn(2, 2, *patch))
    assert all(torch.isfinite(p.grad).all() for p in ssm_parameters(net).values())


# --------------------------------------------------------------------------- CLI and stock nnunetv2


@pytest.fixture(scope="module")
def planned_2d(tmp_path_factory, raw_2d_dataset) -> Path:
    """A workdir with the 2D dataset planned for U-Mamba Bot and Enc and preprocessed."""
    import shutil

    workdir = tmp_path_factory.mktemp("umamba_cli")
    shutil.copytree(raw_2d_dataset, workdir / "raw" / raw_2d_dataset.name)
    run_cli("plan-and-preprocess", "-d", raw_2d_dataset.name[7:10], "-a", "umamba_bot", "umamba_enc", "-c", "2d",
            "-np", "1", "--workdir", workdir)  # fmt: skip
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["umamba_bot", "umamba_enc"])
def test_cli_plan_train_predict(planned_2d, tmp_path, arch):
    raw = next((planned_2d / "raw").iterdir())
    ds_id = raw.name[7:10]
    _, plans = planned_plans(planned_2d, raw.name, arch)
    conf = plans["configurations"]["2d"]
    assert conf["architecture"]["network_class_name"].endswith("UMambaBot" if arch == "umamba_bot" else "UMambaEnc")
    assert conf["data_identifier"] == "umambaPlans_2d"  # preprocessed data shared with the CNN
    run_cli(*train_args(planned_2d, ds_id, "2d", "0", "-a", arch, *TINY_SCHEDULE))
    fold = planned_2d / "results" / raw.name / f"umambaTrainer__umambaPlans_{arch}__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    run_cli(*predict_args(planned_2d, raw / "imagesTs", out, ds_id, "2d", "-a", arch, "-f", "0", "--no-tta"))
    assert_every_case_predicted(raw, out)


@pytest.mark.slow
def test_stock_nnunetv2_trains_and_predicts_our_plans(planned_2d, tmp_path, monkeypatch):
    """nnunetv2's own nnUNetTrainer trains from umambaPlans_umamba_bot.json and the stock
    ``nnUNetv2_predict`` command predicts with the result."""
    from nnunetv2.run.run_training import get_trainer_from_args

    raw = next((planned_2d / "raw").iterdir())
    pre = planned_2d / "preprocessed"
    results = tmp_path / "results"
    env = {"nnUNet_raw": str(planned_2d / "raw"), "nnUNet_preprocessed": str(pre), "nnUNet_results": str(results)}
    for k, v in env.items():  # restored after the test
        monkeypatch.setenv(k, v)
    # what `nnUNetv2_train DATASET 2d 0 -p umambaPlans_umamba_bot -device cpu` runs, with
    # nnU-Net's 250 x 1000 iterations cut to 2
    trainer = get_trainer_from_args(
        raw.name, "2d", 0, "nnUNetTrainer", "umambaPlans_umamba_bot", device=torch.device("cpu")
    )
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 2, 1
    trainer.run_training()
    model = results / raw.name / "nnUNetTrainer__umambaPlans_umamba_bot__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    assert isinstance(trainer.network, UMambaBot)
    out = tmp_path / "pred"
    exe = Path(sys.executable).with_name("nnUNetv2_predict")
    cmd = [str(exe), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", raw.name, "-c", "2d", "-f", "0",
           "-p", "umambaPlans_umamba_bot", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # with the nnUNet_* set above
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    assert len(list(out.glob(f"*{ending}"))) == len(list((raw / "labelsTs").glob(f"*{ending}")))
