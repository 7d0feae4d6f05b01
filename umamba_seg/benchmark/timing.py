"""Wall-clock timing for benchmarks: warm-up first, medians, and interleaved repeats.

One-off costs (allocator growth, lazy imports, kernel selection, first-touch of weights) land
on the first call, so every measurement starts with untimed warm-up calls. The median, not the
mean, summarises repeats: on a shared machine the outliers are slow, never fast. Networks that
are compared are timed *interleaved* (repeat r of every network before repeat r + 1 of any), so
a change of load during the run hits all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch

from umamba_seg.devices import synchronize


def time_call(fn: Callable[[], object], device: torch.device | str | None = None) -> float:
    """Seconds one call of ``fn`` takes, GPU work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median(values: Sequence[float]) -> float:
    """Median of ``values``; NaN for none."""
    return float(statistics.median(values)) if len(values) else math.nan


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
                        device: torch.device | str | None = None,
                        on_round: Callable[[int], None] | None = None) -> dict[str, float]:
    """Median seconds per named callable: ``warmup`` untimed calls of each, then ``repeats``
    rounds that time each callable once (``on_round(r)`` after round r, e.g. a progress bar)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(1, repeats)):
        for name, fn in fns.items():
            times[name].append(time_call(fn, device))
        if on_round is not None:
            on_round(r)
    return {name: median(t) for name, t in times.items()}
