"""Chunkwise mLSTM in vectorised PyTorch: memory linear in L, hand-written backward.

Why: the parallel form (``reference.py``) needs an L x L matrix per head, which a 3D
volume (L up to ~262k tokens) cannot afford. The sequence is cut into chunks of ``T``
positions. Inside a chunk the quadratic form is used (a T x T matrix); across chunks a
recurrent state carries everything before the chunk:

    C (dh x dh) = sum_j exp(D_end,j - m) k_j v_j^T,  n (dh) = sum_j exp(D_end,j - m) k_j,

stabilised by ``m``, the exact running max of ``D_end,j``, so every position's
stabiliser ``m_i = max(m_prev + b_i, max_{s<=i in chunk} D_is)`` is the same number the
parallel form uses (this matters for Vision-LSTM's ``eps``).

Backward (``m`` is a constant, as in the spec): the output gradient becomes gradients
``dnum`` (dh) and ``dn`` (scalar) of the un-normalised numerator and normaliser; the
q/k/v gradients are again a chunkwise linear attention, with a reverse state
``R = sum_{later i} w_i q_i [dnum_i, dn_i]`` scaled by the forward's chunk maxima so no
exponent is positive. Gate gradients need no extra pass: with ``F`` the cumulative
log forget gate, ``dF_i = q_i.dq_i - k_i.dk_i`` and ``dlog i_j = k_j.dk_j``.

Everything is computed in float32 (float64 for float64 inputs); the helper functions
here (gate preparation, output gradients, gate gradients) are shared with the Triton
path, which replaces only the per-chunk heavy parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reference import DEFAULT_EPS, check_mlstm_shapes, compute_dtype

DEFAULT_CHUNK = 64


@dataclass
class ChunkedGates:
    """Gate tensors cut into chunks, in the compute dtype, shaped ``(b, h, N, T)``.

    ``log_i``: input-gate logits; ``b``: cumulative log forget gate inside the chunk
    (inclusive); ``g``: the chunk's total log forget (``b[..., -1]``, shape (b, h, N));
    ``a``: ``g - b + log_i``, the log weight of each key in the state at chunk end;
    ``a_max``: its max per chunk.
    """

    log_i: torch.Tensor
    b: torch.Tensor
    g: torch.Tensor
    a: torch.Tensor
    a_max: torch.Tensor


def num_chunks(length: int, chunk: int) -> int:
    """Number of chunks of ``chunk`` positions covering ``length``."""
    return -(-length // chunk)


def pad_length(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` up to ``length`` (no copy when already that long)."""
    extra = length - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def chunk_gates(igate: torch.Tensor, fgate: torch.Tensor, chunk: int, dtype: torch.dtype) -> ChunkedGates:
    """Pad the gates to whole chunks and compute the per-chunk log-space quantities in ``dtype``."""
    ct = dtype
    L = igate.shape[-1]
    n = num_chunks(L, chunk)
    lp = n * chunk
    log_i = pad_length(igate.to(ct), lp, -1).unflatten(-1, (n, chunk))
    log_f = F.logsigmoid(pad_length(fgate.to(ct), lp, -1)).unflatten(-1, (n, chunk))
    b = log_f.cumsum(-1)
    g = b[..., -1]
    a = g[..., None] - b + log_i
    return ChunkedGates(log_i=log_i, b=b, g=g, a=a, a_max=a.amax(-1))


