"""Plans that give an architecture exactly the CNN's plan: the benchmark's fairness rule.

The plans are built by the planning layer's ``--plan-source cnn``
(:mod:`umamba_seg.planning.cnn_source`): the CNN's plans (``umambaPlans_cnn.json``) with, per
configuration, only the ``architecture`` block swapped; spacing, normalisation, data
identifier (so the preprocessed data), batch size and patch stay the CNN's, except that a
network that does not accept the CNN's patch gets the nearest patch it accepts (noted in the
plans and the table).

The benchmark names them ``umambaBenchPlans_<arch>`` (not ``umambaCNNPlans_<arch>``): its short
trainings land in ``<Trainer>__umambaBenchPlans_<arch>__<config>``, which ``find-best`` and
``predict -a`` never mistake for a user's model, and a user's plans are never rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from umamba_seg.architectures import registry
from umamba_seg.planning.cnn_source import (
    PATCH_NOTE_KEY,
    CNNSourcePlans,
    cnn_source_plans,
    write_cnn_source_plans,
)
from umamba_seg.planning.naming import CNN_ARCH

BENCH_PLANS_PREFIX = "umambaBenchPlans"
NOSSM_SUFFIX = "_nossm"
NOTE_KEY = PATCH_NOTE_KEY


def bench_plans_identifier(arch: str) -> str:
    """``umambaBenchPlans_<arch>``: the benchmark's plans file name without ``.json``."""
    return f"{BENCH_PLANS_PREFIX}_{arch}"


def benchmark_archs(archs: Sequence[str] | None = None) -> list[str]:
    """What a benchmark of ``archs`` runs, in registry order (CNN first, ablation after its
    parent): the CNN, each requested architecture and its ``_nossm`` ablation (an ablation
    brings its parent). ``None``: every registered architecture."""
    names = registry.available()
    requested = list(archs) if archs else names
    for a in requested:
        registry.get(a)  # unknown names: one clear error
    chosen = {CNN_ARCH}
    for a in requested:
        base = a.removesuffix(NOSSM_SUFFIX)
        chosen.update(n for n in (a, base, base + NOSSM_SUFFIX) if n in names)
    return [n for n in names if n in chosen]


#: one architecture's benchmark plans and per-configuration patch notes
SamePlan = CNNSourcePlans


def same_plan_plans(cnn_plans: dict, arch: str) -> SamePlan:
    """``arch`` on the CNN's plans dict, named ``umambaBenchPlans_<arch>``."""
    return cnn_source_plans(cnn_plans, arch, bench_plans_identifier(arch))


def write_same_plans(preprocessed_dataset: Path, arch: str) -> SamePlan:
    """Derive ``umambaBenchPlans_<arch>.json`` from the stored CNN plans and write it (atomically)."""
    return write_cnn_source_plans(preprocessed_dataset, arch, bench_plans_identifier(arch))
