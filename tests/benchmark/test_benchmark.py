"""Issue 15: ``umamba-seg benchmark``: every architecture on the CNN's plan, side by side."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.helpers import cnn_plans_2d
from tests.pipeline_fixtures import run_cli
from umamba_seg.architectures import registry
from umamba_seg.benchmark.ratios import check_inference_target
from umamba_seg.benchmark.report import PLOT_PNG, RESULTS_JSON, TABLE_CSV, TABLE_MD
from umamba_seg.benchmark.same_plan import benchmark_archs, same_plan_plans
from umamba_seg.cli import main as cli
from umamba_seg.evaluation.find_best import discover_models
from umamba_seg.planning.memory_model import estimate_memory
from umamba_seg.training.recipes import trainer_name
from umamba_seg.training.trainer import STEP_TIMES_FILE
from umamba_seg.workspace import Workspace


def test_benchmark_archs_bring_their_ablation_and_the_cnn():
    assert benchmark_archs(["umamba_bot"]) == ["cnn", "umamba_bot", "umamba_bot_nossm"]
    assert benchmark_archs(["vmunet_nossm"]) == ["cnn", "vmunet", "vmunet_nossm"]
    assert benchmark_archs(["cnn"]) == ["cnn"]
    assert benchmark_archs(None) == registry.available()


def test_same_plan_swaps_only_the_network_and_notes_an_adjusted_patch():
    cnn = cnn_plans_2d([1.0, 1.0], [32, 72])
    cnn_conf = cnn["configurations"]["2d"]
    assert cnn_conf["patch_size"] == [32, 72]

    vm = same_plan_plans(cnn, "vmunet")
    conf = vm.plans["configurations"]["2d"]
    assert vm.plans_name == "umambaBenchPlans_vmunet" and vm.plans["umamba_same_plan_as"] == "umambaPlans_cnn"
    assert conf["patch_size"] == [32, 64] == registry.get("vmunet").adjust_patch([32, 72])
    assert vm.notes["2d"] == "patch 32x72 -> 32x64, the nearest vmunet accepts" == conf["umamba_patch_note"]
    for key in ("batch_size", "spacing", "data_identifier", "normalization_schemes"):
        assert conf[key] == cnn_conf[key], key
    assert conf["architecture"]["network_class_name"].endswith("vmunet.VMUNet")
    assert cnn["configurations"]["2d"]["patch_size"] == [32, 72]  # the CNN's plans are not modified
    # the network runs at the adjusted patch and refuses the CNN's (shape-only forward on the meta device)
    assert estimate_memory(conf["architecture"], [32, 64], 1, 3, 2, "cpu", "none", traced_batch=1).saved_bytes > 0
    with pytest.raises(ValueError, match="divisible"):
        estimate_memory(conf["architecture"], [32, 72], 1, 3, 2, "cpu", "none", traced_batch=1)

    bot = same_plan_plans(cnn, "umamba_bot")
    bot_conf = bot.plans["configurations"]["2d"]
    assert bot.notes["2d"] == "" and "umamba_patch_note" not in bot_conf
    assert bot_conf["patch_size"] == [32, 72] and bot_conf["batch_size"] == 7
    assert bot_conf["architecture"]["network_class_name"].endswith("umamba.UMambaBot")
    assert bot_conf["architecture"]["arch_kwargs"]["strides"] == cnn_conf["architecture"]["arch_kwargs"]["strides"]
    assert same_plan_plans(cnn, "cnn").plans["configurations"]["2d"]["architecture"] == cnn_conf["architecture"]


def test_inference_target_says_backbone_or_token_mixer():
    checks = {
        c.arch: c
        for c in check_inference_target(
            {
                "cnn": 1.0,
                "umamba_bot": 1.6,
                "umamba_bot_nossm": 1.1,
                "vmunet": 2.0,
                "vmunet_nossm": 1.9,
                "xlstm_bot": 1.2,
            }
        )
    }
    assert set(checks) == {"umamba_bot", "vmunet", "xlstm_bot"}  # SSM networks only
    assert checks["xlstm_bot"].met and "ok" in checks["xlstm_bot"].line()
    assert not checks["umamba_bot"].met and "token mixer costs 0.50x" in checks["umamba_bot"].reason
    assert not checks["vmunet"].met and "backbone" in checks["vmunet"].reason
    assert "token mixer adds 0.10x" in checks["vmunet"].reason
    assert "OVER the 1.3x target" in checks["vmunet"].line() and "2.00x" in checks["vmunet"].line()
    with_patches = {
        c.arch: c
        for c in check_inference_target(
            {"cnn": 1.0, "segmamba": 3.0, "segmamba_nossm": 2.0},
            patch_voxels={"cnn": 100, "segmamba": 150, "segmamba_nossm": 150},
        )
    }
    assert with_patches["segmamba"].reason.endswith("its accepted patch has 1.50x the CNN's voxels")


def test_benchmark_unknown_arch_is_one_error_line(tmp_path, capsys):
    assert cli(["benchmark", "-d", "903", "-c", "2d", "-a", "nosuch", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown architecture 'nosuch'")


def test_benchmark_cli_on_2d_dataset(trained_2d_workdir, tmp_path):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir, workdir)
    ws = Workspace.from_workdir(workdir)
    name = next((workdir / "raw").iterdir()).name
    pre = ws.preprocessed_dataset(name)
    cnn_plans_before = (pre / "umambaPlans_cnn.json").read_bytes()
    models_before = discover_models(ws, name)

    run_cli(
        "benchmark",
        "-d",
        name[7:10],
        "-c",
        "2d",
        "-a",
        "umamba_bot",
        "--budget-epochs",
        "1",
        "--iters-per-epoch",
        "1",
        "--val-iters",
        "1",
        "--no-tta",
        "--device",
        "cpu",
        "-np",
        "1",
        "--rounds",
        "2",
        "--recipe",
        "authors",
        "--workdir",
        workdir,
    )

    out = ws.results_dataset(name) / "benchmark_2d_authors"
    for f in (TABLE_MD, TABLE_CSV, RESULTS_JSON, PLOT_PNG):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / PLOT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / RESULTS_JSON).read_text())
    rows = {r["arch"]: r for r in record["rows"]}
    assert list(rows) == ["cnn", "umamba_bot", "umamba_bot_nossm"]
    cnn_conf = json.loads(cnn_plans_before)["configurations"]["2d"]
    for arch, r in rows.items():
        assert r["spacing"] == cnn_conf["spacing"] and r["batch"] == cnn_conf["batch_size"], arch
        assert r["patch"] == cnn_conf["patch_size"] or r["note"].startswith("patch "), arch
        assert r["params"] > 0 and r["train_s_per_iter"] > 0 and r["infer_s_per_case"] > 0, arch
        assert r["timing_rounds"] == 2 and len(r["train_ratios"]) == len(r["infer_ratios"]) == 2, arch
        assert r["infer_vs_cnn"] > 0 and r["train_vs_cnn"] > 0 and r["infer_spread"] >= 0, arch
        assert 0.0 <= r["dice_mean"] <= 1.0 and set(r["dice_per_class"]) == {"instrument"}, arch
        assert 0.0 <= r["dice_per_class"]["instrument"] <= 1.0, arch
        assert r["estimated_activation_gb"] > 0 and r["measured_activation_gb"] > 0, arch
        assert 0.5 <= r["memory_ratio"] <= 2.0, (arch, r["memory_ratio"])
        trainer = trainer_name(arch, "authors")  # U-Mamba's authors' trainer class; the CNN's is nnU-Net's
        assert trainer == ("umambaTrainer" if arch == "cnn" else "umambaTrainer_UMambaAuthors"), arch
        assert (trainer in r["note"]) == (arch != "cnn"), (arch, r["note"])
        fold = ws.results_dataset(name) / f"{trainer}__umambaBenchPlans_{arch}__2d" / "fold_0"
        assert len(json.loads((fold / STEP_TIMES_FILE).read_text())["seconds"]) == 1, arch
    assert len({r["params"] for r in rows.values()}) == 3  # three different networks
    assert rows["cnn"]["infer_vs_cnn"] == 1.0 and rows["cnn"]["train_ratios"] == [1.0, 1.0]
    checks = record["inference_target"]["checks"]
    assert [c["arch"] for c in checks] == ["umamba_bot"] and checks[0]["ratio"] == rows["umamba_bot"]["infer_vs_cnn"]

    with open(out / TABLE_CSV, newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["arch"] for t in table] == list(rows)
    assert {t["batch"] for t in table} == {str(cnn_conf["batch_size"])}
    md = (out / TABLE_MD).read_text()
    assert sum(line.startswith(("| cnn ", "| umamba_bot ", "| umamba_bot_nossm ")) for line in md.splitlines()) == 3
    assert "umamba_bot: " in md and "the CNN's sliding-window time" in md
    assert "Timing: 2 interleaved round(s)" in md and record["meta"]["recipe"] == "authors"
    assert [line.startswith("- WARNING ") for line in md.splitlines()].count(True) == len(record["timing_warnings"])

    # the benchmark's plans and models never touch the user's
    assert (pre / "umambaPlans_cnn.json").read_bytes() == cnn_plans_before
    assert not (pre / "umambaPlans_umamba_bot.json").exists()
    assert [m["dir"] for m in discover_models(ws, name)] == [m["dir"] for m in models_before]
    bench_plans = json.loads((pre / "umambaBenchPlans_umamba_bot.json").read_text())
    assert bench_plans["configurations"]["2d"]["architecture"]["network_class_name"].endswith("UMambaBot")
