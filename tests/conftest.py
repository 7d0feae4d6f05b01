"""Shared pytest fixtures: small synthetic nnU-Net raw datasets, generated once per session.

Fixtures (names are stable; other test files rely on them):

``synthetic_raw_dir`` (session)
    A session temp folder holding the generated raw datasets below, each in its own
    raw folder named after its arguments (so two argument sets never overwrite each
    other). Treat it and everything in it as read-only: tests that plan, preprocess or
    train copy a dataset into their own workdir with ``workdir_factory``.
``raw_2d_dataset`` (session)
    ``Path`` to ``Dataset903_SynthEndoscopy``: RGB PNG, 64 x 64, channels R/G/B (one
    ``_0000.png`` file each), labels {background: 0, instrument: 1}, 8 training cases
    (``endo_000`` ..) and 2 held-out cases with labels in imagesTs/labelsTs
    (``endo_test_000`` ..).
``raw_3d_dataset`` (session)
    ``Path`` to ``Dataset901_SynthAbdomenCT``: CT in HU, shape (z, y, x) = 24 x 48 x 48,
    spacing 3.0 x 0.8 x 0.8 mm, channel "CT", labels {background: 0, liver: 1,
    kidney: 2}, 6 training cases (``ct_000`` ..) and 2 held-out cases (``ct_test_000`` ..).
``raw_dataset_factory`` (session)
    ``factory(kind, **make_dataset_kwargs) -> Path``: any kind of
    ``umamba_seg.data.KINDS`` (``ct3d``, ``mri3d``, ``endoscopy2d``, ``microscopy2d``),
    ``size="tiny"`` unless given, generated under ``synthetic_raw_dir`` and reused when
    asked again with the same arguments.
``workdir_factory`` (function)
    ``factory(*dataset_dirs) -> Path``: a fresh workdir ``<tmp>/workdir`` with
    ``raw/`` holding copies of the given dataset folders and empty ``preprocessed/`` and
    ``results/``, ready for ``umamba-seg ... --workdir <it>``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from umamba_seg.data import make_dataset

# session fixtures of trained CLI pipelines (trained_2d_workdir, trained_3d_workdir), shared by every module
pytest_plugins = ["tests.pipeline_fixtures"]


@pytest.fixture(scope="session")
def synthetic_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic_raw")


@pytest.fixture(scope="session")
def raw_dataset_factory(synthetic_raw_dir: Path) -> Callable[..., Path]:
    def factory(kind: str, **kwargs) -> Path:
        kwargs.setdefault("size", "tiny")
        kwargs.setdefault("progress", False)
        key = "_".join([kind] + [f"{k}-{v}" for k, v in sorted(kwargs.items()) if k != "progress"])
        return make_dataset(kind, synthetic_raw_dir / key, **kwargs)

    return factory


@pytest.fixture(scope="session")
def raw_2d_dataset(raw_dataset_factory: Callable[..., Path]) -> Path:
    return raw_dataset_factory("endoscopy2d")


@pytest.fixture(scope="session")
def raw_3d_dataset(raw_dataset_factory: Callable[..., Path]) -> Path:
    return raw_dataset_factory("ct3d")


@pytest.fixture
def workdir_factory(tmp_path: Path) -> Callable[..., Path]:
    def factory(*dataset_dirs: Path) -> Path:
        workdir = tmp_path / "workdir"
        for sub in ("raw", "preprocessed", "results"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        for d in dataset_dirs:
            d = Path(d)
            target = workdir / "raw" / d.name
            if not target.exists():
                shutil.copytree(d, target)
        return workdir

    return factory
