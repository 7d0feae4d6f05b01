"""Selective scan (Mamba-1 S6) op; the dispatching autograd op lands here next."""

from .common import CHECKPOINT_LEN
from .reference import selective_scan_ref

__all__ = ["CHECKPOINT_LEN", "selective_scan_ref"]
