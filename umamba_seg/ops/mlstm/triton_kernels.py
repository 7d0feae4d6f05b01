"""Chunkwise mLSTM in Triton: forward and backward kernels, plus their host-side glue.

The algorithm is the one of ``torch_chunkwise.py`` (read its docstring first); this
module only moves the heavy per-chunk work onto the GPU. Cheap O(L) gate arithmetic
(chunk-local cumulative log forget gates, per-position weights, the gradients of the
gates) stays in PyTorch and is shared with the torch path.

Kernels (one program per chunk, so the work parallelises over L, not only over heads):

* :func:`_chunk_outer_kernel` - per chunk, ``sum_t w_t x_t [y_t, z_t]^T``: the chunk's own
  contribution to the recurrent state (forward: x=k, y=v, z=1; backward: x=q, y=dnum,
  z=dn). Output rows are flat: ``dk * dv`` matrix entries then ``dk`` vector entries.
* :func:`_state_recurrence_kernel` - carries those flat states across chunks (forward
  with the running max, backward in reverse with given decays). Sequential over chunks,
  parallel over state entries; elementwise only, so it is cheap.
* :func:`_fwd_output_kernel` - per chunk: intra-chunk quadratic part + inter-chunk part
  from the state entering the chunk, the max(|n|, exp(-m)) normaliser, and ``n``, ``m``
  per position for the backward.
* :func:`_bwd_dqk_kernel`, :func:`_bwd_dv_kernel` - per chunk gradients of q, k and v.

States and accumulations are float32 whatever the input dtype (float64 is the torch
path's job). Matrix products use ``tl.dot`` on tensor cores with TF32 operands
(``PRECISION``), as cuDNN convolutions do by default: "tf32x3" (near-fp32) and "ieee"
were measured to spill registers at these tile sizes; ``backend="torch"`` gives full
fp32 products. Tile sizes were chosen so no kernel spills on sm_80 or sm_90a.
Everything runs in Triton's interpreter under ``TRITON_INTERPRET=1`` (how CPU tests
check it); :data:`AOT_CONFIGS` lists the kernels for ahead-of-time compilation checks.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .reference import DEFAULT_EPS, MLSTMInputs, check_mlstm_shapes
from .torch_chunkwise import (
    DEFAULT_CHUNK,
    ForwardResult,
    chunk_gates,
    gate_grads,
    num_chunks,
    output_grads,
    pad_length,
)

RECURRENCE_BLOCK = 512
NUM_WARPS = 4
DQK_NUM_WARPS = 8
MAX_TILE = 32
DQK_V_TILE = 16
PRECISION = "tf32"


@triton.jit
def _per_head(ptrs, offset):
    """Each pointer of the tuple ``ptrs`` moved to this (batch, head)'s rows: int64 ``offset``
    once here, int32 offsets in the tiles."""
    out = ()
    for i in tl.static_range(len(ptrs)):
        out = out + (ptrs[i] + offset,)
    return out


@triton.jit
def _chunk_states(ptrs, bh, N, c, DH):
    """Each pointer of ``ptrs`` (flat per-chunk states, ``DH * DH + DH`` entries each) moved
    to chunk ``c`` of (batch, head) ``bh``."""
    E = DH * DH + DH
    return _per_head(ptrs, (bh * N + c) * E)


@triton.jit
def _row_tile(t, t_ok, cols, cols_ok, DH):
    """Offsets and mask of the [T, len(cols)] tile at positions ``t``, columns ``cols`` of a
    per-head (L, DH) row-major matrix."""
    return t[:, None] * DH + cols[None, :], t_ok[:, None] & cols_ok[None, :]


@triton.jit
def _load_f32(ptr, offs, mask):
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _state_vec(st, rk, k_ok, DH):
    """Entries ``rk`` of the DH-vector part of a flat state (after its DH x DH matrix)."""
    return tl.load(st + DH * DH + rk, mask=k_ok, other=0.0)


@triton.jit
def _log_decay(b, log_i, r):
    """log of the intra-chunk decay D[t, s] = b_t - b_s + log i_s for s <= t, -inf above the diagonal."""
    causal = r[:, None] >= r[None, :]
    return tl.where(causal, b[:, None] - b[None, :] + log_i[None, :], float("-inf"))


@triton.jit
def _qk_and_state(qk, Q, K, st, t, t_ok, k0, rv, v_ok, DH, BK: tl.constexpr, PRECISION: tl.constexpr):
    """One key-column tile ``k0`` of a chunk (forward output and dv): ``qk`` plus ``q k^T``
    over the tile, q and k, the state's [BK, BV] matrix tile at rows k0.., columns ``rv``,
    and the tile's columns ``rk``, valid where ``k_ok``."""
    rk = k0 + tl.arange(0, BK)
    k_ok = rk < DH
    io, io_ok = _row_tile(t, t_ok, rk, k_ok, DH)
    q = _load_f32(Q, io, io_ok)
    k = _load_f32(K, io, io_ok)
    qk += tl.dot(q, tl.trans(k), input_precision=PRECISION)
    s_tile = tl.load(st + rk[:, None] * DH + rv[None, :], mask=k_ok[:, None] & v_ok[None, :], other=0.0)
    return qk, q, k, s_tile, rk, k_ok


