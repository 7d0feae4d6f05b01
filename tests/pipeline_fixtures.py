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

TINY_SCHEDULE = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "--device", "cpu", "--seed", "0"]


def run_cli(*args: str) -> None:
    """Run a CLI command in-process and fail the test with its arguments if it does not exit 0."""
    code = cli([str(a) for a in args])
    assert code == 0, f"umamba-seg {' '.join(map(str, args))} exited {code}"


def _trained_workdir(tmp_path_factory, raw_dataset: Path, configuration: str, folds: tuple[str, ...]) -> Path:
    workdir = tmp_path_factory.mktemp(f"pipeline_{configuration}")
    (workdir / "raw").mkdir()
    shutil.copytree(raw_dataset, workdir / "raw" / raw_dataset.name)
    ds_id = raw_dataset.name[7:10]
    run_cli("plan-and-preprocess", "-d", ds_id, "-a", "cnn", "-c", configuration, "--workdir", workdir)
    for f in folds:
        run_cli("train", "-d", ds_id, "-c", configuration, "-f", f, "--npz", "--workdir", workdir, *TINY_SCHEDULE)
    return workdir


@pytest.fixture(scope="session")
def trained_2d_workdir(tmp_path_factory, raw_2d_dataset: Path) -> Path:
    """Workdir with the 2D dataset planned (cnn), preprocessed (2d) and folds 0 and 1 trained with --npz."""
    return _trained_workdir(tmp_path_factory, raw_2d_dataset, "2d", ("0", "1"))


@pytest.fixture(scope="session")
def trained_3d_workdir(tmp_path_factory, raw_3d_dataset: Path) -> Path:
    """Workdir with the 3D dataset planned (cnn), preprocessed (3d_fullres) and folds 0 and 1 trained."""
    return _trained_workdir(tmp_path_factory, raw_3d_dataset, "3d_fullres", ("0", "1"))
