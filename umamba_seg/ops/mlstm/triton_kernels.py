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

The kernels share their pieces as jitted helpers: ``_chunk_program`` (the ``dims`` tuple
every chunk kernel gets, program ids, positions), ``_per_head`` / ``_chunk_states`` (base
pointers), ``_gram_step`` (a column tile of ``x y^T``), ``_log_decay`` and ``_bwd_gates``.
On the host, ``_Chunks`` holds one call's geometry and launches every kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
def _gram_step(acc, X, Y, t, t_ok, c0, DH, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
    """Columns ``c0 .. c0 + BLOCK`` of two per-head (L, DH) matrices at the chunk's positions:
    ``acc`` plus ``x y^T`` over them, the [T, BLOCK] tiles x and y, the columns and their mask."""
    cols = c0 + tl.arange(0, BLOCK)
    ok = cols < DH
    io, io_ok = _row_tile(t, t_ok, cols, ok, DH)
    x = _load_f32(X, io, io_ok)
    y = _load_f32(Y, io, io_ok)
    acc += tl.dot(x, tl.trans(y), input_precision=PRECISION)
    return acc, x, y, cols, ok


@triton.jit
def _qk_and_state(qk, Q, K, st, t, t_ok, k0, rv, v_ok, DH, BK: tl.constexpr, PRECISION: tl.constexpr):
    """One key-column tile ``k0`` of a chunk (forward output and dv): ``qk`` plus ``q k^T``
    over the tile, q and k, the state's [BK, BV] matrix tile at rows k0.., columns ``rv``,
    and the tile's columns ``rk``, valid where ``k_ok``."""
    qk, q, k, rk, k_ok = _gram_step(qk, Q, K, t, t_ok, k0, DH, BK, PRECISION)
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
def _chunk_program(dims, T: tl.constexpr):
    """Every kernel's start: ``dims`` = (L, chunks N, head dim DH, q k scale) unpacked, this
    program's chunk ``c``, (batch, head) ``bh`` (int64) and tile index (grid axes 0, 1, 2),
    ``r`` = 0..T-1, the chunk's positions ``t = c T + r`` and ``t < L``."""
    L, N, DH, scale = dims
    c = tl.program_id(0)
    r = tl.arange(0, T)
    t = c * T + r
    return L, N, DH, scale, c, tl.program_id(1).to(tl.int64), tl.program_id(2), r, t, t < L


@triton.jit
def _chunk_outer_kernel(
    X,
    Y,
    Z,
    W,
    OUT,
    dims,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_Z: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """OUT[bh, c, :] = flat(sum_t W[t] X[t, :] Y[t, :]^T) ++ sum_t W[t] X[t, :] Z[t] (Z = 1 if absent).

    ``dims`` = (L, N chunks, head dim, scale): X and Y are (L, head dim) per (batch, head)."""
    L, N, DH, _scale, c, bh, tile, _r, t, t_ok = _chunk_program(dims, T)
    n_vt = tl.cdiv(DH, BV)
    kt = tile // n_vt
    vt = tile % n_vt
    rk = kt * BK + tl.arange(0, BK)
    rv = vt * BV + tl.arange(0, BV)
    k_ok = rk < DH
    v_ok = rv < DH
    w = tl.load((W + bh * N * T) + t)
    X, Y = _per_head((X, Y), bh * L * DH)
    x_offs, x_ok = _row_tile(t, t_ok, rk, k_ok, DH)
    xw = _load_f32(X, x_offs, x_ok) * w[:, None]
    y_offs, y_ok = _row_tile(t, t_ok, rv, v_ok, DH)
    y = _load_f32(Y, y_offs, y_ok)
    mat = tl.dot(tl.trans(xw), y, input_precision=PRECISION)
    (base,) = _chunk_states((OUT,), bh, N, c, DH)
    tl.store(base + rk[:, None] * DH + rv[None, :], mat, mask=k_ok[:, None] & v_ok[None, :])
    if vt == 0:
        if HAS_Z:
            z = tl.load((Z + bh * N * T) + t)
            vec = tl.sum(xw * z[:, None], axis=0)
        else:
            vec = tl.sum(xw, axis=0)
        tl.store(base + DH * DH + rk, vec, mask=k_ok)


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
    dims,
    eps,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of value columns: h = num / (max(|n|, exp(-m)) + eps)."""
    L, N, DH, scale, c, bh, vt, r, t, t_ok = _chunk_program(dims, T)
    Q, K, V, H = _per_head((Q, K, V, H), bh * L * DH)
    B, LOGI, NOUT, MOUT = _per_head((B, LOGI, NOUT, MOUT), bh * N * T)
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
    dims,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of key columns: dq and dk (intra-chunk + inter-chunk parts)."""
    L, N, DH, scale, c, bh, kt, r, t, t_ok = _chunk_program(dims, T)
    Q, K, V, DNUM, DQ, DK = _per_head((Q, K, V, DNUM, DQ, DK), bh * L * DH)
    B, LOGI, M, DN = _per_head((B, LOGI, M, DN), bh * N * T)
    rk = kt * BK + tl.arange(0, BK)
    k_ok = rk < DH
    dn = tl.load(DN + t)
    p, alpha, gamma = _bwd_gates(B, LOGI, M, MPREV, bh, c, N, r, t, T)
    st, rn = _chunk_states((STATES, RNEXT), bh, N, c, DH)
    ds = tl.zeros([T, T], dtype=tl.float32)
    dq_inter = tl.zeros([T, BK], dtype=tl.float32)
    dk_inter = tl.zeros([T, BK], dtype=tl.float32)
    for v0 in range(0, DH, BV):
        ds, dnum, v, rv, v_ok = _gram_step(ds, DNUM, V, t, t_ok, v0, DH, BV, PRECISION)
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
    dims,
    T: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One chunk, one tile of value columns: dv (intra-chunk + inter-chunk parts)."""
    L, N, DH, scale, c, bh, vt, r, t, t_ok = _chunk_program(dims, T)
    Q, K, DNUM, DV = _per_head((Q, K, DNUM, DV), bh * L * DH)
    B, LOGI, M = _per_head((B, LOGI, M), bh * N * T)
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


@dataclass(frozen=True)
class _Chunks:
    """One call's geometry as the kernels see it: ``bsz * heads`` sequences of ``L``
    positions in chunks of ``chunk``, head dim ``dh``; launches every kernel."""

    bsz: int
    heads: int
    L: int
    dh: int
    chunk: int
    device: torch.device

    @property
    def n(self) -> int:
        return num_chunks(self.L, self.chunk)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.dh)

    @property
    def tile(self) -> int:
        return tile_size(self.dh)

    @property
    def n_tiles(self) -> int:
        """Head-dim tiles (of keys or values) per chunk program."""
        return triton.cdiv(self.dh, self.tile)

    @property
    def state_size(self) -> int:
        """Entries of a flat state: the dh x dh matrix, then the dh vector."""
        return self.dh * self.dh + self.dh

    def f32(self, *shape: int) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def launch(
        self, kernel, tiles: int, tensors: tuple, *scalars, bv: int | None = None, warps: int = NUM_WARPS, **consts
    ):
        """One program per (chunk, batch * head, tile): ``tensors``, then the ``dims`` tuple
        (L, chunks, head dim, q k scale), ``scalars`` and the compile-time constants."""
        dims = (self.L, self.n, self.dh, self.scale)
        tile = self.tile
        kernel[(self.n, self.bsz * self.heads, tiles)](
            *tensors,
            dims,
            *scalars,
            T=self.chunk,
            BK=tile,
            BV=bv or tile,
            PRECISION=PRECISION,
            num_warps=warps,
            **consts,
        )

    def chunk_outer(self, x, y, z, w) -> torch.Tensor:
        """Per chunk, the flat ``sum_t w_t x_t [y_t, z_t]^T`` (z = 1 when None): ``(b, h, n, state_size)``."""
        out = self.f32(self.bsz, self.heads, self.n, self.state_size)
        tensors = (x, y, z if z is not None else w, w, out)
        self.launch(_chunk_outer_kernel, self.n_tiles * self.n_tiles, tensors, HAS_Z=z is not None)
        return out

    def recurrence(self, local, g, a_max, decay, m_prev, track_max: bool) -> torch.Tensor:
        """The flat states entering each chunk, carried by :func:`_state_recurrence_kernel`."""
        states = torch.empty_like(local)
        e = self.state_size
        _state_recurrence_kernel[(triton.cdiv(e, RECURRENCE_BLOCK), self.bsz * self.heads)](
            local,
            states,
            g,
            a_max,
            decay,
            m_prev,
            self.n,
            e,
            BLOCK=RECURRENCE_BLOCK,
            TRACK_MAX=track_max,
            num_warps=NUM_WARPS,
        )
        return states


def mlstm_triton_forward(x: MLSTMInputs, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK) -> ForwardResult:
    """Chunkwise forward on Triton kernels (contiguous inputs); see ``torch_chunkwise``.

    ``c_prev`` of the result holds the flat states entering each chunk, ``(b,h,N,dh*dh+dh)``
    (``n_prev`` is a view of its last ``dh`` entries).
    """
    q, k, v, igate, fgate = x
    bsz, heads, L, dh = check_mlstm_shapes(q, k, v, igate, fgate)
    _check_chunk(chunk)
    call = _Chunks(bsz, heads, L, dh, chunk, q.device)
    gates = chunk_gates(igate, fgate, chunk, torch.float32)
    w = torch.exp(gates.a - gates.a_max[..., None]).contiguous()
    local = call.chunk_outer(k, v, None, w)
    m_prev = call.f32(bsz, heads, call.n + 1)
    g, a_max = gates.g.contiguous(), gates.a_max.contiguous()
    states = call.recurrence(local, g, a_max, g, m_prev, track_max=True)
    h = call.f32(bsz, heads, L, dh)
    n_out = call.f32(bsz, heads, call.n, chunk)
    m_out = torch.empty_like(n_out)
    tensors = (q, k, v, gates.log_i.contiguous(), gates.b.contiguous(), m_prev, states, h, n_out, m_out)
    call.launch(_fwd_output_kernel, call.n_tiles, tensors, float(eps))
    return ForwardResult(h=h, n=n_out, m=m_out, c_prev=states, n_prev=states[..., dh * dh :], m_prev=m_prev)


def mlstm_triton_backward(
    dh_out: torch.Tensor, x: MLSTMInputs, fwd: ForwardResult, eps: float = DEFAULT_EPS, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, ...]:
    """Gradients ``(dq, dk, dv, digate, dfgate)`` (float32) from a :func:`mlstm_triton_forward` result."""
    q, k, v, igate, fgate = x
    bsz, heads, L, dh = q.shape
    call = _Chunks(bsz, heads, L, dh, chunk, q.device)
    n = call.n
    lp = n * chunk
    gates = chunk_gates(igate, fgate, chunk, torch.float32)
    h = pad_length(fwd.h, lp, -2).unflatten(-2, (n, chunk))
    dh_pad = pad_length(dh_out.float(), lp, -2).unflatten(-2, (n, chunk))
    dnum, dn = output_grads(dh_pad, h, fwd.n, fwd.m, eps)
    dnum = dnum.flatten(-3, -2)[..., :L, :].contiguous()
    dn = dn.contiguous()
    m_before, m_after = fwd.m_prev[..., :-1], fwd.m_prev[..., 1:]
    w_q = (call.scale * torch.exp(gates.b - fwd.m + m_before[..., None])).contiguous()
    decay = torch.exp(gates.g + m_before - m_after).contiguous()

    r_local = call.chunk_outer(q, dnum, dn, w_q)
    r_next = call.recurrence(r_local, decay, decay, decay, fwd.m_prev, track_max=False)
    log_i, b = gates.log_i.contiguous(), gates.b.contiguous()
    dq = call.f32(bsz, heads, L, dh)
    dk, dv = torch.empty_like(dq), torch.empty_like(dq)
    tensors = (q, k, v, dnum, dn, log_i, b, fwd.m, fwd.m_prev, fwd.c_prev, r_next, dq, dk)
    call.launch(_bwd_dqk_kernel, call.n_tiles, tensors, bv=DQK_V_TILE, warps=DQK_NUM_WARPS)
    call.launch(_bwd_dv_kernel, call.n_tiles, (q, k, dnum, log_i, b, fwd.m, fwd.m_prev, r_next, dv))
    d_igate, d_fgate = gate_grads(q.float(), dq, k.float(), dk, fgate)
    return dq, dk, dv, d_igate, d_fgate


# ----------------------------------------------------------------------------- ahead-of-time configs


_INT_ARGS = {"N", "E"}
_FLOAT_ARGS = {"eps"}
_DIMS = ("i32", "i32", "i32", "fp32")  # the kernels' dims tuple: L, chunks, head dim, scale
_INPUT_ARGS = {"Q", "K", "V", "X", "Y"}  # X, Y: k, v in the forward's state kernel


def _signature(fn, constexprs: dict[str, object], io: str = "fp32") -> dict[str, str]:
    """Triton types of ``fn``'s arguments in order: sizes i32, scalars fp32, q/k/v ``*io``,
    every other tensor ``*fp32``."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "dims":
            sig[name] = _DIMS
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
