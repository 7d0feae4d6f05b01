"""Interleaved timing rounds: every network once per round, in order, before the next round."""

from __future__ import annotations

import itertools

from umamba_seg.benchmark.timing import interleaved_rounds, medians


def test_rounds_time_every_network_once_per_round_in_order():
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("A", "B", "C")}
    ticks = itertools.count(1)

    def clock(fn):  # an injected clock: each timed call "takes" 1 s, 2 s, 3 s, ... in call order
        fn()
        return float(next(ticks))

    rounds_seen: list[int] = []
    timed = interleaved_rounds(fns, rounds=3, warmup=1, clock=clock, on_round=rounds_seen.append)
    assert calls == ["A", "B", "C"] + ["A", "B", "C"] * 3  # warm-up of each, then A, B, C per round
    assert rounds_seen == [0, 1, 2]
    assert timed == [{"A": 1.0, "B": 2.0, "C": 3.0}, {"A": 4.0, "B": 5.0, "C": 6.0}, {"A": 7.0, "B": 8.0, "C": 9.0}]
    assert [list(r) for r in timed] == [["A", "B", "C"]] * 3


def test_medians_over_the_rounds(monkeypatch):
    from umamba_seg.benchmark import timing

    seconds = iter([1.0, 10.0, 3.0, 30.0, 2.0, 20.0])
    monkeypatch.setattr(timing, "time_call", lambda fn, device=None: (fn(), next(seconds))[1])
    fns = {("cnn", "infer"): lambda: None, ("bot", "infer"): lambda: None}
    assert medians(interleaved_rounds(fns, rounds=3, warmup=0)) == {("cnn", "infer"): 2.0, ("bot", "infer"): 20.0}
