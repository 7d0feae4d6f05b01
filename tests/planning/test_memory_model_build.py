"""memory_model.build_network: nnunetv2's get_network_from_plans behind the plans allow-list."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from tests.helpers import plain_cnn_block
from umamba_seg.architectures import registry
from umamba_seg.errors import UserInputError
from umamba_seg.planning.memory_model import build_network


def _cnn_block() -> dict:
    return plain_cnn_block(2, [4, 8, 16, 32], [[1, 1]] + [[2, 2]] * 3)


def _layout(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("arch", ["cnn", "umamba_enc", "vmunet", "xlstm_bot"])
def test_build_network_is_the_trainers_network(arch):
    block = _cnn_block() if arch == "cnn" else registry.get(arch).architecture_block(_cnn_block(), [32, 32])
    block = json.loads(json.dumps(block))  # as a plans file holds it
    args = (block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"], 2, 3)
    want = _layout(get_network_from_plans(*args, allow_init=True, deep_supervision=True))
    built = build_network(*args)
    lazy = build_network(*args, lazy=True)
    assert _layout(built) == want and _layout(lazy) == want
    assert all(p.is_meta for p in lazy.parameters()) and not any(p.is_meta for p in built.parameters())
    assert block["arch_kwargs"]["conv_op"] == "torch.nn.modules.conv.Conv2d"  # the caller's dict is not resolved


def test_build_network_refuses_a_class_outside_the_allow_list_before_importing_it():
    block = _cnn_block()
    with pytest.raises(UserInputError, match="network_class_name.*not an allowed name"):
        build_network("subprocess.Popen", block["arch_kwargs"], block["_kw_requires_import"], 1, 2)
