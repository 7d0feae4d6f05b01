"""Architecture presets: one typed dataclass per family holds every default; named sizes in the
package's ``preset_sizes.yaml`` override only what differs and are checked key by key."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest
import torch

import umamba_seg
from tests.helpers import RESOURCES, as_stored, network_from_block, planned_network
from umamba_seg.architectures import presets, registry
from umamba_seg.architectures.presets import SegMambaPreset, UMambaPreset, VMUNetPreset, XLSTMPreset
from umamba_seg.architectures.segmamba import SegMamba
from umamba_seg.architectures.token_mixer_unet import STAGE_RULES
from umamba_seg.architectures.vmunet import VMUNet
from umamba_seg.errors import UserInputError

DATA = RESOURCES  # the plans and key lists the tests compare against
PLANS = json.loads((DATA / "fidelity_plans.json").read_text())
# the authors' parameter counts (tests/architectures/test_fidelity.py's table; the mixer U-Nets with deep supervision)
TOKEN_MIXER_COUNTS = {
    ("umamba_bot", "3d"): 41_945_158, ("umamba_enc", "3d"): 42_815_718,
    ("xlstm_bot", "2d"): 47_446_264, ("xlstm_enc", "2d"): 47_656_652,
}  # fmt: skip
# SegMamba 4 in / 4 out and VM-UNet 3 in / 1 out with deep supervision: the authors' networks
# (tests/architectures/test_segmamba.py, test_vmunet.py) plus our deep-supervision heads
SEGMAMBA_COUNT, VMUNET_COUNT = 67_418_896, 27_428_236
# settings a token-mixer plan carries that come from the preset
PRESET_KWARGS = ("mixer_kwargs", "mixer_fp32", "stage_layers", "concat_finest_skip")


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _block(arch: str, plan: str, size: str = "default") -> dict:
    p = PLANS[plan]
    spec = registry.get(arch).at_size(size)
    patch = spec.adjust_patch(p["patch_size"]) if spec.adjust_patch else p["patch_size"]
    return as_stored(spec.architecture_block(p["architecture"], patch))


def _network(block: dict, plan: str, meta: bool = True, **io) -> torch.nn.Module:
    p = PLANS[plan]
    channels = io.get("input_channels", p["input_channels"])
    classes = io.get("num_classes", p["num_classes"])
    with torch.device("meta" if meta else "cpu"):
        return network_from_block(block, channels, classes, allow_init=False, deep_supervision=True)


# --------------------------------------------------------------------------- one place per default


@pytest.mark.parametrize("arch,plan", list(TOKEN_MIXER_COUNTS))
def test_token_mixer_networks_take_their_defaults_from_the_preset(arch, plan):
    """The planned network (preset written into arch_kwargs) and the one whose constructor fills in
    the preset's settings itself are the authors' network, tensor for tensor."""
    block = _block(arch, plan)
    planned = _network(block, plan)
    assert _n_params(planned) == TOKEN_MIXER_COUNTS[arch, plan]
    for key in PRESET_KWARGS:
        block["arch_kwargs"].pop(key)
    from_constructor = _network(block, plan)
    assert {k: v.shape for k, v in from_constructor.state_dict().items()} == {
        k: v.shape for k, v in planned.state_dict().items()
    }


def test_segmamba_and_vmunet_take_their_defaults_from_the_preset():
    """Constructor defaults and the registry's plan both give the authors' configuration."""
    with torch.device("meta"):
        assert _n_params(SegMamba(4, 4, deep_supervision=True)) == SEGMAMBA_COUNT
    planned = _network(_block("segmamba", "3d"), "3d", input_channels=4, num_classes=4)
    assert _n_params(planned) == SEGMAMBA_COUNT
    assert _n_params(VMUNet(3, 1, deep_supervision=True)) == VMUNET_COUNT  # drop-path rates need a real device
    p = PLANS["2d"]
    planned, _ = planned_network("vmunet", p["architecture"], [256, 256], 3, 1, allow_init=False, deep_supervision=True)
    assert _n_params(planned) == VMUNET_COUNT
    for cls, preset in ((SegMamba, SegMambaPreset()), (VMUNet, VMUNetPreset())):
        params = inspect.signature(cls).parameters
        shared = [f.name for f in dataclasses.fields(preset) if f.name in params]
        assert len(shared) >= 8 and all(params[k].default == getattr(preset, k) for k in shared)


def test_preset_keywords_are_checked_and_shown_in_the_signature():
    """SegMamba and VM-UNet take their preset's fields as keywords: shown by ``inspect.signature``,
    an unknown key or a wrong type is a one-line user error naming the key."""
    for cls, preset in ((SegMamba, SegMambaPreset()), (VMUNet, VMUNetPreset())):
        params = inspect.signature(cls).parameters
        for field in dataclasses.fields(preset):
            assert params[field.name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[field.name].default == getattr(preset, field.name)
    with pytest.raises(UserInputError, match="'feature_sizes'"):
        SegMamba(1, 2, feature_sizes=[8, 16])
    with pytest.raises(UserInputError, match="'d_state' must be an integer"):
        VMUNet(1, 2, d_state="16")


def test_nn_module_defaults_agree_with_the_presets():
    """``nn`` sits below ``architectures`` and cannot read a preset: the Mamba block sizes have no
    default there (:class:`SSMConfig` needs them), and where an nn module still has a keyword
    default, it is the preset's value (the plans always pass them)."""
    from umamba_seg.nn.ssm_config import SSMConfig
    from umamba_seg.nn.vil_layer import ViLLayer

    block_presets = (UMambaPreset(), SegMambaPreset(), VMUNetPreset())
    sizes = {f.name for f in dataclasses.fields(SSMConfig)} & {f.name for f in dataclasses.fields(block_presets[0])}
    assert sizes == {"d_state", "d_conv", "expand", "dt_rank"}
    for field in dataclasses.fields(SSMConfig):
        assert field.name not in sizes or field.default is dataclasses.MISSING, field.name
    for preset in block_presets:
        assert {k: getattr(preset.ssm_config(), k) for k in sizes} == {k: getattr(preset, k) for k in sizes}
    params = inspect.signature(ViLLayer).parameters
    for key, value in XLSTMPreset().mixer_kwargs().items():
        default = params[key].default
        assert default is inspect.Parameter.empty or default == value, (key, default, value)


