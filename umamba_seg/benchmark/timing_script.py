"""What the two timing scripts share (``scripts/bench_networks.py``, ``scripts/bench_predict.py``).

Each script times every architecture, interleaved, against the CNN on one CNN plan: the options
(the plan's, :func:`umamba_seg.benchmark.cnn_plan.add_plan_arguments`, the architectures, the
rounds, the device and the thread count), the networks put on the CNN plan and the timed rounds
are written once here, so that the two scripts differ only in what they time and print.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping

import torch
from tqdm import tqdm

from umamba_seg.benchmark.cnn_plan import CNNPlan, add_plan_arguments
from umamba_seg.benchmark.networks import PlannedNetwork, planned_network
from umamba_seg.benchmark.timing import interleaved_rounds, medians


def add_timing_arguments(parser: argparse.ArgumentParser, *, warmup_help: str, quick_help: str) -> None:
    """The plan's options, ``-a``, ``--repeats``, ``--warmup``, ``--device``, ``--threads`` and ``--quick``
    (what ``--quick`` cuts is the script's, said in ``quick_help``)."""
    add_plan_arguments(parser)
    parser.add_argument(
        "-a",
        "--arch",
        nargs="+",
        default=None,
        help="architectures, each with its _nossm ablation; the CNN always runs (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is kept")
    parser.add_argument("--warmup", type=int, default=1, help=warmup_help)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help=quick_help)


def timing_device(args: argparse.Namespace) -> torch.device:
    """Sets torch's CPU threads from ``--threads`` (0 keeps torch's default) and returns ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def cnn_configuration(cnn: CNNPlan) -> dict:
    """The benchmarked configuration of the CNN's plans (patch, batch, median size...), with what it
    inherits resolved as nnunetv2's ``PlansManager`` does."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(cnn.plans).get_configuration(cnn.configuration).configuration


def networks_on_plan(cnn: CNNPlan, archs: Iterable[str], desc: str) -> Iterator[tuple[str, PlannedNetwork, str]]:
    """Each architecture put on the CNN plan, with a progress bar: (arch, its planned network, the
    note on what the same plan changed for it)."""
    for arch in tqdm(list(archs), desc=desc, unit="net"):
        same = cnn.same_plan(arch)
        yield arch, planned_network(same.plans, cnn.configuration, cnn.dataset_json), same.notes[cnn.configuration]


def timed_medians(
    fns: Mapping[Hashable, Callable[[], object]], args: argparse.Namespace, device: torch.device
) -> dict[Hashable, float]:
    """Median seconds of each callable over ``--repeats`` interleaved rounds after ``--warmup``
    (:func:`umamba_seg.benchmark.timing.interleaved_rounds`), with a progress bar."""
    with tqdm(total=args.repeats, desc="timing rounds", unit="round") as bar:
        return medians(interleaved_rounds(fns, args.repeats, args.warmup, device, on_round=lambda r: bar.update()))
