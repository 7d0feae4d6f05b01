"""What the architecture tests' CLI runs share: the planned plans of an architecture, shrunk in
place (a CLI run checks plumbing, not capacity), and the check that ``predict`` wrote every case."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from umamba_seg.atomic import write_json_atomic


def planned_plans(workdir: Path, dataset_name: str, arch: str) -> tuple[Path, dict]:
    """The plans file ``plan-and-preprocess`` wrote for ``arch`` in ``workdir`` and its content."""
    plans_file = workdir / "preprocessed" / dataset_name / f"umambaPlans_{arch}.json"
    return plans_file, json.loads(plans_file.read_text())


def shrink_plans(workdir: Path, dataset_name: str, arch: str, config: str, shrink: Callable[[dict], None]) -> dict:
    """``arch``'s plans with ``shrink`` applied to ``config``'s ``arch_kwargs``, written back; returns them."""
    plans_file, plans = planned_plans(workdir, dataset_name, arch)
    shrink(plans["configurations"][config]["architecture"]["arch_kwargs"])
    write_json_atomic(plans, plans_file)
    return plans


def assert_every_case_predicted(raw: Path, out: Path) -> None:
    """``out`` holds one prediction per held-out case of the raw dataset ``raw`` (its labelsTs), nothing else."""
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name for p in (raw / "labelsTs").iterdir() if p.name.endswith(ending))
    assert sorted(p.name for p in out.glob(f"*{ending}")) == cases


class CLIDataset(NamedTuple):
    """A test dataset copied into a fresh workdir for a CLI run, and the configuration to run."""

    raw: Path  # the session's raw dataset (held-out cases in imagesTs/labelsTs)
    workdir: Path
    dataset_id: str
    name: str
    config: str


# (dataset fixture, configuration): what the 2D and 3D CLI runs of an architecture use
CLI_CASES = [("raw_2d_dataset", "2d"), ("raw_3d_dataset", "3d_fullres")]
