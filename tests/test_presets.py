"""Architecture presets: YAML defaults per family and size, found in a checkout and in a wheel."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import umamba_seg
from umamba_seg.architectures import presets
from umamba_seg.errors import UserInputError


def test_sizes_inherit_default_and_override():
    default = presets.load_preset("segmamba")
    small = presets.load_preset("segmamba", "small")
    assert default["feature_size"] == [48, 96, 192, 384] and default["hidden_size"] == 768
    assert small["feature_size"] == [16, 32, 64, 128] and small["hidden_size"] == 256
    assert small["d_state"] == default["d_state"] == 16  # inherited
    umamba = presets.load_preset("umamba")
    assert (umamba["d_state"], umamba["d_conv"], umamba["expand"]) == (16, 4, 2)
    small["feature_size"].append(1)  # callers get copies
    assert presets.load_preset("segmamba", "small")["feature_size"] == [16, 32, 64, 128]


def test_unknown_family_or_size_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown preset size 'huge'.*choose one of: default, small"):
        presets.load_preset("umamba", "huge")
    with pytest.raises(UserInputError, match="no preset file for architecture family 'nope'"):
        presets.load_preset("nope")


def test_package_data_copy_holds_the_same_presets():
    """``pip install .`` ships ``umamba_seg/configs/*.yaml`` (a link to the top-level
    ``configs/`` in the checkout), the second place the loader looks."""
    packaged = Path(umamba_seg.__file__).parent / "configs"
    assert packaged in presets.preset_dirs()
    for family in ("umamba", "segmamba"):
        top = Path(umamba_seg.__file__).parent.parent / "configs" / f"{family}.yaml"
        assert yaml.safe_load((packaged / f"{family}.yaml").read_text()) == yaml.safe_load(top.read_text())