@triton.jit
def _bwd_gates(B, LOGI, M, MPREV, bh, c, N, r, t, T: tl.constexpr):
    """Backward's per-position weights of a chunk: ``p`` = D / exp(m) [T, T] (intra-chunk),
    ``alpha`` = exp(m_before + b - m) (dq's inter-chunk part) and ``gamma`` = exp(g - b +
    log i - m_after) (dk's and dv's inter-chunk part)."""
    b = tl.load(B + t)
    log_i = tl.load(LOGI + t)
    m = tl.load(M + t)
    m_before = tl.load(MPREV + bh * (N + 1) + c)
    m_after = tl.load(MPREV + bh * (N + 1) + c + 1)
    g = tl.load(B + c * T + T - 1)
    p = tl.exp(_log_decay(b, log_i, r) - m[:, None])
    alpha = tl.exp(m_before + b - m)
    gamma = tl.exp(g - b + log_i - m_after)
    return p, alpha, gamma


@triton.jit
def _chunk_positions(c, L, T: tl.constexpr):
    """``r`` = 0..T-1, positions ``t = c T + r`` of chunk ``c`` and ``t < L``."""
    r = tl.arange(0, T)
    t = c * T + r
    return r, t, t < L


@triton.jit
def _chunk_outer_kernel(
    X,
    Y,
    Z,
    W,
    OUT,
    L,
    N,
    DIM_K,
    DIM_V,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_Z: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """OUT[bh, c, :] = flat(sum_t W[t] X[t, :] Y[t, :]^T) ++ sum_t W[t] X[t, :] Z[t] (Z = 1 if absent)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    tile = tl.program_id(2)
    n_vt = tl.cdiv(DIM_V, BV)
    kt = tile // n_vt
    vt = tile % n_vt
    _r, t, t_ok = _chunk_positions(c, L, T)
    rk = kt * BK + tl.arange(0, BK)
    rv = vt * BV + tl.arange(0, BV)
    k_ok = rk < DIM_K
    v_ok = rv < DIM_V
    w = tl.load((W + bh * N * T) + t)
    x_offs, x_ok = _row_tile(t, t_ok, rk, k_ok, DIM_K)
    xw = _load_f32(X + bh * L * DIM_K, x_offs, x_ok) * w[:, None]
    y_offs, y_ok = _row_tile(t, t_ok, rv, v_ok, DIM_V)
    y = _load_f32(Y + bh * L * DIM_V, y_offs, y_ok)
    mat = tl.dot(tl.trans(xw), y, input_precision=PRECISION)
    E = DIM_K * DIM_V + DIM_K
    base = OUT + (bh * N + c) * E
    tl.store(base + rk[:, None] * DIM_V + rv[None, :], mat, mask=k_ok[:, None] & v_ok[None, :])
    if vt == 0:
        if HAS_Z:
            z = tl.load((Z + bh * N * T) + t)
            vec = tl.sum(xw * z[:, None], axis=0)
        else:
            vec = tl.sum(xw, axis=0)
        tl.store(base + DIM_K * DIM_V + rk, vec, mask=k_ok)


@triton.jit
def _state_recurrence_kernel(
    LOCAL,
    STATES,
    G,
    AMAX,
    DECAY,
    MPREV,
    N,
    E,
    BLOCK: tl.constexpr,
    TRACK_MAX: tl.constexpr,
):
    """Carry flat states across chunks; STATES[c] = the state *before* chunk c is folded in.

    TRACK_MAX (forward, chunks in order): m' = max(m + G[c], AMAX[c]);
    S = exp(m + G[c] - m') S + exp(AMAX[c] - m') LOCAL[c]; MPREV[c] = m before chunk c,
    MPREV[N] = final m, MPREV[0] = -1e30 (the empty state; the torch path writes -inf,
    both give zero weights). Otherwise (backward, chunks in reverse):
    S = LOCAL[c] + DECAY[c] S. Every program recomputes the scalar m sequence (cheap).
    """
    pe = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    re = pe * BLOCK + tl.arange(0, BLOCK)
    ok = re < E
    state = tl.zeros([BLOCK], dtype=tl.float32)
    if TRACK_MAX:
        m = tl.full([], -1e30, tl.float32)
        for c in range(0, N):
            tl.store((STATES + (bh * N + c) * E) + re, state, mask=ok)
            if pe == 0:
                tl.store(MPREV + bh * (N + 1) + c, m)
            g = tl.load(G + bh * N + c)
            a = tl.load(AMAX + bh * N + c)
            m_new = tl.maximum(m + g, a)
            local = tl.load((LOCAL + (bh * N + c) * E) + re, mask=ok, other=0.0)
            state = tl.exp(m + g - m_new) * state + tl.exp(a - m_new) * local
            m = m_new
        if pe == 0:
            tl.store(MPREV + bh * (N + 1) + N, m)
    else:
        for i in range(0, N):
            c = N - 1 - i
            tl.store((STATES + (bh * N + c) * E) + re, state, mask=ok)
            decay = tl.load(DECAY + bh * N + c)
            local = tl.load((LOCAL + (bh * N + c) * E) + re, mask=ok, other=0.0)
            state = local + decay * state


@triton.jit
def _fwd_output_kernel(
    Q,
    K,
    V,
    LOGI,
    B,
    MPREV,
    STATES,
    H,
    NOUT,
    MOUT,
    L,
    N,
    DH,
    scale,
    eps,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of value columns: h = num / (max(|n|, exp(-m)) + eps)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q, K, V, H = _per_head((Q, K, V, H), bh * L * DH)
    B, LOGI, NOUT, MOUT = _per_head((B, LOGI, NOUT, MOUT), bh * N * T)
    vt = tl.program_id(2)
    r, t, t_ok = _chunk_positions(c, L, T)
    rv = vt * BV + tl.arange(0, BV)
    v_ok = rv < DH
    (st,) = _chunk_states((STATES,), bh, N, c, DH)
    qk = tl.zeros([T, T], dtype=tl.float32)
    qc = tl.zeros([T, BV], dtype=tl.float32)
    qn = tl.zeros([T], dtype=tl.float32)
    for k0 in range(0, DH, BK):
        qk, q, _k, c_tile, rk, k_ok = _qk_and_state(qk, Q, K, st, t, t_ok, k0, rv, v_ok, DH, BK, PRECISION)
        qc += tl.dot(q, c_tile, input_precision=PRECISION)
        qn += tl.sum(q * _state_vec(st, rk, k_ok, DH)[None, :], axis=1)
    # Gates after the loop, so the T x T decay matrix is not live across it (registers).
    b = tl.load(B + t)
    log_i = tl.load(LOGI + t)
    m_prev = tl.load(MPREV + bh * (N + 1) + c)
    log_d = _log_decay(b, log_i, r)
    m_inter = m_prev + b
    m = tl.maximum(m_inter, tl.max(log_d, axis=1))
    alpha = tl.exp(m_inter - m)
    s = qk * scale * tl.exp(log_d - m[:, None])
    v = tl.load(V + (t[:, None] * DH + rv[None, :]), mask=t_ok[:, None] & v_ok[None, :], other=0.0)
    num = (alpha * scale)[:, None] * qc + tl.dot(s, v.to(tl.float32), input_precision=PRECISION)
    n = alpha * scale * qn + tl.sum(s, axis=1)
    den = tl.maximum(tl.abs(n), tl.exp(-m)) + eps
    h = num / den[:, None]
    tl.store(H + (t[:, None] * DH + rv[None, :]), h, mask=t_ok[:, None] & v_ok[None, :])
    if vt == 0:
        tl.store(NOUT + t, n)
        tl.store(MOUT + t, m)


@triton.jit
def _bwd_dqk_kernel(
    Q,
    K,
    V,
    DNUM,
    DN,
    LOGI,
    B,
    M,
    MPREV,
    STATES,
    RNEXT,
    DQ,
    DK,
    L,
    N,
    DH,
    scale,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of key columns: dq and dk (intra-chunk + inter-chunk parts)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q, K, V, DNUM, DQ, DK = _per_head((Q, K, V, DNUM, DQ, DK), bh * L * DH)
    B, LOGI, M, DN = _per_head((B, LOGI, M, DN), bh * N * T)
    kt = tl.program_id(2)
    r, t, t_ok = _chunk_positions(c, L, T)
    rk = kt * BK + tl.arange(0, BK)
    k_ok = rk < DH
    dn = tl.load(DN + t)
    p, alpha, gamma = _bwd_gates(B, LOGI, M, MPREV, bh, c, N, r, t, T)
    st, rn = _chunk_states((STATES, RNEXT), bh, N, c, DH)
    ds = tl.zeros([T, T], dtype=tl.float32)
    dq_inter = tl.zeros([T, BK], dtype=tl.float32)
    dk_inter = tl.zeros([T, BK], dtype=tl.float32)
    for v0 in range(0, DH, BV):
        rv = v0 + tl.arange(0, BV)
        v_ok = rv < DH
        io, io_ok = _row_tile(t, t_ok, rv, v_ok, DH)
        dnum = _load_f32(DNUM, io, io_ok)
        v = _load_f32(V, io, io_ok)
        ds += tl.dot(dnum, tl.trans(v), input_precision=PRECISION)
        kv_off = rk[:, None] * DH + rv[None, :]
        kv_ok = k_ok[:, None] & v_ok[None, :]
        c_tile = tl.load(st + kv_off, mask=kv_ok, other=0.0)
        dq_inter += tl.dot(dnum, tl.trans(c_tile), input_precision=PRECISION)
        r_tile = tl.load(rn + kv_off, mask=kv_ok, other=0.0)
        dk_inter += tl.dot(v, tl.trans(r_tile), input_precision=PRECISION)
    n_prev = _state_vec(st, rk, k_ok, DH)
    r_n = _state_vec(rn, rk, k_ok, DH)
    dq_inter += dn[:, None] * n_prev[None, :]
    dk_inter += r_n[None, :]
    ds_p = (ds + dn[:, None]) * p
    io, io_ok = _row_tile(t, t_ok, rk, k_ok, DH)
    q = _load_f32(Q, io, io_ok)
    k = _load_f32(K, io, io_ok)
    dq = scale * (alpha[:, None] * dq_inter + tl.dot(ds_p, k, input_precision=PRECISION))
    dk = gamma[:, None] * dk_inter + scale * tl.dot(tl.trans(ds_p), q, input_precision=PRECISION)
    tl.store(DQ + io, dq, mask=io_ok)
    tl.store(DK + io, dk, mask=io_ok)


@triton.jit
def _bwd_dv_kernel(
    Q,
    K,
    DNUM,
    LOGI,
    B,
    M,
    MPREV,
    RNEXT,
    DV,
    L,
    N,
    DH,
    scale,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of value columns: dv (intra-chunk + inter-chunk parts)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q, K, DNUM, DV = _per_head((Q, K, DNUM, DV), bh * L * DH)
    B, LOGI, M = _per_head((B, LOGI, M), bh * N * T)
    vt = tl.program_id(2)
    r, t, t_ok = _chunk_positions(c, L, T)
    rv = vt * BV + tl.arange(0, BV)
    v_ok = rv < DH
    p, _alpha, gamma = _bwd_gates(B, LOGI, M, MPREV, bh, c, N, r, t, T)
    (rn,) = _chunk_states((RNEXT,), bh, N, c, DH)
    qk = tl.zeros([T, T], dtype=tl.float32)
    kr = tl.zeros([T, BV], dtype=tl.float32)
    for k0 in range(0, DH, BK):
        qk, _q, k, r_tile, _rk, _k_ok = _qk_and_state(qk, Q, K, rn, t, t_ok, k0, rv, v_ok, DH, BK, PRECISION)
        kr += tl.dot(k, r_tile, input_precision=PRECISION)
    s = qk * scale * p
    io, io_ok = _row_tile(t, t_ok, rv, v_ok, DH)
    dnum = _load_f32(DNUM, io, io_ok)
    dv = gamma[:, None] * kr + tl.dot(tl.trans(s), dnum, input_precision=PRECISION)
    tl.store(DV + io, dv, mask=io_ok)


# ----------------------------------------------------------------------------- host glue


def tile_size(head_dim: int) -> int:
    """Head-dim tile (BK = BV): a power of two between 16 (tl.dot minimum) and MAX_TILE."""
    return max(16, min(MAX_TILE, triton.next_power_of_2(head_dim)))


def _check_chunk(chunk: int) -> None:
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"mlstm (triton): chunk must be a power of two >= 16, got {chunk}")


def mlstm_triton_forward(x: MLSTMInputs, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK) -> ForwardResult:
    """Chunkwise forward on Triton kernels (contiguous inputs); see ``torch_chunkwise``.

    ``c_prev`` of the result holds the flat states entering each chunk, ``(b,h,N,dh*dh+dh)``
    (``n_prev`` is a view of its last ``dh`` entries).
    """
    q, k, v, igate, fgate = x
    bsz, heads, L, dh = check_mlstm_shapes(q, k, v, igate, fgate)
    _check_chunk(chunk)
    n = num_chunks(L, chunk)
    bh, e, tile = bsz * heads, dh * dh + dh, tile_size(dh)
    n_t = triton.cdiv(dh, tile)
    prec = PRECISION
    f32 = dict(dtype=torch.float32, device=q.device)
    gates = chunk_gates(igate, fgate, chunk, torch.float32)
    w = torch.exp(gates.a - gates.a_max[..., None]).contiguous()
    local = torch.empty(bsz, heads, n, e, **f32)
    _chunk_outer_kernel[(n, bh, n_t * n_t)](
        k,
        v,
        w,
        w,
        local,
        L,
        n,
        dh,
        dh,
        T=chunk,
        BK=tile,
        BV=tile,
        HAS_Z=False,
        PRECISION=prec,
        num_warps=NUM_WARPS,
    )
    states = torch.empty_like(local)
    m_prev = torch.empty(bsz, heads, n + 1, **f32)
    g, a_max = gates.g.contiguous(), gates.a_max.contiguous()
    _state_recurrence_kernel[(triton.cdiv(e, RECURRENCE_BLOCK), bh)](
        local,
        states,
        g,
        a_max,
        g,
        m_prev,
        n,
        e,
        BLOCK=RECURRENCE_BLOCK,
        TRACK_MAX=True,
        num_warps=NUM_WARPS,
    )
    h = torch.empty(bsz, heads, L, dh, **f32)
    n_out = torch.empty(bsz, heads, n, chunk, **f32)
    m_out = torch.empty_like(n_out)
    _fwd_output_kernel[(n, bh, n_t)](
        q,
        k,
        v,
        gates.log_i.contiguous(),
        gates.b.contiguous(),
        m_prev,
        states,
        h,
        n_out,
        m_out,
        L,
        n,
        dh,
        1.0 / math.sqrt(dh),
        float(eps),
        T=chunk,
        BK=tile,
        BV=tile,
        PRECISION=prec,
        num_warps=NUM_WARPS,
    )
    return ForwardResult(h=h, n=n_out, m=m_out, c_prev=states, n_prev=states[..., dh * dh :], m_prev=m_prev)


def mlstm_triton_backward(
    dh_out: torch.Tensor, x: MLSTMInputs, fwd: ForwardResult, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, digate, dfgate)`` (float32) from a :func:`mlstm_triton_forward` result."""
    q, k, v, igate, fgate = x
    bsz, heads, L, dh = q.shape
    n = num_chunks(L, chunk)
    lp = n * chunk
    bh, e, tile = bsz * heads, dh * dh + dh, tile_size(dh)
    n_t = triton.cdiv(dh, tile)
    prec = PRECISION
    scale = 1.0 / math.sqrt(dh)
    gates = chunk_gates(igate, fgate, chunk, torch.float32)
    h = pad_length(fwd.h, lp, -2).unflatten(-2, (n, chunk))
    dh_pad = pad_length(dh_out.float(), lp, -2).unflatten(-2, (n, chunk))
    dnum, dn = output_grads(dh_pad, h, fwd.n, fwd.m, eps)
    dnum = dnum.flatten(-3, -2)[..., :L, :].contiguous()
    dn = dn.contiguous()
    m_before, m_after = fwd.m_prev[..., :-1], fwd.m_prev[..., 1:]
    w_q = (scale * torch.exp(gates.b - fwd.m + m_before[..., None])).contiguous()
    decay = torch.exp(gates.g + m_before - m_after).contiguous()

    r_local = torch.empty(bsz, heads, n, e, dtype=torch.float32, device=q.device)
    _chunk_outer_kernel[(n, bh, n_t * n_t)](
        q,
        dnum,
        dn,
        w_q,
        r_local,
        L,
        n,
        dh,
        dh,
        T=chunk,
        BK=tile,
        BV=tile,
        HAS_Z=True,
        PRECISION=prec,
        num_warps=NUM_WARPS,
    )
    r_next = torch.empty_like(r_local)
    _state_recurrence_kernel[(triton.cdiv(e, RECURRENCE_BLOCK), bh)](
        r_local,
        r_next,
        decay,
        decay,
        decay,
        fwd.m_prev,
        n,
        e,
        BLOCK=RECURRENCE_BLOCK,
        TRACK_MAX=False,
        num_warps=NUM_WARPS,
    )
    log_i, b = gates.log_i.contiguous(), gates.b.contiguous()
    dq = torch.empty(bsz, heads, L, dh, dtype=torch.float32, device=q.device)
    dk, dv = torch.empty_like(dq), torch.empty_like(dq)
    _bwd_dqk_kernel[(n, bh, n_t)](
        q,
        k,
        v,
        dnum,
        dn,
        log_i,
        b,
        fwd.m,
        fwd.m_prev,
        fwd.c_prev,
        r_next,
        dq,
        dk,
        L,
        n,
        dh,
        scale,
        T=chunk,
        BK=tile,
        BV=DQK_V_TILE,
        PRECISION=prec,
        num_warps=DQK_NUM_WARPS,
    )
    _bwd_dv_kernel[(n, bh, n_t)](
        q,
        k,
        dnum,
        log_i,
        b,
        fwd.m,
        fwd.m_prev,
        r_next,
        dv,
        L,
        n,
        dh,
        scale,
        T=chunk,
        BK=tile,
        BV=tile,
        PRECISION=prec,
        num_warps=NUM_WARPS,
    )
    d_igate, d_fgate = gate_grads(q.float(), dq, k.float(), dk, fgate)
    return dq, dk, dv, d_igate, d_fgate


# ----------------------------------------------------------------------------- ahead-of-time configs


_INT_ARGS = {"L", "N", "E", "DH", "DIM_K", "DIM_V"}
_FLOAT_ARGS = {"scale", "eps"}
_INPUT_ARGS = {"Q", "K", "V", "X", "Y"}  # X, Y: k, v in the forward's state kernel


def _signature(fn, constexprs: dict[str, object], io: str = "fp32") -> dict[str, str]:
    """Triton types of ``fn``'s arguments in order: sizes i32, scalars fp32, q/k/v ``*io``,
    every other tensor ``*fp32``."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in _INT_ARGS:
            sig[name] = "i32"
        elif name in _FLOAT_ARGS:
            sig[name] = "fp32"
        else:
            sig[name] = f"*{io}" if name in _INPUT_ARGS else "*fp32"
    return sig


def _aot_configs() -> list[tuple]:
    """(fn, signature, constexprs, num_warps) of every kernel at the shipped sizes (head dim >= 32),
    for float32 inputs and, for the kernels that read q/k/v, bfloat16 inputs (AMP)."""
    chunk, tile = DEFAULT_CHUNK, MAX_TILE
    reads_qkv = [
        (_chunk_outer_kernel, {"T": chunk, "BK": tile, "BV": tile, "HAS_Z": False, "PRECISION": PRECISION}, NUM_WARPS),
        (_fwd_output_kernel, {"T": chunk, "BK": tile, "BV": tile, "PRECISION": PRECISION}, NUM_WARPS),
        (_bwd_dqk_kernel, {"T": chunk, "BK": tile, "BV": DQK_V_TILE, "PRECISION": PRECISION}, DQK_NUM_WARPS),
        (_bwd_dv_kernel, {"T": chunk, "BK": tile, "BV": tile, "PRECISION": PRECISION}, NUM_WARPS),
    ]
    fp32_only = [
        (_chunk_outer_kernel, {"T": chunk, "BK": tile, "BV": tile, "HAS_Z": True, "PRECISION": PRECISION}, NUM_WARPS),
        (_state_recurrence_kernel, {"BLOCK": RECURRENCE_BLOCK, "TRACK_MAX": True}, NUM_WARPS),
        (_state_recurrence_kernel, {"BLOCK": RECURRENCE_BLOCK, "TRACK_MAX": False}, NUM_WARPS),
    ]
    configs = [(fn, _signature(fn, ce), ce, warps) for fn, ce, warps in reads_qkv + fp32_only]
    configs += [(fn, _signature(fn, ce, "bf16"), ce, warps) for fn, ce, warps in reads_qkv]
    return configs


AOT_CONFIGS = _aot_configs()
