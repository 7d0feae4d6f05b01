"""Tests that run only under TRITON_INTERPRET=1, launched in a subprocess by tests/ops/test_*_triton.py."""
