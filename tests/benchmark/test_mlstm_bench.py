"""The mLSTM benchmark code (umamba_seg.benchmark.mlstm_bound): bound, memory fit, a short real run."""

from __future__ import annotations

import sys

import pytest
import torch

from umamba_seg.benchmark import mlstm_bound as mb


def test_bound_is_the_chunked_state_products():
    q, k, v, _, _ = mb.make_inputs(1, 2, mb.BOUND_CHUNK * 3, 8, torch.device("cpu"))
    expected = []
    for c in range(3):  # each chunk's q @ (k^T v), chunk by chunk
        s = slice(c * mb.BOUND_CHUNK, (c + 1) * mb.BOUND_CHUNK)
        expected.append(q[..., s, :] @ (k[..., s, :].transpose(-1, -2) @ v[..., s, :]))
    torch.testing.assert_close(mb.bound(q, k, v), torch.cat(expected, -2))


def test_quadratic_fit_and_first_length_over():
    a, c = mb.quadratic_fit([(L, 3 * L * L + 100 * L) for L in (64, 128, 512)])
    assert a == pytest.approx(3.0) and c == pytest.approx(100.0)
    assert mb.first_length_over(3.0, 100.0, 3 * 1024**2 + 100 * 1024) == 2048  # 1024 fits exactly, 2048 not
    with pytest.raises(ValueError, match="does not grow"):
        mb.first_length_over(-1.0, 10.0, 1e9)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc")
def test_child_measures_peak_memory_above_the_inputs(capsys):
    """The peak is measured in a fresh child process (in this long-lived one, freed heap memory can hold
    the run without raising the high-water mark), and what ``--child`` prints is its last line."""
    assert mb.peak_bytes("parallel", "torch", (1, 1, 512, 8), True, torch.device("cpu")) > 0  # the L x L matrices
    mb.main(["--child", '["chunkwise", "torch", [1, 1, 64, 8], false]'])
    assert int(capsys.readouterr().out.strip().splitlines()[-1]) >= 0


def test_a_short_run_prints_every_row(monkeypatch, capsys):
    measured = []
    monkeypatch.setattr(
        mb,
        "peak_bytes",
        lambda method, backend, shape, backward, device: (
            measured.append((method, shape[2], backward)) or 2**20 * shape[2]
        ),
    )  # the child processes are tested above
    mb.main(["--lengths", "64", "128", "--parallel-max-len", "64", "--repeats", "1", "--heads", "1", "--head-dim", "8"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["chunkwise"], ["parallel"])]
    assert [(r[0], r[1]) for r in rows] == [("chunkwise", "64"), ("parallel", "64"), ("chunkwise", "128")]
    assert rows[-1][-2:] == ["128.0", "128.0"]  # MiB of forward and forward+backward
    assert len(measured) == 6 and ("parallel", 128, True) not in measured  # past --parallel-max-len: not run
