"""The options and steps the two timing scripts share (umamba_seg.benchmark.timing_script)."""

from __future__ import annotations

import argparse

import torch

from tests.helpers import cnn_plans_2d
from umamba_seg.benchmark import timing_script
from umamba_seg.benchmark.cnn_plan import CNNPlan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    timing_script.add_timing_arguments(parser, warmup_help="untimed calls", quick_help="smoke run")
    return parser


def test_timing_arguments_and_their_defaults():
    args = _parser().parse_args([])
    assert (args.arch, args.repeats, args.warmup, args.device, args.threads, args.quick) == (
        None,
        3,
        1,
        "cpu",
        0,
        False,
    )
    assert (args.workdir, args.dataset, args.configuration) == (None, None, "3d_fullres")  # the plan's options
    args = _parser().parse_args(["-a", "segmamba", "vmunet", "--repeats", "5", "--threads", "1", "--quick"])
    assert args.arch == ["segmamba", "vmunet"] and args.repeats == 5 and args.quick
    help_text = _parser().format_help()
    assert "untimed calls" in help_text and "smoke run" in help_text


def test_timing_device_sets_threads_only_when_asked():
    threads = torch.get_num_threads()
    try:
        assert timing_script.timing_device(_parser().parse_args([])) == torch.device("cpu")
        assert torch.get_num_threads() == threads
        timing_script.timing_device(_parser().parse_args(["--threads", "1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_timed_medians_calls_each_function_warmup_plus_repeats_times():
    calls = {"a": 0, "b": 0}

    def counter(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    args = _parser().parse_args(["--repeats", "3", "--warmup", "2"])
    med = timing_script.timed_medians({"a": counter("a"), "b": counter("b")}, args, torch.device("cpu"))
    assert set(med) == {"a", "b"} and all(t >= 0 for t in med.values())
    assert calls == {"a": 5, "b": 5}


def test_cnn_configuration_resolves_inheritance():
    plans = cnn_plans_2d([1.0, 1.0], [64, 64])
    plans["configurations"]["2d_small"] = {"inherits_from": "2d", "batch_size": 2}
    cnn = CNNPlan("Dataset903_X", "2d_small", plans, {})
    conf = timing_script.cnn_configuration(cnn)
    assert conf["batch_size"] == 2 and conf["patch_size"] == plans["configurations"]["2d"]["patch_size"]
