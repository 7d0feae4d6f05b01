"""mLSTM op (Vision-LSTM's matrix-memory cell): one autograd op, several backends.

``mlstm(q, k, v, igate, fgate, backend="auto")`` with ``q, k, v: (b, heads, L, dh)`` and
gate pre-activations ``(b, heads, L)`` returns ``(b, heads, L, dh)`` in q's dtype.
Semantics are those of :func:`reference.mlstm_parallel_reference` (see its module).

Backends, registered with the ops' shared resolver (:mod:`umamba_seg.ops.backend`, which
also says how one is chosen):

* ``"triton"``: chunkwise Triton kernels (CUDA tensors, or any tensor under
  ``TRITON_INTERPRET=1``); float64 inputs are not supported there; ``"auto"`` picks it for
  such tensors (float32/16/bf16) when Triton imports;
* ``"torch"``: the chunkwise vectorised PyTorch path (CPU, fallback, float64; ``"auto"``'s default);
* ``"reference"``: the quadratic parallel form, differentiated by autograd;
* ``"shape"``: empty results of the chunkwise shapes (planning's memory traces), see ``shape.py``.

The chunkwise backends keep only per-chunk states for backward (memory linear in L) and
accumulate in float32 for low-precision inputs, float64 for float64 inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from .. import backend as backends
from .reference import (
    DEFAULT_EPS,
    MLSTMInputs,
    check_mlstm_shapes,
    mlstm_parallel_reference,
    mlstm_recurrent_reference,
)
from .torch_chunkwise import (
    DEFAULT_CHUNK,
    ForwardResult,
    mlstm_chunkwise_backward,
    mlstm_chunkwise_forward,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_CHUNK",
    "DEFAULT_EPS",
    "OP",
    "ChunkwiseKernels",
    "mlstm",
    "mlstm_parallel_reference",
    "mlstm_recurrent_reference",
    "resolve_backend",
]

OP = "mLSTM"


class ChunkwiseKernels(NamedTuple):
    """A chunkwise backend: ``forward(MLSTMInputs, eps=, chunk=) -> ForwardResult`` and
    ``backward(dh, MLSTMInputs, fwd, eps=, chunk=) -> (dq, dk, dv, digate, dfgate)``."""

    forward: Callable[..., ForwardResult]
    backward: Callable[..., tuple[torch.Tensor, ...]]


def _triton_kernels() -> ChunkwiseKernels:
    from . import triton_kernels

    return ChunkwiseKernels(triton_kernels.mlstm_triton_forward, triton_kernels.mlstm_triton_backward)


def _shape_kernels() -> ChunkwiseKernels:
    from . import shape

    return ChunkwiseKernels(shape.forward, shape.backward)


def _triton_auto(q: torch.Tensor) -> bool:
    return q.dtype != torch.float64 and (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


backends.register_backend(OP, "triton", _triton_kernels, auto=_triton_auto, label="Triton")
backends.register_backend(
    OP, "torch", lambda: ChunkwiseKernels(mlstm_chunkwise_forward, mlstm_chunkwise_backward), default=True
)
backends.register_backend(OP, "reference", lambda: mlstm_parallel_reference)
backends.register_backend(OP, "shape", _shape_kernels, computes=False)
BACKENDS = backends.available_backends(OP)


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """The concrete backend (``triton``, ``torch``, ``reference`` or ``shape``) that ``backend`` means for ``q``."""
    return backends.resolve_backend(OP, backend, q)


class _MLSTMChunkwise(torch.autograd.Function):
    """Chunkwise forward and hand-written backward; saves inputs and per-chunk states only."""

    @staticmethod
    def forward(ctx, q, k, v, igate, fgate, eps: float, chunk: int, backend: str):  # type: ignore[override]
        kernels = backends.backend_implementation(OP, backend)
        res = kernels.forward(MLSTMInputs(q, k, v, igate, fgate), eps=eps, chunk=chunk)
        ctx.save_for_backward(q, k, v, igate, fgate, res.h, res.n, res.m, res.c_prev, res.n_prev, res.m_prev)
        ctx.eps, ctx.chunk, ctx.backend = eps, chunk, backend
        ctx.input_dtypes = (q.dtype, k.dtype, v.dtype, igate.dtype, fgate.dtype)
        return res.h.to(q.dtype)

    @staticmethod
    def backward(ctx, dh):  # type: ignore[override]
        q, k, v, igate, fgate, h, n, m, c_prev, n_prev, m_prev = ctx.saved_tensors
        res = ForwardResult(h=h, n=n, m=m, c_prev=c_prev, n_prev=n_prev, m_prev=m_prev)
        kernels = backends.backend_implementation(OP, ctx.backend)
        x = MLSTMInputs(q, k, v, igate, fgate)
        grads = kernels.backward(dh.contiguous(), x, res, eps=ctx.eps, chunk=ctx.chunk)
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
    of at least 16). ``backend``: one of :data:`BACKENDS`; inside
    ``ops.backend.use_backend(name)`` that backend runs whatever is asked here.
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
    return _MLSTMChunkwise.apply(q, k, v, igate, fgate, float(eps), int(chunk), which)
