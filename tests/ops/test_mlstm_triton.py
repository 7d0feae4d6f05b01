"""The Triton mLSTM kernels against the reference in Triton's CPU interpreter (a child pytest)."""

from __future__ import annotations

import pytest

from tests.helpers import run_interpreter_tests

pytest.importorskip("triton")

EXPECTED_TESTS = 9


def test_mlstm_triton_kernels_match_reference_in_interpreter() -> None:
    run_interpreter_tests("test_mlstm_triton.py", EXPECTED_TESTS)
