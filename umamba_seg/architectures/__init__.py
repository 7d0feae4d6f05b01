"""Whole networks, constructible from nnunetv2 plans; see :mod:`.registry`."""
