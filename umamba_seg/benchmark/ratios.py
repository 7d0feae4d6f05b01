"""Ratios to the CNN, and the inference-time target every SSM network is held to.

Target (a benchmark, not a test): each SSM network's sliding-window inference time at the
CNN's plan is at most 1.3x the CNN's. Where a network misses it, the ``_nossm`` ablation says
why: if the ablation (same backbone, token mixer replaced by the identity) is already slower
than the target, the backbone is the cost; otherwise the token mixer is, by the difference. A
patch the network had to enlarge (or shrink) to one it accepts is named as well.

On a shared machine the load changes while the networks are timed one after another, so the
benchmark times them in interleaved rounds and takes each network's ratio to the CNN *within*
a round (:func:`round_ratios`): a busy spell slows the CNN and the network of that round alike.
The median over rounds is reported; rounds whose ratios disagree by more than
:data:`SPREAD_LIMIT` ((max - min) / median) get a warning, as the load changed even within rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from umamba_seg.architectures import registry
from umamba_seg.planning.naming import CNN_ARCH

INFERENCE_TARGET = 1.3
SPREAD_LIMIT = 0.2  # (max - min) / median of a network's per-round ratios
NOSSM_SUFFIX = "_nossm"


def ratios_to_cnn(values: Mapping[str, float], cnn: str = CNN_ARCH) -> dict[str, float]:
    """``value / value[cnn]`` per architecture (NaN without a usable CNN value)."""
    ref = values.get(cnn, math.nan)
    ok = ref is not None and ref > 0 and math.isfinite(ref)
    return {a: (v / ref if ok and v is not None else math.nan) for a, v in values.items()}


@dataclass(frozen=True)
class RoundRatio:
    """One network's ratio to the CNN in each timing round, and their summary."""

    arch: str
    per_round: tuple[float, ...]

    @property
    def _finite(self) -> list[float]:
        return [r for r in self.per_round if math.isfinite(r)]

    @property
    def median(self) -> float:
        """Median over the rounds (NaN without a finite ratio)."""
        return float(statistics.median(self._finite)) if self._finite else math.nan

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds' ratios; 0 for a single round."""
        finite, mid = self._finite, self.median
        return (max(finite) - min(finite)) / mid if finite and mid > 0 else math.nan

    @property
    def disagrees(self) -> bool:
        """The rounds disagree by more than :data:`SPREAD_LIMIT`."""
        return math.isfinite(self.spread) and self.spread > SPREAD_LIMIT

    def warning(self, what: str) -> str:
        """One line saying how far the rounds of ``what`` (e.g. "sliding-window") disagreed."""
        finite = self._finite
        return (
            f"{self.arch}: its {what} time relative to the CNN's varied by {self.spread:.1%} over "
            f"{len(self.per_round)} rounds ({min(finite):.2f}x to {max(finite):.2f}x, median "
            f"{self.median:.2f}x), more than {SPREAD_LIMIT:.0%}: the machine's load changed during the "
            "timing; rerun on a quiet machine or with more --rounds"
        )


def round_ratios(rounds: Sequence[Mapping[str, float]], cnn: str = CNN_ARCH) -> dict[str, RoundRatio]:
    """Per architecture, its seconds / the CNN's seconds of the same round, for every round."""
    per_round = [ratios_to_cnn(r, cnn) for r in rounds]
    names = list(dict.fromkeys(a for r in rounds for a in r))
    return {a: RoundRatio(a, tuple(r.get(a, math.nan) for r in per_round)) for a in names}


@dataclass(frozen=True)
class TargetCheck:
    """One SSM network against the inference-time target."""

    arch: str
    ratio: float  # its sliding-window time / the CNN's
    target: float
    reason: str  # empty when the target is met

    @property
    def met(self) -> bool:
        return self.ratio <= self.target

    def line(self) -> str:
        verdict = "ok" if self.met else f"OVER the {self.target:g}x target: {self.reason}"
        return f"{self.arch}: {self.ratio:.2f}x the CNN's sliding-window time ({verdict})"


def _reason(arch: str, ratios: Mapping[str, float], target: float) -> str:
    ablation = ratios.get(arch + NOSSM_SUFFIX)
    if ablation is None or not math.isfinite(ablation):
        return "no _nossm ablation timed to tell backbone from token mixer"
    if ablation > target:
        return (
            f"its _nossm ablation is already {ablation:.2f}x, so the backbone is slower than the CNN "
            f"(the token mixer adds {ratios[arch] - ablation:.2f}x)"
        )
    return (
        f"its _nossm ablation is {ablation:.2f}x, so the token mixer costs {ratios[arch] - ablation:.2f}x "
        "the CNN's time"
    )


def check_inference_target(
    seconds: Mapping[str, float],
    target: float = INFERENCE_TARGET,
    cnn: str = CNN_ARCH,
    patch_voxels: Mapping[str, int] | None = None,
) -> list[TargetCheck]:
    """The target check for every SSM network (``has_ssm`` in the registry) in ``seconds``;
    ``patch_voxels`` (voxels of each network's patch) lets a missed target name a changed patch."""
    ratios = ratios_to_cnn(seconds, cnn)
    voxels = ratios_to_cnn(patch_voxels or {}, cnn)
    checks = []
    for arch, r in ratios.items():
        if arch == cnn or not registry.get(arch).has_ssm or not math.isfinite(r):
            continue
        reason = "" if r <= target else _reason(arch, ratios, target)
        if reason and math.isfinite(voxels.get(arch, math.nan)) and voxels[arch] != 1.0:
            reason += f"; its accepted patch has {voxels[arch]:.2f}x the CNN's voxels"
        checks.append(TargetCheck(arch, r, target, reason))
    return checks
