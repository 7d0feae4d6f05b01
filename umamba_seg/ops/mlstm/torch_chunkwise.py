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

Layout of the work: per-chunk state contributions are one batched product over all
chunks; carrying them across chunks is a Python loop of one fused multiply-add per chunk
(the chunk maxima are vectorised with a cummax); the intra-chunk part runs over
(batch x head x chunk) in blocks of ``BLOCK_POSITIONS`` positions, so temporaries are
bounded whatever L is. Memory kept for backward: the inputs, ``h``, two numbers per
position and one (dh x dh + dh) state per chunk.

Everything is computed in float32 (float64 for float64 inputs); the helper functions
here (gate preparation, output gradients, gate gradients) are shared with the Triton
path, which replaces only the per-chunk heavy parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reference import DEFAULT_EPS, MLSTMInputs, check_mlstm_shapes, compute_dtype

DEFAULT_CHUNK = 64
BLOCK_POSITIONS = 131072


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


def chunk_maxima(a_max: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Running max of the state in log space: ``m_prev (.., N + 1)``, ``m_prev[..., 0] = -inf``.

    ``m_after[c] = max(m_after[c-1] + g[c], a_max[c]) = G[c] + cummax(a_max - G)[c]`` with
    ``G`` the cumulative ``g``; computed in float64 because ``G`` grows like L while
    the maxima stay of the order of the gates.
    """
    g64, a64 = g.double(), a_max.double()
    cum = g64.cumsum(-1)
    m_after = cum + (a64 - cum).cummax(-1).values
    first = torch.full_like(m_after[..., :1], float("-inf"))
    return torch.cat([first, m_after], dim=-1).to(a_max.dtype)


def state_recurrence(k_local: torch.Tensor, a_max: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry the state across chunks: returns the state entering each chunk and the maxima.

    ``k_local[..., c, :]``: chunk c's own contribution (any trailing size, flattened),
    normalised by ``a_max[..., c]``. Returns ``states (.., N, E)`` (state *before* chunk c,
    normalised by ``m_prev[..., c]``) and ``m_prev (.., N + 1)`` (see :func:`chunk_maxima`).
    One fused multiply-add per chunk in the Python loop; the scalars are vectorised.
    """
    m_prev = chunk_maxima(a_max, g)
    decay = torch.exp(m_prev[..., :-1] + g - m_prev[..., 1:])
    scaled = k_local * torch.exp(a_max - m_prev[..., 1:])[..., None]
    states = _linear_scan(scaled, decay, reverse=False)
    return states, m_prev


def reverse_recurrence(r_local: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Reverse state: ``out[c] = sum over later chunks``; ``out[c-1] = r_local[c] + decay[c] * out[c]``."""
    return _linear_scan(r_local, decay, reverse=True)


def _linear_scan(local: torch.Tensor, decay: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Exclusive scan ``out[c] = decay[c-1] * out[c-1] + local[c-1]`` (or mirrored), ``out[first] = 0``.

    Chunks are moved to the front so each step writes one contiguous slice in place.
    """
    loc = local.movedim(-2, 0)
    dec = decay.movedim(-1, 0)[..., None]
    out = torch.zeros_like(loc)
    n = loc.shape[0]
    order = range(n - 1, 0, -1) if reverse else range(n - 1)
    step = -1 if reverse else 1
    for c in order:
        torch.addcmul(loc[c], out[c], dec[c], out=out[c + step])
    return out.movedim(0, -2).contiguous()


def _decay_matrix(b: torch.Tensor, log_i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``exp(b_t - b_s + log_i_s - m_t)`` for s <= t, 0 above the diagonal: ``(.., T, T)``."""
    t = b.shape[-1]
    p = (b - m)[..., :, None] + (log_i - b)[..., None, :]
    above = torch.ones(t, t, dtype=torch.bool, device=b.device).triu(1)
    return p.masked_fill_(above, float("-inf")).exp_()


def _blocks(n_chunks: int, chunk: int) -> list[slice]:
    """Ranges of (batch x head x chunk) chunks processed together: about BLOCK_POSITIONS
    positions at a time, so the T x T intra-chunk temporaries stay bounded whatever L is."""
    per = max(1, BLOCK_POSITIONS // chunk)
    return [slice(c, min(c + per, n_chunks)) for c in range(0, n_chunks, per)]


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


def mlstm_chunkwise_forward(x: MLSTMInputs, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK) -> ForwardResult:
    """Chunkwise forward (no autograd graph); see the module docstring."""
    q, k, v, igate, fgate = x
    _, _, L, dh = check_mlstm_shapes(q, k, v, igate, fgate)
    gates = chunk_gates(igate, fgate, chunk, compute_dtype(q.dtype))
    qc, kc, vc = _chunk_inputs(q, k, v, chunk)
    w = torch.exp(gates.a - gates.a_max[..., None])
    c_local = torch.einsum("bhntk,bhntv->bhnkv", kc * w[..., None], vc)
    n_local = torch.einsum("bhnt,bhntk->bhnk", w, kc)
    flat = torch.cat([c_local.flatten(-2), n_local], dim=-1)
    del c_local, n_local
    states, m_prev = state_recurrence(flat, gates.a_max, gates.g)
    del flat
    c_prev = states[..., : dh * dh].unflatten(-1, (dh, dh))
    n_prev = states[..., dh * dh :]

    # Every chunk is independent once its entering state is known: flatten (b, h, N) into
    # one chunk axis and work through it in contiguous blocks (bounded T x T temporaries).
    qf, kf, vf = (x.flatten(0, 2) for x in (qc, kc, vc))
    bf, lif = gates.b.flatten(0, 2), gates.log_i.flatten(0, 2)
    cf, nf = c_prev.flatten(0, 2), n_prev.flatten(0, 2)
    mbf = m_prev[..., :-1].reshape(-1)
    h = torch.empty_like(vf)
    n = torch.empty_like(bf)
    m = torch.empty_like(bf)
    for blk in _blocks(qf.shape[0], chunk):
        b, log_i, q_b = bf[blk], lif[blk], qf[blk]
        # max_s<=t (b_t - b_s + log_i_s) = b_t + cummax_s(log_i_s - b_s): O(T), not O(T^2).
        m_intra = b + (log_i - b).cummax(-1).values
        m_inter = mbf[blk, None] + b
        m_b = torch.maximum(m_inter, m_intra)
        s_b = torch.bmm(q_b, kf[blk].transpose(-1, -2)).mul_(_decay_matrix(b, log_i, m_b))
        alpha = torch.exp(m_inter - m_b)
        num = torch.bmm(q_b, cf[blk]).mul_(alpha[..., None]).baddbmm_(s_b, vf[blk])
        n_b = alpha * torch.bmm(q_b, nf[blk, :, None])[..., 0] + s_b.sum(-1)
        den = torch.maximum(n_b.abs(), torch.exp(-m_b)) + eps
        torch.div(num, den[..., None], out=h[blk])
        n[blk] = n_b
        m[blk] = m_b
    h, n, m = h.view_as(vc), n.view_as(gates.b), m.view_as(gates.b)
    return ForwardResult(h=h.flatten(-3, -2)[..., :L, :], n=n, m=m, c_prev=c_prev, n_prev=n_prev, m_prev=m_prev)


def mlstm_chunkwise_backward(
    dh_out: torch.Tensor, x: MLSTMInputs, fwd: ForwardResult, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, digate, dfgate)`` in the compute dtype, from saved per-chunk states."""
    q, k, v, igate, fgate = x
    L, dh = q.shape[-2], q.shape[-1]
    n_ch = num_chunks(L, chunk)
    lp = n_ch * chunk
    gates = chunk_gates(igate, fgate, chunk, compute_dtype(q.dtype))
    qc, kc, vc = _chunk_inputs(q, k, v, chunk)
    h = pad_length(fwd.h, lp, -2).unflatten(-2, (n_ch, chunk))
    dh_pad = pad_length(dh_out.to(fwd.h.dtype), lp, -2).unflatten(-2, (n_ch, chunk))
    dnum, dn = output_grads(dh_pad, h, fwd.n, fwd.m, eps)
    del h, dh_pad
    m = fwd.m
    m_before, m_after = fwd.m_prev[..., :-1], fwd.m_prev[..., 1:]

    # Reverse state: queries of later chunks, weighted relative to the state max before them.
    w_q = torch.exp(gates.b - m + m_before[..., None])
    r_c = torch.einsum("bhntk,bhntv->bhnkv", qc * w_q[..., None], dnum)
    r_n = torch.einsum("bhnt,bhntk,bhnt->bhnk", w_q, qc, dn)
    decay = torch.exp(gates.g + m_before - m_after)
    r_next = reverse_recurrence(torch.cat([r_c.flatten(-2), r_n], dim=-1), decay)
    del r_c, r_n
    r_next_c = r_next[..., : dh * dh].unflatten(-1, (dh, dh))
    r_next_n = r_next[..., dh * dh :]

    qf, kf, vf, dnf = (x.flatten(0, 2) for x in (qc, kc, vc, dnum))
    bf, lif, af, mf, dnnf = (x.flatten(0, 2) for x in (gates.b, gates.log_i, gates.a, m, dn))
    cf, npf = fwd.c_prev.flatten(0, 2), fwd.n_prev.flatten(0, 2)
    rcf, rnf = r_next_c.flatten(0, 2), r_next_n.flatten(0, 2)
    mbf, maf = m_before.reshape(-1), m_after.reshape(-1)
    dqc, dkc, dvc = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(vf)
    for blk in _blocks(qf.shape[0], chunk):
        b, m_b, q_b, k_b, v_b = bf[blk], mf[blk], qf[blk], kf[blk], vf[blk]
        dnum_b, dn_b = dnf[blk], dnnf[blk]
        p = _decay_matrix(b, lif[blk], m_b)
        alpha = torch.exp(mbf[blk, None] + b - m_b)
        gamma = torch.exp(af[blk] - maf[blk, None])
        ds_p = torch.bmm(dnum_b, v_b.transpose(-1, -2)).add_(dn_b[..., None]).mul_(p)
        s = torch.bmm(q_b, k_b.transpose(-1, -2)).mul_(p)
        del p
        inter_q = torch.baddbmm(dn_b[..., None] * npf[blk, None, :], dnum_b, cf[blk].transpose(-1, -2))
        torch.baddbmm(inter_q.mul_(alpha[..., None]), ds_p, k_b, out=dqc[blk])
        inter_k = torch.bmm(v_b, rcf[blk].transpose(-1, -2)).add_(rnf[blk, None, :]).mul_(gamma[..., None])
        torch.baddbmm(inter_k, ds_p.transpose(-1, -2), q_b, out=dkc[blk])
        inter_v = torch.bmm(k_b, rcf[blk]).mul_(gamma[..., None])
        torch.baddbmm(inter_v, s.transpose(-1, -2), dnum_b, out=dvc[blk])
    dqc, dkc, dvc = dqc.view_as(qc), dkc.view_as(kc), dvc.view_as(vc)

    qc, dqc, kc, dkc, dvc = (x.flatten(-3, -2)[..., :L, :] for x in (qc, dqc, kc, dkc, dvc))
    d_igate, d_fgate = gate_grads(qc, dqc, kc, dkc, fgate)
    return dqc / math.sqrt(dh), dkc, dvc, d_igate, d_fgate
