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
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import torch

from umamba_seg.devices import synchronize

K = TypeVar("K", bound=Hashable)


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


def interleaved_rounds(
    fns: Mapping[K, Callable[[], object]],
    rounds: int = 3,
    warmup: int = 1,
    device: torch.device | str | None = None,
    on_round: Callable[[int], None] | None = None,
    clock: Callable[[Callable[[], object]], float] | None = None,
) -> list[dict[K, float]]:
    """Seconds of every named callable, round by round: ``warmup`` untimed calls of each, then
    ``rounds`` rounds that time each callable once, in ``fns``' order (A, B, C, A, B, C, ...).
    ``on_round(r)`` runs after round r (e.g. a progress bar); ``clock(fn)`` times one call
    (default :func:`time_call` on ``device``)."""
    clock = clock or (lambda fn: time_call(fn, device))
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timed: list[dict[K, float]] = []
    for r in range(max(1, rounds)):
        timed.append({name: clock(fn) for name, fn in fns.items()})
        if on_round is not None:
            on_round(r)
    return timed


def medians(timed: Sequence[Mapping[K, float]]) -> dict[K, float]:
    """Median seconds per named callable over the rounds of :func:`interleaved_rounds`."""
    return {name: median([t[name] for t in timed]) for name in timed[0]}
