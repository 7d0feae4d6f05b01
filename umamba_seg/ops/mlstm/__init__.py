"""mLSTM op (Vision-LSTM's matrix-memory cell): one autograd op, several backends.

``mlstm(q, k, v, igate, fgate, backend="auto")`` with ``q, k, v: (b, heads, L, dh)`` and
gate pre-activations ``(b, heads, L)`` returns ``(b, heads, L, dh)`` in q's dtype.
Semantics are those of :func:`reference.mlstm_parallel_reference` (see its module).

Backends:

* ``"triton"``: chunkwise Triton kernels (CUDA tensors, or any tensor under
  ``TRITON_INTERPRET=1``); float64 inputs are not supported there;
* ``"torch"``: the chunkwise vectorised PyTorch path (CPU, fallback, float64);
* ``"reference"``: the quadratic parallel form, differentiated by autograd;
* ``"auto"``: Triton on CUDA tensors (float32/16/bf16) when Triton imports, else torch.

The chunkwise backends keep only per-chunk states for backward (memory linear in L) and
accumulate in float32 for low-precision inputs, float64 for float64 inputs.
"""

from __future__ import annotations

import os

import torch

from .reference import (
    DEFAULT_EPS,
    check_mlstm_shapes,
    compute_dtype,
    mlstm_parallel_reference,
    mlstm_recurrent_reference,
)
from .torch_chunkwise import (
    DEFAULT_CHUNK,
    ForwardResult,
    mlstm_chunkwise_backward,
    mlstm_chunkwise_forward,
)

BACKENDS = ("auto", "triton", "torch", "reference")

__all__ = [
    "BACKENDS",
    "DEFAULT_CHUNK",
    "DEFAULT_EPS",
    "mlstm",
    "mlstm_parallel_reference",
    "mlstm_recurrent_reference",
    "resolve_backend",
]


def _triton_usable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - triton missing on this platform
        return False
    return True


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """The concrete backend (``triton``, ``torch`` or ``reference``) that ``backend`` means for ``q``."""
    if backend not in BACKENDS:
        raise ValueError(f"mlstm: backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if q.is_cuda and q.dtype != torch.float64 and _triton_usable():
        return "triton"
    if os.environ.get("TRITON_INTERPRET") == "1" and q.dtype != torch.float64 and _triton_usable():
        return "triton"
    return "torch"


class _MLSTMChunkwise(torch.autograd.Function):
    """Chunkwise forward and hand-written backward; saves inputs and per-chunk states only."""

    @staticmethod
    def forward(ctx, q, k, v, igate, fgate, eps: float, chunk: int, use_triton: bool):  # type: ignore[override]
        if use_triton:
            from .triton_kernels import mlstm_triton_forward as fwd_fn
        else:
            fwd_fn = mlstm_chunkwise_forward
        res = fwd_fn(q, k, v, igate, fgate, eps=eps, chunk=chunk)
        ctx.save_for_backward(q, k, v, igate, fgate, res.h, res.n, res.m, res.c_prev, res.n_prev, res.m_prev)
        ctx.eps, ctx.chunk, ctx.use_triton = eps, chunk, use_triton
        ctx.input_dtypes = (q.dtype, k.dtype, v.dtype, igate.dtype, fgate.dtype)
        return res.h.to(q.dtype)

    @staticmethod
    def backward(ctx, dh):  # type: ignore[override]
        q, k, v, igate, fgate, h, n, m, c_prev, n_prev, m_prev = ctx.saved_tensors
        res = ForwardResult(h=h, n=n, m=m, c_prev=c_prev, n_prev=n_prev, m_prev=m_prev)
        if ctx.use_triton:
            from .triton_kernels import mlstm_triton_backward as bwd_fn
        else:
            bwd_fn = mlstm_chunkwise_backward
        grads = bwd_fn(dh.contiguous(), q, k, v, igate, fgate, res, eps=ctx.eps, chunk=ctx.chunk)
        grads = tuple(g.to(dt) for g, dt in zip(grads, ctx.input_dtypes))
        return (*grads, None, None, None)


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate: torch.Tensor,
    fgate: torch.Tensor,
    backend: str = "auto",
    eps: float = DEFAULT_EPS,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Stabilised mLSTM over ``(b, heads, L, dh)`` sequences; see the module docstring.

    ``chunk`` is the chunk length of the chunkwise backends (Triton needs a power of two
    of at least 16).
    """
    check_mlstm_shapes(q, k, v, igate, fgate)
    which = resolve_backend(backend, q)
    if which == "reference":
        return mlstm_parallel_reference(q, k, v, igate, fgate, eps=eps)
    if which == "triton" and q.dtype == torch.float64:
        raise ValueError("mlstm: the triton backend does not take float64 inputs; use backend='torch'")
    if which == "triton" and not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("mlstm: the triton backend needs CUDA tensors (or TRITON_INTERPRET=1); use backend='auto'")
    if chunk < 1:
        raise ValueError(f"mlstm: chunk must be positive, got {chunk}")
    q, k, v, igate, fgate = (t.contiguous() for t in (q, k, v, igate, fgate))
    return _MLSTMChunkwise.apply(q, k, v, igate, fgate, float(eps), int(chunk), which == "triton")
