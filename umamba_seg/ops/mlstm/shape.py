"""Shape-only mLSTM backend: what the chunkwise backends return, without computing it.

Planning traces a network's memory on the meta device (shapes and dtypes, no data), where
neither the Triton kernels nor the chunkwise PyTorch loops can run. This backend has the
chunkwise backends' interface and returns empty tensors laid out as ``torch_chunkwise``
lays them out (the CPU path the memory model is calibrated against):

* forward: a :class:`~umamba_seg.ops.mlstm.torch_chunkwise.ForwardResult` in the compute
  dtype (fp32, fp64 for fp64 inputs): ``h`` a view of whole chunks ``(b, h, N, T, dh)``
  cut to ``L``; per position ``n``/``m`` ``(b, h, N, T)``; the states entering each chunk as
  one ``(b, h, N, dh * dh + dh)`` tensor that ``c_prev (dh x dh)`` and ``n_prev (dh)`` view;
  ``m_prev (b, h, N + 1)``. These are what the autograd op saves for backward besides its
  inputs, so a trace counts the bytes a real training step keeps;
* backward: ``(dq, dk, dv, digate, dfgate)`` shaped as the inputs, in the compute dtype.

Selected with ``use_backend("shape")`` (:mod:`umamba_seg.ops.backend`) or ``backend="shape"``;
``"auto"`` never picks it.
"""

from __future__ import annotations

import torch

from .reference import DEFAULT_EPS, MLSTMInputs, compute_dtype
from .torch_chunkwise import DEFAULT_CHUNK, ForwardResult, num_chunks


def forward(x: MLSTMInputs, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK) -> ForwardResult:
    """Empty forward result with the chunkwise backend's shapes, dtypes and storages."""
    b, h, length, dh = x.q.shape
    n = num_chunks(length, chunk)
    like = {"dtype": compute_dtype(x.q.dtype), "device": x.q.device}
    states = torch.empty(b, h, n, dh * dh + dh, **like)
    return ForwardResult(
        h=torch.empty(b, h, n, chunk, dh, **like).flatten(-3, -2)[..., :length, :],
        n=torch.empty(b, h, n, chunk, **like),
        m=torch.empty(b, h, n, chunk, **like),
        c_prev=states[..., : dh * dh].unflatten(-1, (dh, dh)),
        n_prev=states[..., dh * dh :],
        m_prev=torch.empty(b, h, n + 1, **like),
    )


def backward(
    dh_out: torch.Tensor, x: MLSTMInputs, fwd: ForwardResult, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, ...]:
    """Empty ``(dq, dk, dv, digate, dfgate)`` shaped as the inputs, in the compute dtype."""
    dtype = compute_dtype(x.q.dtype)
    return tuple(torch.empty(t.shape, dtype=dtype, device=t.device) for t in x)
