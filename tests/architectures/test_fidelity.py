"""Issue 20: U-Mamba and xLSTM-UNet have exactly the authors' parameter tensors.

For the two nnU-Net CNN plans in ``tests/resources/fidelity_plans.json`` (deep supervision
on), each network built through the registry and nnunetv2's ``get_network_from_plans``
has the authors' parameter count and state dict: every key and shape of the networks
of bowang-lab/U-Mamba (``UMamba{Bot,Enc}_{2d,3d}.py``) and tianrun-chen/xLSTM-UNet-PyTorch
(``UxLSTM{Bot,Enc}_{2d,3d}.py``) built from the same plan, recorded from their code in
``tests/resources/authors_state_dict_keys.json``, less the two tensors of the LayerNorm that
xLSTM-UNet's ViL wrapper creates and never uses. The same logits for the same weights
were checked against the authors' code itself (it is not part of this repository).

Networks are built on the meta device: shapes only, no memory, no initialisation cost.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import RESOURCES, planned_network
from umamba_seg.architectures.token_mixer_unet import authors_unused_keys

DATA = RESOURCES  # the plans and key lists the tests compare against
PLANS = json.loads((DATA / "fidelity_plans.json").read_text())
AUTHORS = json.loads((DATA / "authors_state_dict_keys.json").read_text())

# the issue's table: parameters of the authors' networks without the unused LayerNorm
COUNTS = {
    ("umamba_bot", "3d"): 41_945_158,
    ("umamba_enc", "3d"): 42_815_718,
    ("xlstm_bot", "3d"): 41_911_566,
    ("xlstm_enc", "3d"): 43_710_166,
    ("umamba_bot", "2d"): 47_524_592,
    ("umamba_enc", "2d"): 47_680_592,
    ("xlstm_bot", "2d"): 47_446_264,
    ("xlstm_enc", "2d"): 47_656_652,
}


def build_on_meta(name: str, plan: str) -> torch.nn.Module:
    p = PLANS[plan]
    with torch.device("meta"):
        net, _ = planned_network(
            name, p["architecture"], p["patch_size"], p["input_channels"], p["num_classes"],
            allow_init=False, deep_supervision=p["deep_supervision"],
        )  # fmt: skip
    return net


@pytest.mark.parametrize("name,plan", list(COUNTS))
def test_parameters_and_state_dict_are_the_authors(name, plan):
    net = build_on_meta(name, plan)
    assert sum(p.numel() for p in net.parameters()) == COUNTS[name, plan]

    theirs = AUTHORS[name][plan]
    unused = set(authors_unused_keys(k for k, _ in theirs["state_dict"]))
    # only xLSTM-UNet's ViL wrappers have the unused norm: the bottleneck's, or the encoder's
    # three (also under decoder.encoder, the decoder's reference to the encoder)
    assert len(unused) == {"umamba_bot": 0, "umamba_enc": 0, "xlstm_bot": 2, "xlstm_enc": 12}[name]
    assert all(k.rsplit(".", 2)[-2] == "norm" and ".vil." not in k for k in unused)
    expected = {k: shape for k, shape in theirs["state_dict"] if k not in unused}
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == expected  # same keys, same shapes: their checkpoints load without renaming

    # the same parameter tensors (a state dict lists a tensor shared by two modules twice;
    # the parameters are each tensor once, named where first registered)
    params = sorted(k for k in theirs["parameters"] if k not in unused)
    assert sorted(k for k, _ in net.named_parameters()) == params
    assert sorted(list(p.shape) for p in net.parameters()) == sorted(expected[k] for k in params)


def test_unused_key_rule_keeps_every_other_norm():
    keys = [
        "xlstm.norm.weight", "xlstm.vil.norm.weight", "encoder.xlstm_layers.3.norm.bias",
        "decoder.encoder.xlstm_layers.4.norm.weight", "encoder.xlstm_layers.0.conv1.norm.weight",
        "mamba_layer.norm.weight", "encoder.mamba_layers.2.norm.bias",
    ]  # fmt: skip
    assert authors_unused_keys(keys) == [
        "xlstm.norm.weight",
        "encoder.xlstm_layers.3.norm.bias",
        "decoder.encoder.xlstm_layers.4.norm.weight",
    ]