def output_grads(
    dh: torch.Tensor, h: torch.Tensor, n: torch.Tensor, m: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the numerator (``dnum``, like ``h``) and of the normaliser sum (``dn``).

    ``h = num / (max(|n|, exp(-m)) + eps)`` with ``m`` constant.
    """
    den = torch.maximum(n.abs(), torch.exp(-m)) + eps
    dnum = dh / den[..., None]
    active = (n.abs() > torch.exp(-m)).to(n.dtype)
    dn = -(dh * h).sum(-1) / den * torch.sign(n) * active
    return dnum, dn


def gate_grads(
    q_scaled: torch.Tensor,
    dq_scaled: torch.Tensor,
    k: torch.Tensor,
    dk: torch.Tensor,
    fgate: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input- and forget-gate gradients from the q/k gradients (all ``(b, h, L, ...)``).

    ``q_scaled`` is ``q / sqrt(dh)`` and ``dq_scaled`` the gradient with respect to it.
    """
    k_dk = (k * dk).sum(-1)
    d_cum = (q_scaled * dq_scaled).sum(-1) - k_dk
    d_log_f = d_cum.flip(-1).cumsum(-1).flip(-1)
    d_fgate = d_log_f * torch.sigmoid(-fgate.to(d_log_f.dtype))
    return k_dk, d_fgate


def state_recurrence(
    k_local: torch.Tensor, a_max: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry the state across chunks: returns the state entering each chunk and the maxima.

    ``k_local[..., c, :]``: chunk c's own contribution (any trailing size, flattened),
    normalised by ``a_max[..., c]``. Returns ``states (.., N, E)`` (state *before* chunk c,
    normalised by ``m_prev[..., c]``) and ``m_prev (.., N + 1)`` (last entry: after the
    final chunk). ``m_prev[..., 0] = -inf`` (empty state).
    """
    n = k_local.shape[-2]
    states = torch.empty_like(k_local)
    m_prev = a_max.new_empty(*a_max.shape[:-1], n + 1)
    state = torch.zeros_like(k_local[..., 0, :])
    m = torch.full_like(a_max[..., 0], float("-inf"))
    for c in range(n):
        states[..., c, :] = state
        m_prev[..., c] = m
        m_new = torch.maximum(m + g[..., c], a_max[..., c])
        state = torch.exp(m + g[..., c] - m_new)[..., None] * state + torch.exp(
            a_max[..., c] - m_new
        )[..., None] * k_local[..., c, :]
        m = m_new
    m_prev[..., n] = m
    return states, m_prev


def reverse_recurrence(r_local: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Reverse state: ``out[c] = sum over later chunks``; ``out[c-1] = r_local[c] + decay[c] * out[c]``."""
    n = r_local.shape[-2]
    out = torch.empty_like(r_local)
    state = torch.zeros_like(r_local[..., 0, :])
    for c in range(n - 1, -1, -1):
        out[..., c, :] = state
        state = r_local[..., c, :] + decay[..., c, None] * state
    return out


def _causal_log_d(gates: ChunkedGates) -> torch.Tensor:
    """Intra-chunk log decay matrix ``b_t - b_s + log_i_s`` (s <= t), -inf above the diagonal."""
    t = gates.b.shape[-1]
    log_d = gates.b[..., :, None] - gates.b[..., None, :] + gates.log_i[..., None, :]
    causal = torch.ones(t, t, dtype=torch.bool, device=log_d.device).tril()
    return log_d.masked_fill(~causal, float("-inf"))


def _chunk_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (scaled by 1/sqrt(dh)), k, v in the compute dtype, padded, as ``(b, h, N, T, dh)``."""
    ct = compute_dtype(q.dtype)
    L, dh = q.shape[-2], q.shape[-1]
    n = num_chunks(L, chunk)
    out = []
    for t, s in ((q, 1.0 / math.sqrt(dh)), (k, 1.0), (v, 1.0)):
        x = pad_length(t.to(ct), n * chunk, -2)
        if s != 1.0:
            x = x * s
        out.append(x.unflatten(-2, (n, chunk)))
    return out[0], out[1], out[2]


@dataclass
class ForwardResult:
    """Output of the chunkwise forward plus what the backward needs (all compute dtype).

    ``h (b,h,L,dh)``; per position ``n`` (normaliser sum) and ``m`` (stabiliser), chunked
    and padded: ``(b,h,N,T)``;
    per chunk the state entering it, ``c_prev (b,h,N,dh,dh)`` and ``n_prev (b,h,N,dh)``,
    and ``m_prev (b,h,N+1)``.
    """

    h: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor
    c_prev: torch.Tensor
    n_prev: torch.Tensor
    m_prev: torch.Tensor


def mlstm_chunkwise_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate: torch.Tensor,
    fgate: torch.Tensor,
    eps: float = DEFAULT_EPS,
    chunk: int = DEFAULT_CHUNK,
) -> ForwardResult:
    """Chunkwise forward (no autograd graph); see the module docstring."""
    _, _, L, dh = check_mlstm_shapes(q, k, v, igate, fgate)
    gates = chunk_gates(igate, fgate, chunk, compute_dtype(q.dtype))
    qc, kc, vc = _chunk_inputs(q, k, v, chunk)
    w = torch.exp(gates.a - gates.a_max[..., None])
    c_local = torch.einsum("bhnt,bhntk,bhntv->bhnkv", w, kc, vc)
    n_local = torch.einsum("bhnt,bhntk->bhnk", w, kc)
    flat = torch.cat([c_local.flatten(-2), n_local], dim=-1)
    states, m_prev = state_recurrence(flat, gates.a_max, gates.g)
    c_prev = states[..., : dh * dh].unflatten(-1, (dh, dh))
    n_prev = states[..., dh * dh :]

    log_d = _causal_log_d(gates)
    m_inter = m_prev[..., :-1, None] + gates.b
    m = torch.maximum(m_inter, log_d.amax(-1))
    s = (qc @ kc.transpose(-1, -2)) * torch.exp(log_d - m[..., None])
    alpha = torch.exp(m_inter - m)
    num = alpha[..., None] * (qc @ c_prev) + s @ vc
    n = alpha * (qc * n_prev[..., None, :]).sum(-1) + s.sum(-1)
    den = torch.maximum(n.abs(), torch.exp(-m)) + eps
    h = num / den[..., None]
    return ForwardResult(
        h=h.flatten(-3, -2)[..., :L, :],
        n=n,
        m=m,
        c_prev=c_prev,
        n_prev=n_prev,
        m_prev=m_prev,
    )


def mlstm_chunkwise_backward(
    dh_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate: torch.Tensor,
    fgate: torch.Tensor,
    fwd: ForwardResult,
    eps: float = DEFAULT_EPS,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, digate, dfgate)`` in the compute dtype, from saved per-chunk states."""
    L, dh = q.shape[-2], q.shape[-1]
    n_ch = num_chunks(L, chunk)
    lp = n_ch * chunk
    gates = chunk_gates(igate, fgate, chunk, compute_dtype(q.dtype))
    qc, kc, vc = _chunk_inputs(q, k, v, chunk)
    h = pad_length(fwd.h, lp, -2).unflatten(-2, (n_ch, chunk))
    dh_pad = pad_length(dh_out.to(fwd.h.dtype), lp, -2).unflatten(-2, (n_ch, chunk))
    dnum, dn = output_grads(dh_pad, h, fwd.n, fwd.m, eps)
    m = fwd.m
    m_before, m_after = fwd.m_prev[..., :-1], fwd.m_prev[..., 1:]

    # Reverse state: queries of later chunks, weighted relative to the state max before them.
    w_q = torch.exp(gates.b - m + m_before[..., None])
    r_c = torch.einsum("bhnt,bhntk,bhntv->bhnkv", w_q, qc, dnum)
    r_n = torch.einsum("bhnt,bhntk,bhnt->bhnk", w_q, qc, dn)
    decay = torch.exp(gates.g + m_before - m_after)
    r_next = reverse_recurrence(torch.cat([r_c.flatten(-2), r_n], dim=-1), decay)
    r_next_c = r_next[..., : dh * dh].unflatten(-1, (dh, dh))
    r_next_n = r_next[..., dh * dh :]

    log_d = _causal_log_d(gates)
    p = torch.exp(log_d - m[..., None])
    alpha = torch.exp(m_before[..., None] + gates.b - m)
    gamma = torch.exp(gates.a - m_after[..., None])
    ds_p = (dnum @ vc.transpose(-1, -2) + dn[..., None]) * p
    s = (qc @ kc.transpose(-1, -2)) * p
    dqc = alpha[..., None] * (dnum @ fwd.c_prev.transpose(-1, -2) + dn[..., None] * fwd.n_prev[..., None, :])
    dqc = dqc + ds_p @ kc
    dkc = gamma[..., None] * (vc @ r_next_c.transpose(-1, -2) + r_next_n[..., None, :]) + ds_p.transpose(-1, -2) @ qc
    dvc = gamma[..., None] * (kc @ r_next_c) + s.transpose(-1, -2) @ dnum

    qc, dqc, kc, dkc, dvc = (x.flatten(-3, -2)[..., :L, :] for x in (qc, dqc, kc, dkc, dvc))
    d_igate, d_fgate = gate_grads(qc, dqc, kc, dkc, fgate)
    return dqc / math.sqrt(dh), dkc, dvc, d_igate, d_fgate
