"""``benchmark --recipe``: the recipe reaches the settings and every network's ``train_fold``."""

from __future__ import annotations

import shutil

import pytest

from umamba_seg.benchmark import runner
from umamba_seg.benchmark.runner import BenchmarkSettings, run_benchmark
from umamba_seg.cli import main as cli
from umamba_seg.training import run as training_run
from umamba_seg.training.recipes import DEFAULT_RECIPE
from umamba_seg.workspace import Workspace


@pytest.mark.parametrize(
    "flags, recipe, rounds", [([], DEFAULT_RECIPE, 5), (["--recipe", "authors", "--rounds", "3"], "authors", 3)]
)
def test_cli_options_reach_the_settings(monkeypatch, tmp_path, flags, recipe, rounds):
    seen = {}
    monkeypatch.setattr(
        runner, "run_benchmark", lambda ws, name, conf, archs, settings: seen.update(name=name, settings=settings)
    )
    (tmp_path / "raw" / "Dataset903_X").mkdir(parents=True)
    assert cli(["benchmark", "-d", "903", "-c", "2d", "-a", "umamba_bot", "--workdir", str(tmp_path), *flags]) == 0
    assert seen["name"] == "Dataset903_X"
    assert seen["settings"].recipe == recipe and seen["settings"].rounds == rounds


def test_unknown_recipe_is_one_error_line(tmp_path, capsys):
    assert cli(["benchmark", "-d", "903", "-c", "2d", "--recipe", "paper", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "invalid choice: 'paper'" in err[0]


def test_recipe_reaches_train_fold(trained_2d_workdir, tmp_path, monkeypatch):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir, workdir)
    ws = Workspace.from_workdir(workdir)
    name = next((workdir / "raw").iterdir()).name
    calls = []

    class Reached(Exception):
        pass

    def fake_train_fold(ws, dataset_name, fold_run, plans_name=None):
        calls.append((fold_run.arch, fold_run.recipe, plans_name))
        raise Reached

    monkeypatch.setattr(training_run, "train_fold", fake_train_fold)
    with pytest.raises(Reached):
        run_benchmark(ws, name, "2d", ["cnn"], BenchmarkSettings(recipe="authors", device="cpu", num_processes=1))
    assert calls == [("cnn", "authors", "umambaBenchPlans_cnn")]
