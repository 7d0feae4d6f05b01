"""Selective scan (Mamba-1 S6), the op every SSM layer runs on.

Replaces mamba-ssm's ``selective_scan_fn`` with the same semantics (see ``reference.py``,
the specification) and no compiled extension. One ``torch.autograd.Function`` calls a
backend module that implements ``forward``/``backward`` of the interface described in
``common.py``:

* ``"torch"``: ``torch_chunked`` (vectorised PyTorch; CPU and GPU fallback);
* ``"triton"``: ``triton_kernels`` (GPU), imported lazily;
* ``"reference"``: the sequential loop with autograd through it (tests, debugging);
* ``"auto"``: Triton when the tensors are on CUDA and the Triton backend imports, else torch.

Whatever the backend, the forward saves the inputs and the states at every
``CHECKPOINT_LEN`` positions for backward, so memory use does not depend on it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from ...errors import UserInputError
from . import torch_chunked
from .common import BACKENDS, CHECKPOINT_LEN, check_shapes, state_dtype, to_grouped
from .reference import selective_scan_ref

__all__ = ["CHECKPOINT_LEN", "BACKENDS", "selective_scan", "selective_scan_ref", "triton_available"]

_triton_module: ModuleType | None = None
_triton_error: str | None = None


def _load_triton() -> ModuleType | None:
    """Import the Triton backend once; remember why it failed if it did."""
    global _triton_module, _triton_error
    if _triton_module is None and _triton_error is None:
        try:
            _triton_module = importlib.import_module(f"{__name__}.triton_kernels")
        except Exception as exc:  # missing module, missing triton, broken install
            _triton_error = f"{type(exc).__name__}: {exc}"
    return _triton_module


def triton_available() -> bool:
    """True when the Triton backend module imports."""
    return _load_triton() is not None


def _resolve_backend(name: str, device: torch.device) -> str:
    if name not in BACKENDS:
        raise UserInputError(
            f"unknown selective-scan backend {name!r}", None, f"use one of {', '.join(BACKENDS)}"
        )
    if name == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if name == "triton" and not triton_available():
        raise UserInputError(
            f"the Triton selective-scan backend is unavailable ({_triton_error})",
            None,
            "install triton and run on a CUDA GPU, or use backend='torch'",
        )
    return name


def _backend_module(name: str) -> ModuleType:
    if name == "triton":
        module = _load_triton()
        assert module is not None
        return module
    return torch_chunked


class SelectiveScanFn(torch.autograd.Function):
    """Autograd op over a backend's ``forward``/``backward`` (B, C already grouped)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, backend: str):
        sd = state_dtype(u.dtype)
        inputs = [u, delta, A.to(sd), B, C, D, z, delta_bias]
        inputs = [None if t is None else t.contiguous() for t in inputs]
        module = _backend_module(backend)
        out, last_state, checkpoints = module.forward(*inputs, delta_softplus)
        ctx.save_for_backward(*inputs, checkpoints)
        ctx.delta_softplus = delta_softplus
        ctx.backend = backend
        ctx.A_dtype = A.dtype
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast_state):
        *inputs, checkpoints = ctx.saved_tensors
        u = inputs[0]
        if dout is None:
            dout = torch.zeros_like(u)
        module = _backend_module(ctx.backend)
        grads = module.backward(
            dout.contiguous(),
            None if dlast_state is None else dlast_state.contiguous(),
            *inputs,
            ctx.delta_softplus,
            checkpoints,
        )
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = grads
        dA = dA.to(ctx.A_dtype)
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None, None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics.

    ``u, delta, z``: ``(b, d, L)``; ``A``: ``(d, n)``; ``B, C``: ``(b, n, L)`` or grouped
    ``(b, g, n, L)``; ``D, delta_bias``: ``(d,)``. Returns ``out (b, d, L)`` in u's dtype,
    and the final state ``(b, d, n)`` (float32, float64 for float64 inputs) when
    ``return_last_state``. ``backend``: one of ``"auto", "triton", "torch", "reference"``.
    """
    Bg, Cg = to_grouped(B), to_grouped(C)
    check_shapes(u, delta, A, Bg, Cg, D, z, delta_bias)
    name = _resolve_backend(backend, u.device)
    if name == "reference":
        return selective_scan_ref(u, delta, A, Bg, Cg, D, z, delta_bias, delta_softplus, return_last_state)
    out, last_state = SelectiveScanFn.apply(u, delta, A, Bg, Cg, D, z, delta_bias, bool(delta_softplus), name)
    return (out, last_state) if return_last_state else out
