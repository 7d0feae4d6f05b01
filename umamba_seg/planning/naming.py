"""Plans and data identifiers (the results layout the README documents).

One plans file per architecture (``umambaPlans_<arch>.json``); one preprocessed folder per
configuration (``umambaPlans_<config>``), shared by every architecture, because the target
spacing is decided per configuration, not per architecture.
"""

from __future__ import annotations

PLANS_PREFIX = "umambaPlans"
CNN_ARCH = "cnn"


def plans_identifier(arch: str) -> str:
    """``umambaPlans_<arch>``: the plans file name without ``.json``."""
    return f"{PLANS_PREFIX}_{arch}"


def data_identifier(configuration: str) -> str:
    """Folder of preprocessed data for ``configuration``, shared by all architectures."""
    return f"{PLANS_PREFIX}_{configuration}"
