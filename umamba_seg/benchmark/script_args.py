"""The options both timing scripts take (``scripts/bench_networks.py``, ``scripts/bench_predict.py``).

Each script times every architecture, interleaved, against the CNN on one CNN plan; the plan's
options (:func:`umamba_seg.benchmark.cnn_plan.add_plan_arguments`), the architectures, the rounds,
the device and the thread count are written once here so that the two scripts read alike.
"""

from __future__ import annotations

import argparse

import torch

from umamba_seg.benchmark.cnn_plan import add_plan_arguments


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
