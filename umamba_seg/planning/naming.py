"""Plans and data identifiers (the results layout the README documents).

One plans file per architecture and plans source: ``umambaPlans_<arch>.json`` from the
SSM-aware planner (``--plan-source ssm``, the default) and ``umambaCNNPlans_<arch>.json`` for
the architecture on nnU-Net's CNN plan unchanged (``--plan-source cnn``, as U-Mamba and
xLSTM-UNet were published). The CNN's own plans are the same under both sources, so they
have one name, ``umambaPlans_cnn``. One preprocessed folder per configuration
(``umambaPlans_<config>``) is shared by every architecture and both sources, because the
target spacing is decided per configuration (by the CNN's plan), not per architecture.
"""

from __future__ import annotations

PLANS_PREFIX = "umambaPlans"
CNN_PLANS_PREFIX = "umambaCNNPlans"
CNN_ARCH = "cnn"
PLAN_SOURCES = ("ssm", "cnn")
DEFAULT_PLAN_SOURCE = "ssm"
_PREFIXES = {"ssm": PLANS_PREFIX, "cnn": CNN_PLANS_PREFIX}


def check_plan_source(plan_source: str) -> str:
    """``plan_source`` if it is one of :data:`PLAN_SOURCES`; a ``ValueError`` otherwise."""
    if plan_source not in PLAN_SOURCES:
        raise ValueError(f"unknown plan source {plan_source!r}; choose one of {', '.join(PLAN_SOURCES)}")
    return plan_source


def plans_identifier(arch: str, plan_source: str = DEFAULT_PLAN_SOURCE) -> str:
    """The plans file name without ``.json``: ``umambaPlans_<arch>`` (ssm, and the CNN under
    either source) or ``umambaCNNPlans_<arch>`` (cnn)."""
    if "__" in arch:
        raise ValueError(f"architecture name {arch!r} contains '__', which separates a model folder's parts")
    source = DEFAULT_PLAN_SOURCE if arch == CNN_ARCH else check_plan_source(plan_source)
    return f"{_PREFIXES[source]}_{arch}"


def parse_plans_identifier(plans_name: str) -> tuple[str, str] | None:
    """``(arch, plan_source)`` of a name written by :func:`plans_identifier`; ``None`` for any
    other plans (e.g. the benchmark's ``umambaBenchPlans_<arch>`` or another tool's)."""
    for source, prefix in _PREFIXES.items():
        arch = plans_name.removeprefix(f"{prefix}_")
        if arch != plans_name and arch and "__" not in arch and plans_identifier(arch, source) == plans_name:
            return arch, source
    return None


def data_identifier(configuration: str) -> str:
    """Folder of preprocessed data for ``configuration``, shared by all architectures and plan sources."""
    return f"{PLANS_PREFIX}_{configuration}"