def test_stage_rule_names_are_the_networks_rules():
    assert set(typing.get_args(presets.StageRule)) == set(STAGE_RULES)


# --------------------------------------------------------------------------- sizes and their checks


def test_every_family_has_the_shipped_sizes_and_small_is_smaller():
    assert presets.all_sizes() == ["default", "small"]
    for family in presets.PRESETS:
        assert presets.sizes(family) == ["default", "small"]
    assert presets.load_preset("umamba", "small") == UMambaPreset(d_state=8, expand=1)
    small = presets.load_preset("segmamba", "small")
    assert small.feature_size == (16, 32, 64, 128) and small.hidden_size == 256 and small.depths == (1, 1, 1, 1)
    assert small.d_state == SegMambaPreset().d_state  # what a size does not name stays the default
    for arch, plan in (("umamba_enc", "3d"), ("xlstm_bot", "2d"), ("segmamba", "3d")):
        default, small = (_n_params(_network(_block(arch, plan, size), plan)) for size in ("default", "small"))
        assert small < default, arch
    assert _block("vmunet", "2d", "small")["arch_kwargs"]["dims"] == [48, 96, 192, 384]


def test_a_misspelt_key_in_a_size_is_refused_naming_key_preset_and_keys(monkeypatch):
    sizes = presets.parse_sizes("umamba:\n  small: {d_stat: 8}\n", "sizes.yaml")
    monkeypatch.setattr(presets, "_read_sizes", lambda: sizes)
    with pytest.raises(UserInputError) as e:
        presets.load_preset("umamba", "small")
    line = str(e.value)
    assert "unknown key 'd_stat'" in line and "UMambaPreset (umamba)" in line and "(umamba: small)" in line
    assert "use one of its keys: mixer_fp32, enc_stages_3d" in line and "d_state, d_conv, expand, dt_rank" in line


@pytest.mark.parametrize("preset,changes,message", [
    (UMambaPreset(), {"d_state": "8"}, "'d_state' must be an integer, got '8'"),
    (UMambaPreset(), {"dt_rank": "aut"}, "'dt_rank' must be an integer or 'auto'"),
    (UMambaPreset(), {"mixer_fp32": 1}, "'mixer_fp32' must be true or false"),
    (XLSTMPreset(), {"enc_stages_2d": "every"}, "'enc_stages_2d' must be 'all' or 'alternate' or 'xlstm_enc_3d'"),
    (VMUNetPreset(), {"dims": [48, 96.5]}, "'dims' must be a list of integers, got [48, 96.5]"),
    (SegMambaPreset(), {"featuresize": [8]}, "unknown key 'featuresize' in the SegMambaPreset (segmamba) preset"),
])  # fmt: skip
def test_overrides_are_checked_against_the_fields(preset, changes, message):
    with pytest.raises(UserInputError) as e:
        preset.override(changes, "here.yaml")
    assert message in str(e.value) and "here.yaml" in str(e.value)


def test_overrides_keep_types_and_leave_the_preset_alone():
    vm = VMUNetPreset()
    changed = vm.override({"dims": [8, 16, 32, 64], "expand": 1.5, "dt_rank": 4})
    assert changed.dims == (8, 16, 32, 64) and changed.expand == 1.5 and changed.dt_rank == 4
    assert vm == VMUNetPreset() and hash(changed) != hash(vm)  # frozen, hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        vm.d_state = 4  # type: ignore[misc]


