"""Runs the Triton mLSTM kernels in Triton's CPU interpreter, in a subprocess.

``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported, which would
change every other Triton use in this pytest process; so the interpreter tests
(tests/ops/triton_interp/test_mlstm_triton.py) run in a child pytest and this test asserts
that all of them ran and passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

TESTS = Path(__file__).resolve().parent
MODULE = TESTS / "triton_interp" / "test_mlstm_triton.py"
EXPECTED_TESTS = 9


def test_mlstm_triton_kernels_match_reference_in_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(MODULE)],
        cwd=TESTS.parents[1],  # the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"interpreter tests failed:\n{report}"
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= EXPECTED_TESTS, f"expected {EXPECTED_TESTS} interpreter tests to pass:\n{report}"
    assert "skipped" not in proc.stdout.splitlines()[-1], f"interpreter tests were skipped:\n{report}"
