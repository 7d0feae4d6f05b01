"""Fixtures of the architecture tests: the 2D and 3D datasets their CLI runs plan, train and predict."""

from __future__ import annotations

import pytest

from tests.architectures.cli_runs import CLI_CASES, CLIDataset


@pytest.fixture(params=CLI_CASES, ids=[f"{fixture}-{config}" for fixture, config in CLI_CASES])
def cli_dataset(request, workdir_factory) -> CLIDataset:
    """The 2D, then the 3D test dataset in a fresh workdir, with the configuration to run."""
    fixture, config = request.param
    raw = request.getfixturevalue(fixture)
    return CLIDataset(raw, workdir_factory(raw), raw.name[7:10], raw.name, config)