@pytest.mark.parametrize("text,message", [
    ("- umamba\n", "must map families to sizes"),
    ("mamba:\n  small: {d_state: 8}\n", "unknown architecture family 'mamba' in the preset sizes"),
    ("umamba:\n  default: {d_state: 8}\n", "'umamba' redefines the 'default' size"),
    ("umamba:\n  small: 8\n", "the sizes of 'umamba' must map size names to settings"),
])  # fmt: skip
def test_malformed_size_files_are_refused(text, message):
    with pytest.raises(UserInputError) as e:
        presets.parse_sizes(text, "sizes.yaml")
    assert message in str(e.value)


def test_unknown_family_or_size_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown preset size 'huge' for 'umamba'.*choose one of: default, small"):
        presets.load_preset("umamba", "huge")
    with pytest.raises(UserInputError, match="no preset for architecture family 'nope'"):
        presets.load_preset("nope")
    with pytest.raises(UserInputError, match="unknown preset size 'huge' for segmamba, --preset, choose one of"):
        registry.get("segmamba").at_size("huge")
    assert registry.get("cnn").at_size("small") is registry.get("cnn")  # nnU-Net's plan has no preset


# --------------------------------------------------------------------------- package data


def test_sizes_ship_as_package_data_and_load_from_an_installed_copy(tmp_path):
    """A copy of what a wheel holds (every module plus pyproject's package-data), imported from a
    zip: the sizes come through importlib.resources, not from the checkout."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(umamba_seg.__file__).parent.parent
    assert not (root / "umamba_seg" / "configs").exists()  # no link to a folder outside the package
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {f for pkg, patterns in package_data.items() for pattern in patterns
               for f in (root / pkg.replace(".", "/")).glob(pattern)}  # fmt: skip
    resource = presets.resources.files("umamba_seg.architectures").joinpath(presets.SIZES_RESOURCE)
    assert Path(str(resource)) in shipped
    archive = tmp_path / "site-packages.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted({*(root / "umamba_seg").rglob("*.py"), *shipped}):
            z.write(f, f.relative_to(root).as_posix())
    code = ("from umamba_seg.architectures import presets; print(presets.__file__); "
            "print(presets.load_preset('segmamba', 'small').feature_size)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(archive)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    where, value = r.stdout.split("\n")[:2]
    assert where.startswith(str(archive)) and value == "(16, 32, 64, 128)"


# --------------------------------------------------------------------------- plan-and-preprocess --preset


def _planned_kwargs(workdir: Path, arch: str) -> dict:
    plans = json.loads(next((workdir / "preprocessed").glob(f"*/umambaPlans_{arch}.json")).read_text())
    return plans["configurations"]["2d"]["architecture"]["arch_kwargs"]


def test_plan_and_preprocess_preset_reaches_the_plans(raw_2d_dataset, trained_2d_workdir, workdir_factory, capsys):
    """``--preset small`` changes the arch_kwargs written into the plans (what train, predict and
    stock nnU-Net build); an unknown size is one line, before any work. The session's 2D
    fingerprint is reused (extracting one takes longer than planning)."""
    from umamba_seg.cli import main as cli

    workdir = workdir_factory(raw_2d_dataset)
    pre = workdir / "preprocessed" / raw_2d_dataset.name
    pre.mkdir()
    for name in ("dataset_fingerprint.json", "dataset.json"):
        shutil.copy(trained_2d_workdir / "preprocessed" / raw_2d_dataset.name / name, pre)
    argv = ["plan-and-preprocess", "-d", raw_2d_dataset.name[7:10], "-a", "umamba_bot", "segmamba", "-c", "2d",
            "--no-preprocess", "-np", "1", "--workdir", str(workdir)]  # fmt: skip

    assert cli([*argv, "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown preset size 'huge' for umamba_bot, --preset, choose one of: default, small"]
    assert sorted(p.name for p in pre.iterdir()) == ["dataset.json", "dataset_fingerprint.json"]

    assert cli(argv) == 0
    default = {arch: _planned_kwargs(workdir, arch) for arch in ("umamba_bot", "segmamba")}
    assert cli([*argv, "--preset", "small"]) == 0
    small = {arch: _planned_kwargs(workdir, arch) for arch in ("umamba_bot", "segmamba")}
    capsys.readouterr()
    assert default["umamba_bot"]["mixer_kwargs"] == UMambaPreset().mixer_kwargs()
    assert small["umamba_bot"]["mixer_kwargs"] == {**UMambaPreset().mixer_kwargs(), "d_state": 8, "expand": 1}
    assert default["segmamba"]["feature_size"] == [48, 96, 192, 384]
    assert small["segmamba"]["feature_size"] == [16, 32, 64, 128] and small["segmamba"]["hidden_size"] == 256
    for arch in ("umamba_bot", "segmamba"):  # only the preset's keys differ
        assert {k for k in default[arch] if default[arch][k] != small[arch][k]} <= {
            "mixer_kwargs",
            "feature_size",
            "hidden_size",
            "depths",
            "patch_size",
        }
