"""The CNN plan a benchmark script measures on: a planned dataset, or a built-in one planned first.

``scripts/bench_networks.py`` and ``scripts/bench_predict.py`` take the same options
(:func:`add_plan_arguments`): a workdir and dataset (planned from its fingerprint if it has no
CNN plans yet, as ``train`` does), or ``--make-dataset KIND`` to generate a built-in synthetic
dataset there first. Every architecture is then put on that CNN plan in memory
(:meth:`CNNPlan.same_plan`); nothing is written next to the user's plans.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json

from umamba_seg.benchmark.same_plan import SamePlan, same_plan_plans
from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import CNN_ARCH
from umamba_seg.workspace import Workspace


@dataclass(frozen=True)
class CNNPlan:
    """The CNN's plans of one dataset and the configuration to benchmark."""

    dataset_name: str
    configuration: str
    plans: dict
    dataset_json: dict

    def same_plan(self, arch: str) -> SamePlan:
        """``arch`` on this CNN plan (:func:`umamba_seg.benchmark.same_plan.same_plan_plans`)."""
        return same_plan_plans(self.plans, arch)


def add_plan_arguments(parser: argparse.ArgumentParser, default_configuration: str = "3d_fullres") -> None:
    """``--workdir``, ``-d``, ``-c``, ``--make-dataset KIND`` and ``--size``."""
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder holding raw/, preprocessed/, results/ (default: nnUNet_* variables)",
    )
    parser.add_argument("-d", "--dataset", default=None, help="dataset id or DatasetXXX_Name (planned if needed)")
    parser.add_argument("-c", "--configuration", default=default_configuration)
    parser.add_argument(
        "--make-dataset",
        default=None,
        metavar="KIND",
        help="generate this built-in dataset (ct3d, mri3d, endoscopy2d, microscopy2d) first",
    )
    parser.add_argument("--size", default="tiny", help="size of the generated dataset: tiny | small | default")


def cnn_plan_from_args(args: argparse.Namespace) -> CNNPlan:
    """Resolve :func:`add_plan_arguments`' options to the CNN plan (planning it if needed)."""
    from umamba_seg.planning.arch_plans import load_plans_with, plans_file
    from umamba_seg.planning.pipeline import ensure_plans

    ws = Workspace.resolve(args.workdir).activate()
    if args.make_dataset:
        from umamba_seg.data import make_dataset

        name = make_dataset(args.make_dataset, ws.raw, size=args.size, progress=False).name
    elif args.dataset is not None:
        name = ws.dataset_name(args.dataset)
    else:
        raise UserInputError("no dataset given", "-d", "pass -d ID (with --workdir) or --make-dataset KIND")
    ensure_plans(ws, name, CNN_ARCH)
    cnn_file = plans_file(ws.preprocessed_dataset(name), CNN_ARCH)
    plans = load_plans_with(cnn_file, args.configuration)
    dataset_json = load_json(str(ws.preprocessed_dataset(name) / "dataset.json"))
    return CNNPlan(name, args.configuration, plans, dataset_json)
