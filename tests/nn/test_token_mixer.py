"""Every token mixer derives from nn.TokenMixer (what the memory model recognises), with its sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.helpers import plain_cnn_block, planned_network
from umamba_seg.architectures import registry
from umamba_seg.architectures.presets import SegMambaPreset, UMambaPreset, VMUNetPreset
from umamba_seg.nn.channel_mlp import ChannelMLP
from umamba_seg.nn.cross_scan import CrossScanSSM, VSSBlock
from umamba_seg.nn.gsc import GSC
from umamba_seg.nn.mamba_mixer import MambaMixer
from umamba_seg.nn.patch_tokens import PatchEmbed, PatchExpand, PatchMerging
from umamba_seg.nn.ssm_branch import SelectiveSSMBranch
from umamba_seg.nn.token_layer import TokenLayer
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.nn.tri_oriented import TriOrientedMamba
from umamba_seg.nn.upsample import NearestUpsampleConv
from umamba_seg.nn.vil_layer import ViLBlock, ViLLayer
from umamba_seg.ops.mlstm.reference import MLSTMInputs
from umamba_seg.ops.mlstm.torch_chunkwise import mlstm_chunkwise_forward
from umamba_seg.planning.memory_model import is_token_mixer

C, N, GRID = 8, 4, (3, 5)  # token width, SSM state size, a 2D token grid
L = GRID[0] * GRID[1]
# the networks' Mamba settings with a small state
MAMBA = dataclasses.replace(UMambaPreset().ssm_config(), d_state=N)
TRI = dataclasses.replace(SegMambaPreset().ssm_config(), d_state=N)
CROSS = dataclasses.replace(VMUNetPreset().ssm_config(), d_state=N)
BRANCH = dataclasses.replace(MAMBA, expand=1)  # a branch scanning C channels

# (mixer, an input it reads, its recurrent state per sample counted from its parameters)
MIXERS = {
    "ssm_branch": lambda: (SelectiveSSMBranch(C, BRANCH), torch.randn(2, C, L), C * N),
    "mamba": lambda: (MambaMixer(C, MAMBA), torch.randn(2, L, C), 2 * C * N),
    "tri_oriented": lambda: (TriOrientedMamba(C, TRI), torch.randn(2, L, C), 3 * 2 * C * N),
    "ss2d": lambda: (CrossScanSSM(C, CROSS, 2), torch.randn(2, *GRID, C), 4 * 2 * C * N),
    "ss3d": lambda: (CrossScanSSM(C, CROSS, 3), torch.randn(2, 2, *GRID, C), 6 * 2 * C * N),
    "ss2d_nossm": lambda: (CrossScanSSM(C, CROSS, 2, use_ssm=False), torch.randn(2, *GRID, C), 0),
    "vss_block": lambda: (VSSBlock(C, CROSS, spatial_dims=2), torch.randn(2, *GRID, C), 4 * 2 * C * N),
    "vil_layer": lambda: (ViLLayer(C), torch.randn(2, L, C), None),
    "vil_block": lambda: (ViLBlock(C), torch.randn(2, L, C), None),
    "token_layer": lambda: (TokenLayer(C, MambaMixer(C, MAMBA)), torch.randn(2, C, *GRID), 2 * C * N),
}
# blocks of umamba_seg.nn that work on feature maps (their saved tensors are the "conv" part)
CONV_SIDE = (GSC, ChannelMLP, PatchEmbed, PatchMerging, PatchExpand, NearestUpsampleConv)


def _mlstm_state_numel(layer: ViLLayer) -> int:
    """Per sample and chunk, the states the chunkwise mLSTM carries: ``c (dh, dh)`` and ``n (dh)`` per head."""
    heads, dh = layer.num_heads, layer.mlstm_cell.head_dim
    q = torch.zeros(1, heads, 16, dh)
    gates = torch.zeros(1, heads, 16)
    res = mlstm_chunkwise_forward(MLSTMInputs(q, q, q, gates, gates), chunk=16)
    return res.c_prev[:, :, 0].numel() + res.n_prev[:, :, 0].numel()


@pytest.mark.parametrize("name", MIXERS)
def test_every_mixer_is_a_token_mixer_with_its_sizes(name):
    mixer, x, state = MIXERS[name]()
    assert isinstance(mixer, TokenMixer) and is_token_mixer(mixer)
    if state is None:  # ViL: the mLSTM's matrix memory and normaliser
        state = _mlstm_state_numel(mixer.layer if isinstance(mixer, ViLBlock) else mixer)
    assert mixer.state_size == state
    ssm_params = sum(p.numel() for n, p in mixer.named_parameters() if n.split(".")[-1] in ("A_log", "A_logs"))
    assert ssm_params in (0, state)  # an SSM's state is one entry of A per channel and state index
    with torch.no_grad():
        y = mixer(x, GRID) if name in ("mamba", "tri_oriented", "vil_layer", "vil_block") else mixer(x)
    assert y.shape == x.shape
    features = x.shape[1] if name in ("ssm_branch", "token_layer") else x.shape[-1]
    assert mixer.d_model == features


def test_token_layer_reports_a_plain_mixer_as_stateless():
    layer = TokenLayer(C, nn.Identity())
    assert isinstance(layer, TokenMixer) and layer.state_size == 0
    assert not is_token_mixer(nn.Linear(C, C)) and not is_token_mixer(GSC(C, nn.Conv2d))


def _cnn_block() -> dict:
    return plain_cnn_block(2, [4, 8, 16, 32, 32], [[1, 1]] + [[2, 2]] * 4)


@pytest.mark.parametrize("arch", [a for a in registry.available() if a != "cnn"])
def test_every_sequence_layer_of_every_network_sits_in_a_token_mixer(arch):
    """Each module of :mod:`umamba_seg.nn` in a network is a token mixer, inside one, or a block
    that works on feature maps: a new mixer that forgot the base class fails here."""
    net, _ = planned_network(arch, _cnn_block(), [32, 32], 1, 3, allow_init=False, deep_supervision=True)
    inside: set[int] = set()
    for module in net.modules():
        if isinstance(module, TokenMixer):
            inside.update(id(m) for m in module.modules())
    ours = [m for m in net.modules() if type(m).__module__.startswith("umamba_seg.nn.")]
    stray = [type(m).__name__ for m in ours if id(m) not in inside and not isinstance(m, CONV_SIDE)]
    assert not stray
    mixers = [m for m in net.modules() if isinstance(m, TokenMixer)]
    assert bool(mixers) is (registry.get(arch).has_ssm or arch.startswith("vmunet")), arch
    assert all(m.state_size > 0 for m in mixers if registry.get(arch).has_ssm and not isinstance(m, TokenLayer))
