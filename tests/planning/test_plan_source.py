"""Issue 21: ``--plan-source ssm|cnn``: plans names, the CNN's plan per network, and finding the models."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import cnn_plans_2d
from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.architectures import registry
from umamba_seg.cli import main as cli
from umamba_seg.errors import UserInputError
from umamba_seg.planning.arch_plans import plans_file, write_arch_plans
from umamba_seg.planning.calibrate import main as calibrate_main
from umamba_seg.planning.cnn_source import PATCH_NOTE_KEY, SOURCE_KEY, cnn_source_plans
from umamba_seg.planning.explain import explain_plans
from umamba_seg.planning.naming import PLAN_SOURCES, parse_plans_identifier, plans_identifier
from umamba_seg.planning.pipeline import ensure_plans
from umamba_seg.workspace import Workspace

# what may differ between an architecture's cnn-sourced plans and the CNN's: the network and records of it
NETWORK_KEYS = {"architecture", PATCH_NOTE_KEY}
PLANS_RECORD_KEYS = {"plans_name", "umamba_arch", SOURCE_KEY, "umamba_same_plan_as"}


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
    cnn = cnn_plans_2d([1.0, 1.0], [64, 80], batch=9, dataset_name="Dataset904_PlanSource")
    cnn_conf = cnn["configurations"]["2d"]
    out = cnn_source_plans(cnn, arch)
    conf = out.plans["configurations"]["2d"]
    assert out.plans_name == f"umambaCNNPlans_{arch}" and out.plans[SOURCE_KEY] == "cnn" and out.notes["2d"] == ""
    assert _without(conf, NETWORK_KEYS) == _without(cnn_conf, NETWORK_KEYS)  # patch, batch, spacing, data ...
    assert conf["patch_size"] == [64, 80] and conf["batch_size"] == 9
    assert _without(out.plans, PLANS_RECORD_KEYS | {"configurations"}) == _without(
        cnn, {"plans_name", "configurations"}
    )
    assert conf["architecture"] == registry.get(arch).architecture_block(cnn_conf["architecture"], [64, 80])
    assert conf["architecture"]["network_class_name"] != cnn_conf["architecture"]["network_class_name"]
    for key in ("strides", "kernel_sizes", "n_stages", "features_per_stage"):  # the CNN's topology
        assert conf["architecture"]["arch_kwargs"][key] == cnn_conf["architecture"]["arch_kwargs"][key], key
    assert cnn["configurations"]["2d"] == cnn_conf and cnn["plans_name"] == "umambaPlans_cnn"  # input untouched


def test_cnn_source_states_vmunet_patch_adjustment_in_plans_and_explain(tmp_path, capsys):
    ws = Workspace.from_workdir(tmp_path)
    pre = ws.preprocessed_dataset("Dataset904_PlanSource")
    pre.mkdir(parents=True)
    (pre / "umambaPlans_cnn.json").write_text(
        json.dumps(cnn_plans_2d([1.0, 1.0], [32, 72], dataset_name="Dataset904_PlanSource"))
    )
    (pre / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "R", "1": "G", "2": "B"},
                "labels": {"background": 0, "a": 1},
                "numTraining": 4,
                "file_ending": ".png",
            }
        )
    )
    path = write_arch_plans(pre, "vmunet", plan_source="cnn")
    assert path == plans_file(pre, "vmunet", "cnn") == pre / "umambaCNNPlans_vmunet.json"
    assert not plans_file(pre, "vmunet").exists()  # the SSM planner's file is not written
    conf = json.loads(path.read_text())["configurations"]["2d"]
    assert conf["patch_size"] == [32, 64] == registry.get("vmunet").adjust_patch([32, 72])
    assert conf[PATCH_NOTE_KEY] == "patch 32x72 -> 32x64, the nearest vmunet accepts"
    assert conf["batch_size"] == 7
    assert write_arch_plans(pre, "cnn", plan_source="cnn") == pre / "umambaPlans_cnn.json"
    # train plans on demand: the cnn source's plans are derived from the stored CNN plans, the SSM planner not run
    assert (
        ensure_plans(ws, "Dataset904_PlanSource", "segmamba", plan_source="cnn") == pre / "umambaCNNPlans_segmamba.json"
    )
    assert not plans_file(pre, "segmamba").exists()
    text = explain_plans(ws, "Dataset904_PlanSource", ["cnn", "vmunet"], ["2d"], 8.0, "cnn")
    assert "--plan-source cnn" in text
    assert "note: vmunet 2d: patch 32x72 -> 32x64, the nearest vmunet accepts" in text
    rows = {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if line.split()[:2] in (["cnn", "2d"], ["vmunet", "2d"])
    }
    assert rows["cnn"][3] == "32x72" and rows["vmunet"][3] == "32x64" and rows["vmunet"][6] == "7"
    # the memory model's check reads the same plans (either source) and measures the planned patch
    capsys.readouterr()
    assert (
        calibrate_main([str(pre), "-a", "cnn", "vmunet", "--plan-source", "cnn", "-c", "2d", "--batch-size", "1"]) == 0
    )
    measured = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(measured) == {"cnn", "vmunet[cnn]"}
    assert measured["vmunet[cnn]"][2] == "32x64" and measured["cnn"][2] == "32x72"
    assert all(float(r[6]) > 0 for r in measured.values())  # bytes saved for backward were measured
    with pytest.raises(UserInputError, match="umambaCNNPlans_segmamba_nossm.json not found"):
        calibrate_main([str(pre), "-a", "segmamba_nossm", "--plan-source", "cnn", "-c", "2d"])


def test_model_folder_names_parse_for_any_trainer_and_either_plans_source(tmp_path):
    from umamba_seg.training.model_folders import model_folder_name, parse_model_folder

    name = model_folder_name("umambaTrainer_xLSTMUNetBotAuthors", "xlstm_bot", "2d", "cnn")
    assert name == "umambaTrainer_xLSTMUNetBotAuthors__umambaCNNPlans_xlstm_bot__2d"
    m = parse_model_folder(tmp_path / name)
    assert (m.trainer, m.plans, m.arch, m.plan_source, m.configuration) == (
        "umambaTrainer_xLSTMUNetBotAuthors",
        "umambaCNNPlans_xlstm_bot",
        "xlstm_bot",
        "cnn",
        "2d",
    )
    m = parse_model_folder(tmp_path / "umambaTrainer__umambaPlans_umamba_bot_nossm__3d_fullres")
    assert (m.arch, m.plan_source, m.configuration) == ("umamba_bot_nossm", "ssm", "3d_fullres")
    for other in (
        "umambaTrainer__umambaBenchPlans_vmunet__2d",
        ".umambaTrainer__umambaPlans_cnn__2d",
        "nnUNetTrainer__nnUNetPlans__2d",
        "umambaTrainer__umambaPlans_cnn",
        "ensembles",
    ):
        assert parse_model_folder(tmp_path / other) is None, other


def test_recipe_and_plan_source_select_the_model_folder(tmp_path):
    from umamba_seg.errors import UserInputError
    from umamba_seg.training.model_folders import parse_model_folder, resolve_trained_model, selecting_options

    def options(name):
        return selecting_options(parse_model_folder(tmp_path / name))

    assert options("umambaTrainer__umambaPlans_umamba_bot__2d") == ""
    assert options("umambaTrainer__umambaCNNPlans_umamba_bot__2d") == "--plan-source cnn"
    assert options("umambaTrainer_UMambaAuthors__umambaCNNPlans_umamba_bot__2d") == "--recipe authors"  # its plans
    assert options("umambaTrainer_UMambaAuthors__umambaPlans_umamba_bot__2d") == "--recipe authors --plan-source ssm"
    assert options("umambaTrainer_xLSTMUNetBotAuthors__umambaCNNPlans_umamba_bot__2d") is None  # another's class
    assert options("myTrainer__umambaPlans_cnn__2d") is None  # predict -m FOLDER then

    ws = Workspace.from_workdir(tmp_path)
    authors = ws.results_dataset("Dataset904_X") / "umambaTrainer_UMambaAuthors__umambaCNNPlans_umamba_bot__2d"
    authors.mkdir(parents=True)
    assert resolve_trained_model(ws, "Dataset904_X", "umamba_bot", "2d", "authors") == authors
    assert resolve_trained_model(ws, "Dataset904_X", "umamba_bot", "2d", "authors", "cnn") == authors
    with pytest.raises(UserInputError) as e:
        resolve_trained_model(ws, "Dataset904_X", "umamba_bot", "2d")
    assert "no trained model umambaTrainer__umambaPlans_umamba_bot__2d" in e.value.what
    assert f"trained models of Dataset904_X: {authors.name}" in e.value.what
    with pytest.raises(UserInputError) as e:
        resolve_trained_model(ws, "Dataset904_X", "umamba_bot", "2d", "authors", "ssm")
    assert "--recipe authors" in e.value.fix


def _only_validation_skipped(monkeypatch):
    """``train`` through the CLI, the fold's final validation left out (nnunetv2's export pool of spawned
    workers costs ~30 s on a 2-core machine); everything else is the real training."""
    from dataclasses import replace

    from umamba_seg.training import run

    real = run.train_fold
    monkeypatch.setattr(
        run, "train_fold", lambda ws, name, fold_run, **kw: real(ws, name, replace(fold_run, validate=False), **kw)
    )


@pytest.mark.slow
def test_cli_cnn_plan_source_plans_trains_predicts_and_finds_the_model(
    trained_2d_workdir, tmp_path, capsys, monkeypatch
):
    from umamba_seg.evaluation.find_best import _predict_cmd, discover_models

    work = tmp_path / "w"
    for sub in ("raw", "preprocessed"):
        shutil.copytree(trained_2d_workdir / sub, work / sub)
    name = next((work / "raw").iterdir()).name
    ws = Workspace.from_workdir(work)
    pre = ws.preprocessed_dataset(name)
    cnn_folder = "umambaTrainer__umambaPlans_cnn__2d"  # the fixture's trained CNN, read only (find-best)
    ws.results_dataset(name).mkdir(parents=True)
    (ws.results_dataset(name) / cnn_folder).symlink_to(trained_2d_workdir / "results" / name / cnn_folder)

    run_cli(
        "plan-and-preprocess",
        "-d",
        name,
        "-a",
        "umamba_bot",
        "xlstm_bot",
        "-c",
        "2d",
        "--plan-source",
        "cnn",
        "--explain",
        "--workdir",
        work,
    )
    out = capsys.readouterr().out
    assert "umambaCNNPlans_umamba_bot, umambaCNNPlans_xlstm_bot, umambaPlans_cnn" in out
    cnn = json.loads((pre / "umambaPlans_cnn.json").read_text())["configurations"]["2d"]
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[1:2] == ["2d"]}
    for arch in ("umamba_bot", "xlstm_bot"):
        assert not (pre / f"umambaPlans_{arch}.json").exists()  # the SSM planner's plans are another file
        conf = json.loads((pre / f"umambaCNNPlans_{arch}.json").read_text())["configurations"]["2d"]
        assert _without(conf, NETWORK_KEYS) == _without(cnn, NETWORK_KEYS)  # patch, batch, spacing, data folder
        assert (pre / conf["data_identifier"]).is_dir()  # the shared preprocessed data
        assert conf["architecture"]["arch_kwargs"]["strides"] == cnn["architecture"]["arch_kwargs"]["strides"]
        assert table[arch][3] == "x".join(map(str, cnn["patch_size"])) and table[arch][6] == str(cnn["batch_size"])
    assert table["umamba_bot"][-2].startswith("UMambaBot") and table["xlstm_bot"][-2].startswith("XLSTMUNetBot")

    _only_validation_skipped(monkeypatch)
    bot_on_cnn = ("-a", "umamba_bot", "--plan-source", "cnn")  # the U-Mamba Bot on the CNN's plans
    run_cli(*train_args(work, name, "2d", "0", *bot_on_cnn, *TINY_SCHEDULE))
    model = ws.results_dataset(name) / "umambaTrainer__umambaCNNPlans_umamba_bot__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    assert json.loads((model / "plans.json").read_text())["plans_name"] == "umambaCNNPlans_umamba_bot"

    raw = work / "raw" / name
    run_cli(*predict_args(work, raw / "imagesTs", tmp_path / "pred", name, "2d", *bot_on_cnn, "-f", "0", "--no-tta"))
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(list((raw / "imagesTs").glob("*_0000.png")))
    capsys.readouterr()
    code = cli([*map(str, predict_args(work, raw / "imagesTs", tmp_path / "p2", name, "2d", "-a", "umamba_bot"))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1  # ssm plans: not trained; one line naming what is
    assert "no trained model umambaTrainer__umambaPlans_umamba_bot__2d" in err
    assert f"trained models of {name}: umambaTrainer__umambaCNNPlans_umamba_bot__2d, {cnn_folder}" in err

    run_cli("export-model", "-d", name, "-c", "2d", *bot_on_cnn, "-o", tmp_path / "m.zip", "--workdir", work)
    run_cli("install-model", tmp_path / "m.zip", "--workdir", tmp_path / "elsewhere")
    assert "-a umamba_bot -i IN -o OUT --plan-source cnn" in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / "results" / name / model.name / "fold_0" / "checkpoint_final.pth").is_file()

    (model / "fold_0" / "validation").mkdir()  # find-best counts folds with a validation folder
    found = {m["dir"].name: m for m in discover_models(ws, name)}
    assert set(found) == {cnn_folder, model.name}
    bot = found[model.name]
    assert (bot["arch"], bot["plan_source"], bot["trainer"]) == ("umamba_bot", "cnn", "umambaTrainer")
    assert "-a umamba_bot --plan-source cnn -f 0" in _predict_cmd(1, bot, [0], "OUT", str(work), False)
    assert "--plan-source" not in _predict_cmd(1, found[cnn_folder], [0], "OUT", str(work), False)


def test_plans_without_the_configuration_are_one_line_naming_the_file(tmp_path):
    """Training, DDP and the benchmark load their plans through ``load_plans_with``: a configuration the
    plans lack is refused with the file and the planned ones."""
    from umamba_seg.planning.arch_plans import load_plans_with

    path = tmp_path / "umambaPlans_cnn.json"
    path.write_text(json.dumps(cnn_plans_2d([1.0, 1.0], [32, 72])))
    assert set(load_plans_with(path, "2d")["configurations"]) == {"2d"}
    with pytest.raises(UserInputError, match="configuration '3d_fullres' is not in the plans") as err:
        load_plans_with(path, "3d_fullres")
    assert err.value.where == str(path) and err.value.fix == "choose one of 2d"
