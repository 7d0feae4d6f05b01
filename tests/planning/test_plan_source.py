"""Issue 21: ``--plan-source ssm|cnn``: plans names, the CNN's plan per network, and finding the models."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline_fixtures import TINY_SCHEDULE, run_cli

from umamba_seg.architectures import registry
from umamba_seg.cli import main as cli
from umamba_seg.planning.arch_plans import plans_file, write_arch_plans
from umamba_seg.planning.cnn_source import PATCH_NOTE_KEY, SOURCE_KEY, cnn_source_plans
from umamba_seg.planning.explain import explain_plans
from umamba_seg.planning.naming import PLAN_SOURCES, parse_plans_identifier, plans_identifier
from umamba_seg.planning.ssm_planner import TopologyKnobs, cnn_architecture
from umamba_seg.workspace import Workspace

# what may differ between an architecture's cnn-sourced plans and the CNN's: the network and records of it
NETWORK_KEYS = {"architecture", PATCH_NOTE_KEY}
PLANS_RECORD_KEYS = {"plans_name", "umamba_arch", SOURCE_KEY, "umamba_same_plan_as"}


def _cnn_plans(spacing, patch, batch=7) -> dict:
    patch, block, _ = cnn_architecture(spacing, patch, TopologyKnobs())
    conf = {"data_identifier": "umambaPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": batch,
            "patch_size": patch, "median_image_size_in_voxels": [float(p) for p in patch], "spacing": spacing,
            "normalization_schemes": ["ZScoreNormalization"] * 3, "use_mask_for_norm": [False] * 3,
            "architecture": block, "batch_dice": True}
    return {"dataset_name": "Dataset904_PlanSource", "plans_name": "umambaPlans_cnn", "configurations": {"2d": conf},
            "transpose_forward": [0, 1], "transpose_backward": [0, 1], "label_manager": "LabelManager",
            "image_reader_writer": "NaturalImage2DIO", "foreground_intensity_properties_per_channel": {}}


def _without(d: dict, keys: set) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_plans_names_round_trip_and_never_collide():
    archs = registry.available()
    names = {}
    for arch in archs:
        for source in PLAN_SOURCES:
            name = plans_identifier(arch, source)
            assert "__" not in name
            expected = (arch, "ssm") if arch == "cnn" else (arch, source)  # the CNN's plan is the same under both
            assert parse_plans_identifier(name) == expected, name
            names.setdefault(name, set()).add((arch, source))
    assert all(len(v) == 1 or k == "umambaPlans_cnn" for k, v in names.items())
    assert plans_identifier("umamba_bot") == "umambaPlans_umamba_bot"  # every existing workdir keeps its name
    assert plans_identifier("umamba_bot", "cnn") == "umambaCNNPlans_umamba_bot"
    assert plans_identifier("vmunet_nossm", "cnn") == "umambaCNNPlans_vmunet_nossm"
    for other in ("umambaBenchPlans_vmunet", "nnUNetPlans", "umambaPlans_", "umambaCNNPlans_cnn", "umambaPlans_a__b"):
        assert parse_plans_identifier(other) is None, other
    with pytest.raises(ValueError, match="plan source"):
        plans_identifier("umamba_bot", "transformer")


@pytest.mark.parametrize("arch", ["umamba_bot", "xlstm_bot"])
def test_cnn_source_keeps_the_cnn_plan_and_swaps_only_the_network(arch):
    cnn = _cnn_plans([1.0, 1.0], [64, 80], batch=9)
    cnn_conf = cnn["configurations"]["2d"]
    out = cnn_source_plans(cnn, arch)
    conf = out.plans["configurations"]["2d"]
    assert out.plans_name == f"umambaCNNPlans_{arch}" and out.plans[SOURCE_KEY] == "cnn" and out.notes["2d"] == ""
    assert _without(conf, NETWORK_KEYS) == _without(cnn_conf, NETWORK_KEYS)  # patch, batch, spacing, data ...
    assert conf["patch_size"] == [64, 80] and conf["batch_size"] == 9
    assert _without(out.plans, PLANS_RECORD_KEYS | {"configurations"}) == _without(cnn, {"plans_name", "configurations"})
    assert conf["architecture"] == registry.get(arch).architecture_block(cnn_conf["architecture"], [64, 80])
    assert conf["architecture"]["network_class_name"] != cnn_conf["architecture"]["network_class_name"]
    for key in ("strides", "kernel_sizes", "n_stages", "features_per_stage"):  # the CNN's topology
        assert conf["architecture"]["arch_kwargs"][key] == cnn_conf["architecture"]["arch_kwargs"][key], key
    assert cnn["configurations"]["2d"] == cnn_conf and cnn["plans_name"] == "umambaPlans_cnn"  # input untouched


def test_cnn_source_states_vmunet_patch_adjustment_in_plans_and_explain(tmp_path):
    ws = Workspace.from_workdir(tmp_path)
    pre = ws.preprocessed_dataset("Dataset904_PlanSource")
    pre.mkdir(parents=True)
    (pre / "umambaPlans_cnn.json").write_text(json.dumps(_cnn_plans([1.0, 1.0], [32, 72])))
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                  "labels": {"background": 0, "a": 1}, "numTraining": 4,
                                                  "file_ending": ".png"}))
    path = write_arch_plans(pre, "vmunet", plan_source="cnn")
    assert path == plans_file(pre, "vmunet", "cnn") == pre / "umambaCNNPlans_vmunet.json"
    assert not plans_file(pre, "vmunet").exists()  # the SSM planner's file is not written
    conf = json.loads(path.read_text())["configurations"]["2d"]
    assert conf["patch_size"] == [32, 64] == registry.get("vmunet").adjust_patch([32, 72])
    assert conf[PATCH_NOTE_KEY] == "patch 32x72 -> 32x64, the nearest vmunet accepts"
    assert conf["batch_size"] == 7
    assert write_arch_plans(pre, "cnn", plan_source="cnn") == pre / "umambaPlans_cnn.json"
    text = explain_plans(ws, "Dataset904_PlanSource", ["cnn", "vmunet"], ["2d"], 8.0, "cnn")
    assert "--plan-source cnn" in text
    assert "note: vmunet 2d: patch 32x72 -> 32x64, the nearest vmunet accepts" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:2] in (["cnn", "2d"],
                                                                                              ["vmunet", "2d"])}
    assert rows["cnn"][3] == "32x72" and rows["vmunet"][3] == "32x64" and rows["vmunet"][6] == "7"
