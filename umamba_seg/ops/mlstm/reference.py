"""Stabilised mLSTM references: the spec every faster mLSTM path is tested against.

Semantics (the matrix-memory LSTM cell as Vision-LSTM computes it), per batch and head,
with ``q, k, v: (L, dh)`` and gate pre-activations ``igate, fgate: (L,)``::

    log f = logsigmoid(fgate),   log i = igate
    D_ij  = sum_{j<l<=i} log f_l + log i_j     (j <= i, else -inf)
    m_i   = max_j D_ij                          (the stabiliser)
    S     = (q k^T / sqrt(dh)) * exp(D - m)
    h_i   = (S v)_i / (max(|sum_j S_ij|, exp(-m_i)) + eps)

``eps`` defaults to Vision-LSTM's 1e-6; with ``eps=0`` the output does not depend on
``m`` at all (numerator and normaliser both scale with ``exp(-m)``), which is why the
stabiliser is a constant for differentiation here (``m`` is detached). With ``eps > 0``
that differs from differentiating through ``max`` by a relative ``eps / normaliser``
only, and it is what lets the chunkwise backward stay linear in L.

Two forms, both O(L^2) or O(L) in Python and meant for small L only:

* :func:`mlstm_parallel_reference`: the quadratic parallel form (the spec);
* :func:`mlstm_recurrent_reference`: the step-by-step recurrence with a running max,
  an independent check that the parallel spec is the recurrent cell.

Accumulation is float64 for float64 inputs, float32 otherwise; the output has the
dtype of ``q``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

DEFAULT_EPS = 1e-6


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of states and accumulations for inputs of ``dtype`` (fp64 stays fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class MLSTMInputs(NamedTuple):
    """The tensors of one mLSTM call, as the chunkwise backends take them: ``q, k, v``
    ``(batch, heads, length, head_dim)`` and the gate pre-activations ``igate, fgate``
    ``(batch, heads, length)``."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    igate: torch.Tensor
    fgate: torch.Tensor


def check_mlstm_shapes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, igate: torch.Tensor, fgate: torch.Tensor
) -> tuple[int, int, int, int]:
    """Validate mLSTM arguments and return ``(batch, heads, length, head_dim)``.

    Raises ``ValueError`` naming the offending argument: a wrong shape here is a bug in
    the calling layer, not user input.
    """
    if q.dim() != 4:
        raise ValueError(f"mlstm: q must be (batch, heads, length, head_dim), got shape {tuple(q.shape)}")
    b, h, L, dh = q.shape
    if L < 1 or dh < 1:
        raise ValueError(f"mlstm: length and head_dim must be at least 1, got shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if tuple(t.shape) != (b, h, L, dh):
            raise ValueError(f"mlstm: {name} must have q's shape {(b, h, L, dh)}, got {tuple(t.shape)}")
    for name, t in (("igate", igate), ("fgate", fgate)):
        if tuple(t.shape) != (b, h, L):
            raise ValueError(f"mlstm: {name} must be (batch, heads, length) = {(b, h, L)}, got {tuple(t.shape)}")
    return b, h, L, dh


def _reference_form(form: Callable[[MLSTMInputs, float], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A form of the cell as a public reference ``(q, k, v, igate, fgate, eps=DEFAULT_EPS)``.

    ``form(x, eps)`` computes on inputs already checked and cast to the accumulation dtype;
    the reference returns its result in q's dtype. Both forms share this one entry, so they
    validate, upcast and round back alike.
    """

    def reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        igate: torch.Tensor,
        fgate: torch.Tensor,
        eps: float = DEFAULT_EPS,
    ) -> torch.Tensor:
        check_mlstm_shapes(q, k, v, igate, fgate)
        ct = compute_dtype(q.dtype)
        x = MLSTMInputs(*(t.to(ct) for t in (q, k, v, igate, fgate)))
        return form(x, eps).to(q.dtype)

    reference.__name__ = reference.__qualname__ = form.__name__
    reference.__doc__ = form.__doc__
    return reference


@_reference_form
def mlstm_parallel_reference(x: MLSTMInputs, eps: float) -> torch.Tensor:
    """Quadratic, max-stabilised parallel mLSTM (the spec); differentiable by autograd."""
    L, dh = x.q.shape[-2], x.q.shape[-1]
    log_f_cum = F.logsigmoid(x.fgate).cumsum(-1)
    log_d = log_f_cum[..., :, None] - log_f_cum[..., None, :] + x.igate[..., None, :]
    causal = torch.ones(L, L, dtype=torch.bool, device=x.q.device).tril()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True).detach()
    s = (x.q @ x.k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) * torch.exp(log_d - m)
    normaliser = torch.maximum(s.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return (s @ x.v) / normaliser


@_reference_form
def mlstm_recurrent_reference(x: MLSTMInputs, eps: float) -> torch.Tensor:
    """Step-by-step mLSTM recurrence with a running max (C: dh x dh, n: dh, m: scalar)."""
    b, h, L, dh = x.q.shape
    qc = x.q / math.sqrt(dh)
    log_f = F.logsigmoid(x.fgate)
    c_state = x.q.new_zeros(b, h, dh, dh)
    n_state = x.q.new_zeros(b, h, dh)
    m_state = x.q.new_full((b, h), float("-inf"))
    outs = []
    for t in range(L):
        m_new = torch.maximum(log_f[..., t] + m_state, x.igate[..., t]).detach()
        f_scale = torch.exp(log_f[..., t] + m_state - m_new)
        i_scale = torch.exp(x.igate[..., t] - m_new)
        kv = x.k[..., t, :, None] * x.v[..., t, None, :]
        c_state = f_scale[..., None, None] * c_state + i_scale[..., None, None] * kv
        n_state = f_scale[..., None] * n_state + i_scale[..., None] * x.k[..., t, :]
        m_state = m_new
        num = torch.einsum("bhk,bhkv->bhv", qc[..., t, :], c_state)
        qn = (qc[..., t, :] * n_state).sum(-1)
        den = torch.maximum(qn.abs(), torch.exp(-m_state)) + eps
        outs.append(num / den[..., None])
    return torch.stack(outs, dim=-2)
