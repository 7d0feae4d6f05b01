"""Shared constants and shape helpers for every selective-scan backend.

All backends (reference, torch_chunked, triton_kernels, shape) agree on:

* ``CHECKPOINT_LEN``: the forward pass saves the state ``h`` before every block of
  ``CHECKPOINT_LEN`` positions, so the tensors kept for backward are identical
  whichever backend ran (the planner's memory model counts on it);
* the state/accumulation dtype: float64 for float64 inputs, float32 otherwise;
* the grouped layout of ``B``/``C``: ``(b, g, n, L)``, channel ``c`` uses group
  ``c // (d // g)``. A variable ``(b, n, L)`` tensor is the case ``g = 1``;
* the arguments: :class:`ScanArgs`, in mamba-ssm's order (the backends take them spread).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F

CHECKPOINT_LEN = 256

R = TypeVar("R")


@dataclass(frozen=True)
class ScanShape:
    """Sizes of one selective-scan call: batch, channels, length, state size, groups."""

    batch: int
    dim: int
    length: int
    dstate: int
    groups: int

    @property
    def channels_per_group(self) -> int:
        return self.dim // self.groups

    @property
    def num_checkpoints(self) -> int:
        return num_checkpoints(self.length)


def num_checkpoints(length: int) -> int:
    """Number of saved states for a sequence of ``length`` positions."""
    return -(-length // CHECKPOINT_LEN)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the recurrent state and of all accumulations for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_grouped(x: torch.Tensor) -> torch.Tensor:
    """View a variable ``(b, n, L)`` B/C tensor as grouped ``(b, 1, n, L)``; grouped passes through."""
    return x.unsqueeze(1) if x.dim() == 3 else x


class ScanArgs(NamedTuple):
    """The arguments of one selective scan, in the order and with the defaults of mamba-ssm's
    ``selective_scan_fn``; spread (``*args``), they are what every backend's ``forward`` takes.

    The public functions take them through :func:`takes_scan_args`, so this is the one place
    the shared signature is written."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None = None
    z: torch.Tensor | None = None
    delta_bias: torch.Tensor | None = None
    delta_softplus: bool = False

    def grouped(self) -> ScanArgs:
        """The same arguments with B and C grouped (:func:`to_grouped`) and delta_softplus a bool."""
        return self._replace(B=to_grouped(self.B), C=to_grouped(self.C), delta_softplus=bool(self.delta_softplus))


def takes_scan_args(fn: Callable[..., R]) -> Callable[..., R]:
    """``fn(args: ScanArgs, *options)`` as a function of the spread arguments.

    The result takes the :class:`ScanArgs` fields (by position or by name, with their
    defaults), then ``fn``'s own parameters after ``args``: ``selective_scan(u, delta, A, B, C,
    D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False, backend=...)``
    keeps mamba-ssm's signature while the signature is written once. ``inspect.signature``
    reports the spread signature.
    """
    fields = ScanArgs._fields
    own = inspect.signature(fn)

    def spread(*args: Any, **kwargs: Any) -> R:
        named = {k: kwargs.pop(k) for k in fields if k in kwargs}
        return fn(ScanArgs(*args[: len(fields)], **named), *args[len(fields) :], **kwargs)

    # NamedTuple wraps this module's (string) annotations in ForwardRef: unwrap them as a def shows them
    fields_params = [
        p.replace(annotation=getattr(p.annotation, "__forward_arg__", p.annotation))
        for p in inspect.signature(ScanArgs).parameters.values()
    ]
    params = [*fields_params, *list(own.parameters.values())[1:]]
    spread.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    spread.__name__, spread.__qualname__, spread.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    spread.__module__ = fn.__module__
    return spread


def check_shapes(args: ScanArgs) -> ScanShape:
    """Validate the selective-scan arguments (B, C already grouped) and return their sizes.

    Raises ``ValueError`` naming the offending argument; these are programming errors
    of the calling layer, not user input.
    """
    u, delta, A, B, C, D, z, delta_bias, _ = args
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, length), got shape {tuple(u.shape)}")
    b, d, L = u.shape
    if L < 1:
        raise ValueError("selective_scan: sequence length must be at least 1")
    if tuple(delta.shape) != (b, d, L):
        raise ValueError(f"selective_scan: delta must have u's shape {(b, d, L)}, got {tuple(delta.shape)}")
    if z is not None and tuple(z.shape) != (b, d, L):
        raise ValueError(f"selective_scan: z must have u's shape {(b, d, L)}, got {tuple(z.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be (dim={d}, dstate), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != b or t.shape[2] != n or t.shape[3] != L:
            raise ValueError(
                f"selective_scan: {name} must be (batch={b}, dstate={n}, length={L}) or "
                f"(batch={b}, groups, dstate={n}, length={L}), got {tuple(t.shape)}"
            )
    g = B.shape[1]
    if C.shape[1] != g:
        raise ValueError(f"selective_scan: B and C must have the same number of groups, got {g} and {C.shape[1]}")
    if d % g != 0:
        raise ValueError(f"selective_scan: dim={d} is not divisible by the number of groups {g}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f"selective_scan: {name} must be (dim={d},), got {tuple(t.shape)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"selective_scan: all tensors must be on one device, got {sorted(map(str, devices))}")
    return ScanShape(batch=b, dim=d, length=L, dstate=n, groups=g)


def compute_dt(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The effective step ``dt`` in ``dtype``: ``softplus(delta + bias)`` or ``delta + bias``."""
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    return dt


def expand_groups(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Grouped ``(b, g, n, L)`` -> per-channel ``(b, dim, n, L)`` (a copy; reference use only)."""
    return x.repeat_interleave(dim // x.shape[1], dim=1)
