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


def mlstm_parallel_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate: torch.Tensor,
    fgate: torch.Tensor,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Quadratic, max-stabilised parallel mLSTM (the spec); differentiable by autograd."""
    check_mlstm_shapes(q, k, v, igate, fgate)
    ct = compute_dtype(q.dtype)
    qc, kc, vc, ic, fc = (t.to(ct) for t in (q, k, v, igate, fgate))
    L, dh = q.shape[-2], q.shape[-1]
    log_f_cum = F.logsigmoid(fc).cumsum(-1)
    log_d = log_f_cum[..., :, None] - log_f_cum[..., None, :] + ic[..., None, :]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True).detach()
    s = (qc @ kc.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) * torch.exp(log_d - m)
    normaliser = torch.maximum(s.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return ((s @ vc) / normaliser).to(q.dtype)


def mlstm_recurrent_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate: torch.Tensor,
    fgate: torch.Tensor,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Step-by-step mLSTM recurrence with a running max (C: dh x dh, n: dh, m: scalar)."""
    b, h, L, dh = check_mlstm_shapes(q, k, v, igate, fgate)
    ct = compute_dtype(q.dtype)
    qc, kc, vc, ic, fc = (t.to(ct) for t in (q, k, v, igate, fgate))
    qc = qc / math.sqrt(dh)
    log_f = F.logsigmoid(fc)
    c_state = q.new_zeros(b, h, dh, dh, dtype=ct)
    n_state = q.new_zeros(b, h, dh, dtype=ct)
    m_state = q.new_full((b, h), float("-inf"), dtype=ct)
    outs = []
    for t in range(L):
        m_new = torch.maximum(log_f[..., t] + m_state, ic[..., t]).detach()
        f_scale = torch.exp(log_f[..., t] + m_state - m_new)
        i_scale = torch.exp(ic[..., t] - m_new)
        kv = kc[..., t, :, None] * vc[..., t, None, :]
        c_state = f_scale[..., None, None] * c_state + i_scale[..., None, None] * kv
        n_state = f_scale[..., None] * n_state + i_scale[..., None] * kc[..., t, :]
        m_state = m_new
        num = torch.einsum("bhk,bhkv->bhv", qc[..., t, :], c_state)
        qn = (qc[..., t, :] * n_state).sum(-1)
        den = torch.maximum(qn.abs(), torch.exp(-m_state)) + eps
        outs.append(num / den[..., None])
    return torch.stack(outs, dim=-2).to(q.dtype)
