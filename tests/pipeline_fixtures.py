"""Session fixtures for the CLI pipeline: datasets planned, preprocessed and trained once.

Loaded from ``conftest.py`` (``pytest_plugins``). Everything runs in-process through
``umamba_seg.cli.main`` with a tiny schedule (2 iterations, 1 validation iteration), so the
tests that predict, ensemble and evaluate share one training run per dataset.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from umamba_seg.cli import main as cli

os.environ.setdefault("nnUNet_n_proc_DA", "0")  # no augmentation worker processes in tests


def tiny_schedule(epochs: int = 1) -> list[str]:
    """Training options of the tests: ``epochs`` epochs of 2 iterations, 1 validation iteration, CPU, seed 0."""
    return ["--epochs", str(epochs), "--iters-per-epoch", "2", "--val-iters", "1", "--device", "cpu", "--seed", "0"]


TINY_SCHEDULE = tiny_schedule(1)


def run_cli(*args: object) -> None:
    """Run a CLI command in-process and fail the test with its arguments if it does not exit 0."""
    code = cli([str(a) for a in args])
    assert code == 0, f"umamba-seg {' '.join(map(str, args))} exited {code}"


def train_args(workdir: Path, dataset: str, config: str, fold: str, *options: object) -> list[object]:
    """``train`` of one fold of a workdir's dataset; ``options`` add the rest (architecture, schedule, flags)."""
    return ["train", "-d", dataset, "-c", config, "-f", fold, "--workdir", workdir, *options]


def predict_args(workdir: Path, images: Path, out: Path, dataset: str, config: str, *options: object) -> list[object]:
    """``predict`` of ``images`` into ``out`` on the CPU with a workdir's trained model of ``dataset``/``config``;
    ``options`` pick the rest (``-a``, ``-f``, ``--no-tta``, ...)."""
    on_cpu = ["--device", "cpu", "--workdir", workdir]
    return ["predict", "-i", images, "-o", out, "-d", dataset, "-c", config, *options, *on_cpu]


def _trained_workdir(tmp_path_factory, raw_dataset: Path, configuration: str, folds: tuple[str, ...]) -> Path:
    workdir = tmp_path_factory.mktemp(f"pipeline_{configuration}")
    (workdir / "raw").mkdir()
    shutil.copytree(raw_dataset, workdir / "raw" / raw_dataset.name)
    ds_id = raw_dataset.name[7:10]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", "cnn", "-c", configuration, "--workdir", workdir)
    for f in folds:
        run_cli(*train_args(workdir, ds_id, configuration, f, "--npz", *TINY_SCHEDULE))
    return workdir


@pytest.fixture(scope="session")
def trained_2d_workdir(tmp_path_factory, raw_2d_dataset: Path) -> Path:
    """Workdir with the 2D dataset planned (cnn), preprocessed (2d) and folds 0 and 1 trained with --npz."""
    return _trained_workdir(tmp_path_factory, raw_2d_dataset, "2d", ("0", "1"))


@pytest.fixture(scope="session")
def trained_3d_workdir(tmp_path_factory, raw_3d_dataset: Path) -> Path:
    """Workdir with the 3D dataset planned (cnn), preprocessed (3d_fullres) and folds 0 and 1 trained."""
    return _trained_workdir(tmp_path_factory, raw_3d_dataset, "3d_fullres", ("0", "1"))
