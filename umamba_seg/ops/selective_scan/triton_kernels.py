"""Triton selective-scan kernels (forward and backward), parallel over chunks of L.

Why: medical sequences are long and thin (L up to 262,144, d 64-192). A kernel that
launches one block per (batch, channel) leaves most of a 132-SM GPU idle, so every pass
here is also parallel over chunks of ``CHECKPOINT_LEN`` positions:

forward
  1. ``_chunk_carry_kernel`` (BACKWARD=False): per (batch, channel block, chunk) the
     chunk's end state from a zero start and the chunk's summed step ``sum(dt)`` (its
     decay is ``exp(A * sum(dt))``). Closed form, no scan: ``h_end = sum_t x_t exp(A R_t)``
     with ``R_t`` the sum of dt after t.
  2. ``_carry_scan_kernel``: per (batch, channel) an associative scan over chunks of the
     carries; writes ``checkpoints`` (state before each chunk).
  3. ``_fwd_chunk_out_kernel``: per chunk, rescan from its checkpoint and write ``out``
     (``+ D u``, ``* silu(z)``); the last chunk writes the last state.
  A single-chunk sequence (L <= 256) runs pass 3 only.

backward (in reverse, recomputing states from the checkpoints)
  1. ``_chunk_carry_kernel`` (BACKWARD=True): per chunk the chunk's contribution to the
     state gradient flowing left, ``q = sum_t dy_t C_t exp(A S_t)``.
  2. ``_carry_scan_kernel`` (reversed): the state gradient entering each chunk from the
     right, starting from ``dlast_state``.
  3. ``_bwd_chunk_grad_kernel``: per chunk, the sub-block start states are recomputed
     from the checkpoint (held in registers for up to 4 sub-blocks), then sub-blocks right
     to left: rescan the states, reverse-scan the state gradient, emit every gradient.
     dB/dC are summed over the channel block in registers; the blocks of a group write into
     separate fp32 copies (plain stores, summed by torch) when they fit a memory budget,
     else into fewer copies with atomic adds (contention = blocks per copy).
     dA/dD/d(delta_bias) go to per-chunk partials reduced by torch (no atomics).

Inside a chunk, tiles are ``[channels, states, positions]`` in fp32 (fp64 for fp64
inputs) registers; positions are processed in sub-blocks of ``BLOCK_T`` with
``tl.associative_scan`` of ``(decay, input)`` pairs. The grid is flat: one program per
(batch, channel block, chunk), e.g. 48 x 1024 programs per batch item for SegMamba's
first stage (d = 96, L = 262,144), where one block per (batch, channel) would be 96.

Forward and backward share their pieces: ``_chunk_setup`` gives every chunk kernel its
index algebra and per-channel constants as one ``_Chunk`` named tuple; ``_sub_block_inputs``
loads a sub-block's steps and inputs; ``_sub_block_states`` is the sub-block scan of both
``_fwd_chunk_out_kernel`` and the backward's recompute; ``_advance_sub_block`` steps a
state over a sub-block in closed form (the forward's chunk states, the backward's start
states). The backward's start states of up to 4 sub-blocks are a tuple unrolled with
``tl.static_range``. On the host, ``_Call`` holds one call's sizes and launches every
chunk kernel; ``_Call.carries`` is pass 1 + 2 of both directions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from umamba_seg.errors import UserInputError
from umamba_seg.ops.triton_aot import AotConfig

from .common import CHECKPOINT_LEN

CHUNK = CHECKPOINT_LEN


# --------------------------------------------------------------------------- helpers


@triton.jit
def _lin_combine(a1, b1, a2, b2):
    # (x -> a1 x + b1) followed by (x -> a2 x + b2)
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)), with an accurate log1p for tiny arguments
    # (the division's 0/0 lane is discarded by the where).
    e = tl.exp(-tl.abs(x))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _end_state(h, dt, u, Bt, A2):
    """State after a sub-block from state ``h`` (closed form; stable for A <= 0)."""
    # Decay from t to the sub-block end uses the suffix sum of dt after t, computed as a
    # reverse cumsum (not total - prefix): its rounding error scales with the suffix, so
    # the dominant recent terms are exact even when dt is large.
    R = tl.cumsum(dt, axis=1, reverse=True) - dt  # [BD, BT], sum over r > t
    tot = tl.sum(dt, axis=1)  # [BD]
    w = tl.exp(A2[:, :, None] * R[:, None, :])  # [BD, NP, BT]
    x = (dt * u)[:, None, :] * Bt[None, :, :]
    return tl.exp(A2 * tot[:, None]) * h + tl.sum(w * x, axis=2), tot


class _Chunk(NamedTuple):
    """Where one chunk program works, and the per-channel constants its sub-blocks use.

    Built once per program by :func:`_chunk_setup` and handed to every sub-block helper,
    so the index algebra lives in one place. ``dim``, ``L``, ``nchunk`` and ``dstate`` are
    the kernel's shape scalars.
    """

    group_block: tl.tensor  # index of the channel block within its B/C group
    j: tl.tensor  # chunk index
    start: tl.tensor  # position of the chunk's first element
    bi: tl.tensor  # batch index
    offs_d: tl.tensor  # [BD] channels
    offs_n: tl.tensor  # [NP] states (padded)
    mask_n: tl.tensor  # [NP] offs_n < dstate
    row: tl.tensor  # [BD] start of each (batch, channel) row of u, delta, z, out and their gradients
    bc_row: tl.tensor  # [NP] start of each row of B/C and dB/dC
    state_row: tl.tensor  # [BD] rows of the (batch, channel, nchunk, ...) arrays
    A2: tl.tensor  # [BD, NP], in the accumulation dtype (fp32, fp64 for fp64 inputs)
    bias: tl.tensor  # [BD] delta_bias (zeros without)
    dim: tl.tensor
    L: tl.tensor
    nchunk: tl.tensor
    dstate: tl.tensor


@triton.jit
def _chunk_setup(
    ins, shape, BD: tl.constexpr, NP: tl.constexpr, CHUNK_LEN: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr
):
    """The program's :class:`_Chunk` from a flat 1-D grid, channel blocks fastest.

    ``ins`` = (u, delta, A, B, C, D, z, delta_bias) pointers and ``shape`` = (dim, L,
    nchunk, channels per group, groups, dstate, channel blocks per batch item): the first
    two arguments of every chunk kernel, built once by the host (:class:`_Call`).
    Consecutive programs share (batch, chunk), so its B/C rows are read from L2 after the
    first; a flat grid also avoids the 65,535 limit of grid axes 1 and 2.
    """
    _u, _delta, A_ptr, _B, _C, _D, _z, bias_ptr = ins
    dim, L, nchunk, dpg, groups, dstate, n_dblocks = shape
    pid = tl.program_id(0)
    db = pid % n_dblocks
    rest = pid // n_dblocks
    pid_bd = (rest // nchunk) * n_dblocks + db
    j = rest % nchunk
    bi = pid_bd // n_dblocks
    c0 = (pid_bd % n_dblocks) * BD
    grp = c0 // dpg
    offs_d = c0 + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    row = (bi * dim + offs_d).to(tl.int64) * L
    bc_row = ((bi * groups + grp) * dstate + offs_n).to(tl.int64) * L
    state_row = (bi * dim + offs_d).to(tl.int64) * nchunk
    mask_n = offs_n < dstate
    A2 = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_n[None, :], other=0.0).to(ACC)
    bias = tl.zeros([BD], dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(ACC)
    group_block = (pid_bd % n_dblocks) % (dpg // BD)
    return _Chunk(
        group_block,
        j,
        j * CHUNK_LEN,
        bi,
        offs_d,
        offs_n,
        mask_n,
        row,
        bc_row,
        state_row,
        A2,
        bias,
        dim,
        L,
        nchunk,
        dstate,
    )


@triton.jit
def _chunk_state_offsets(ck):
    """[BD, NP] offsets of this chunk's entries in (batch, channel, nchunk, dstate) arrays."""
    return (ck.state_row + ck.j)[:, None] * ck.dstate + ck.offs_n[None, :]


@triton.jit
def _load_dt(delta_ptr, offs, mask, ck, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Effective step dt for a [BD, BT] tile, zero where masked (identity step), and the raw ``delta + bias``."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(ck.A2.dtype)
    if HAS_BIAS:
        raw = raw + ck.bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _load_bc(ptr, ck, t, mask_t):
    """[NP, BT] tile of B or C (grouped rows) at positions ``t``."""
    mask = ck.mask_n[:, None] & mask_t[None, :]
    return tl.load(ptr + ck.bc_row[:, None] + t[None, :], mask=mask, other=0.0).to(ck.A2.dtype)


@triton.jit
def _sub_block_inputs(
    ck,
    s,
    x_ptr,
    delta_ptr,
    BT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
):
    """Positions ``t`` of the sub-block at offset ``s`` of the chunk, its [BD, BT] offsets
    ``offs`` and mask ``m2``, and its loaded tiles: step ``dt`` (and the raw ``delta +
    bias``) and a per-channel input ``x`` (u or dout)."""
    t = ck.start + s + tl.arange(0, BT)
    mask_t = t < ck.L
    offs = ck.row[:, None] + t[None, :]
    m2 = mask_t[None, :] & (ck.offs_d[:, None] < ck.dim)
    dt, raw = _load_dt(delta_ptr, offs, m2, ck, HAS_BIAS, SOFTPLUS)
    x = tl.load(x_ptr + offs, mask=m2, other=0.0).to(ck.A2.dtype)
    return t, mask_t, offs, m2, dt, raw, x


@triton.jit
def _advance_sub_block(h, ck, s, ins, BT: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """State after the sub-block at offset ``s`` of the chunk given the state ``h`` before
    it, and the sub-block's summed step."""
    u_ptr, delta_ptr, _A, B_ptr, _C, _D, _z, _bias = ins
    t, mask_t, _offs, _m2, dt, _raw, u = _sub_block_inputs(ck, s, u_ptr, delta_ptr, BT, HAS_BIAS, SOFTPLUS)
    return _end_state(h, dt, u, _load_bc(B_ptr, ck, t, mask_t), ck.A2)


@triton.jit
def _sub_block_states(h, dt, u, Bt, Ct, A2, Dv, HAS_D: tl.constexpr):
    """Scan of one sub-block from state ``h``: per-step decays ``a``, the states ``hs``
    [BD, NP, BT], ``ah`` = a_t * h_{t-1} (for the backward) and the output before gating,
    ``y = C h (+ D u)``."""
    a = tl.exp(dt[:, None, :] * A2[:, :, None])
    x = (dt * u)[:, None, :] * Bt[None, :, :]
    pa, pb = tl.associative_scan((a, x), 2, _lin_combine)
    hs = pa * h[:, :, None] + pb
    ah = hs - x
    y = tl.sum(hs * Ct[None, :, :], axis=1)
    if HAS_D:
        y += Dv[:, None] * u
    return a, hs, ah, y


@triton.jit
def _last_state(hs, BT: tl.constexpr):
    """The state after the last position of a [BD, NP, BT] block of states."""
    return tl.sum(tl.where((tl.arange(0, BT) == BT - 1)[None, None, :], hs, 0.0), axis=2)


# --------------------------------------------------------------------------- carries across chunks and forward


@triton.jit
def _chunk_carry_kernel(
    ins,
    shape,
    dout_ptr,
    carry_ptr,
    dtsum_ptr,
    BD: tl.constexpr,
    NP: tl.constexpr,
    BT: tl.constexpr,
    CHUNK_LEN: tl.constexpr,
    BACKWARD: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    ACC: tl.constexpr,
):
    """Per chunk, its own contribution to the carry across chunks and its summed step
    ``sum(dt)`` (the carry's decay over the chunk is ``exp(A * sum(dt))``).

    Forward (x = u, bc = B; ``dout_ptr`` unused): the chunk's end state from a zero start, ``sum_t x_t B_t dt_t
    exp(A R_t)`` with ``R_t`` the sum of dt after t (closed form per sub-block).
    Backward (x = dout, gated by silu(z); bc = C): the state gradient the chunk sends left,
    ``q = sum_t dy_t C_t exp(A S_t)`` with ``S_t`` the sum of dt up to t inclusive.
    """
    u_ptr, delta_ptr, _A, B_ptr, C_ptr, _D, z_ptr, _bias = ins
    ck = _chunk_setup(ins, shape, BD, NP, CHUNK_LEN, HAS_BIAS, ACC)
    if BACKWARD:
        x_ptr = dout_ptr
        bc_ptr = C_ptr
    else:
        x_ptr = u_ptr
        bc_ptr = B_ptr
    carry = tl.zeros([BD, NP], dtype=ACC)
    dsum = tl.zeros([BD], dtype=ACC)
    chunk_len = tl.minimum(ck.L - ck.start, CHUNK_LEN)  # skip sub-blocks past L
    for s in range(0, chunk_len, BT):
        t, mask_t, offs, m2, dt, _raw, x = _sub_block_inputs(ck, s, x_ptr, delta_ptr, BT, HAS_BIAS, SOFTPLUS)
        if BACKWARD:
            if HAS_Z:
                zz = tl.load(z_ptr + offs, mask=m2, other=0.0).to(ACC)
                x = x * zz * _sigmoid(zz)
            Ct = _load_bc(bc_ptr, ck, t, mask_t)
            S = dsum[:, None] + tl.cumsum(dt, axis=1)
            w = tl.exp(ck.A2[:, :, None] * S[:, None, :])
            carry += tl.sum(w * x[:, None, :] * Ct[None, :, :], axis=2)
            dsum += tl.sum(dt, axis=1)
        else:
            carry, tot = _end_state(carry, dt, x, _load_bc(bc_ptr, ck, t, mask_t), ck.A2)
            dsum += tot
    tl.store(carry_ptr + _chunk_state_offsets(ck), carry, mask=ck.mask_n[None, :])
    tl.store(dtsum_ptr + ck.state_row + ck.j, dsum)


@triton.jit
def _carry_scan_kernel(
    local_ptr,
    dtsum_ptr,
    A_ptr,
    init_ptr,
    carry_ptr,
    final_ptr,
    dim,
    nchunk,
    dstate,
    n_iters,
    CB: tl.constexpr,
    NP: tl.constexpr,
    HAS_INIT: tl.constexpr,
    REVERSE: tl.constexpr,
    ACC: tl.constexpr,
):
    """Scan ``H <- exp(A * dtsum_j) * H + local_j`` over chunks j, per (batch, channel).

    Forward: ``carry[j]`` = H before chunk j, ``final`` = H after the last chunk.
    Reverse (j from the end): ``carry[j]`` = H before chunk j's step, i.e. the value that
    enters chunk j from the right; ``final`` = H after chunk 0 (unused by callers).
    """
    pid = tl.program_id(0)  # = bi * dim + c
    c = pid % dim
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < dstate
    A = tl.load(A_ptr + c * dstate + offs_n, mask=mask_n, other=0.0).to(ACC)
    H = tl.zeros([NP], dtype=ACC)
    if HAS_INIT:
        H = tl.load(init_ptr + pid.to(tl.int64) * dstate + offs_n, mask=mask_n, other=0.0).to(ACC)
    base = pid.to(tl.int64) * nchunk
    r = tl.arange(0, CB)
    for it in range(0, n_iters):
        if REVERSE:
            start = nchunk - 1 - it * CB
            jj = start - r
            nxt = jj - 1
        else:
            start = it * CB
            jj = start + r
            nxt = jj + 1
        valid = (jj >= 0) & (jj < nchunk)
        offs = (base + jj)[:, None] * dstate + offs_n[None, :]
        m2 = valid[:, None] & mask_n[None, :]
        loc = tl.load(local_ptr + offs, mask=m2, other=0.0).to(ACC)
        ds = tl.load(dtsum_ptr + base + jj, mask=valid, other=0.0).to(ACC)
        decay = tl.exp(ds[:, None] * A[None, :])  # identity (1) on invalid rows
        pa, pb = tl.associative_scan((decay, loc), 0, _lin_combine)
        incl = pa * H[None, :] + pb  # H after chunk jj
        # carry before the first row of this block, then each row's result one step on
        tl.store(carry_ptr + (base + start) * dstate + offs_n, H, mask=mask_n)
        vn = (nxt >= 0) & (nxt < nchunk)
        tl.store(carry_ptr + (base + nxt)[:, None] * dstate + offs_n[None, :], incl, mask=vn[:, None] & mask_n[None, :])
        H = tl.sum(tl.where((r == CB - 1)[:, None], incl, 0.0), axis=0)
    tl.store(final_ptr + pid.to(tl.int64) * dstate + offs_n, H, mask=mask_n)


@triton.jit
def _fwd_chunk_out_kernel(
    ins,
    shape,
    ckpt_ptr,
    out_ptr,
    last_ptr,
    BD: tl.constexpr,
    NP: tl.constexpr,
    BT: tl.constexpr,
    CHUNK_LEN: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    ACC: tl.constexpr,
):
    """Rescan each chunk from its checkpoint, write ``out``; the last chunk writes the last state."""
    u_ptr, delta_ptr, _A, B_ptr, C_ptr, D_ptr, z_ptr, _bias = ins
    ck = _chunk_setup(ins, shape, BD, NP, CHUNK_LEN, HAS_BIAS, ACC)
    Dv = tl.zeros([BD], dtype=ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + ck.offs_d).to(ACC)
    h = tl.load(ckpt_ptr + _chunk_state_offsets(ck), mask=ck.mask_n[None, :], other=0.0).to(ACC)
    chunk_len = tl.minimum(ck.L - ck.start, CHUNK_LEN)  # skip sub-blocks past L
    for s in range(0, chunk_len, BT):
        t, mask_t, offs, m2, dt, _raw, u = _sub_block_inputs(ck, s, u_ptr, delta_ptr, BT, HAS_BIAS, SOFTPLUS)
        Bt = _load_bc(B_ptr, ck, t, mask_t)
        Ct = _load_bc(C_ptr, ck, t, mask_t)
        _a, hs, _ah, y = _sub_block_states(h, dt, u, Bt, Ct, ck.A2, Dv, HAS_D)
        if HAS_Z:
            zz = tl.load(z_ptr + offs, mask=m2, other=0.0).to(ACC)
            y = y * zz * _sigmoid(zz)
        tl.store(out_ptr + offs, y, mask=m2)
        h = _last_state(hs, BT)
    if ck.j == ck.nchunk - 1:
        last = (ck.bi * ck.dim + ck.offs_d).to(tl.int64)[:, None] * ck.dstate + ck.offs_n[None, :]
        tl.store(last_ptr + last, h, mask=ck.mask_n[None, :])


# --------------------------------------------------------------------------- backward


@triton.jit
def _bwd_sub_block(
    h,
    acc,
    ck,
    s,
    ins,
    dout_ptr,
    grads,
    Dv,
    BT: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    ATOMIC_BC: tl.constexpr,
):
    """All gradients of the sub-block at offset ``s`` of the chunk, given the state ``h``
    before it. ``acc`` = (state gradient entering from the right ``a_e * g_e``, dA, dD,
    d(delta_bias) accumulators) comes back with the gradient leaving to the left and the
    accumulators updated. ``grads`` = (du, ddelta, dz, dB, dC) pointers."""
    u_ptr, delta_ptr, _A, B_ptr, C_ptr, _D, z_ptr, _bias = ins
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr = grads
    gr, dA_acc, dD_acc, dbias_acc = acc
    A2 = ck.A2
    ACC = A2.dtype
    t, mask_t, offs, m2, dt, raw, u = _sub_block_inputs(ck, s, u_ptr, delta_ptr, BT, HAS_BIAS, SOFTPLUS)
    mbc = ck.mask_n[:, None] & mask_t[None, :]
    bc_offs = ck.bc_row[:, None] + t[None, :]  # shared by the B/C loads and the dB/dC stores
    Bt = tl.load(B_ptr + bc_offs, mask=mbc, other=0.0).to(ACC)
    Ct = tl.load(C_ptr + bc_offs, mask=mbc, other=0.0).to(ACC)
    dout = tl.load(dout_ptr + offs, mask=m2, other=0.0).to(ACC)
    # forward recompute of the states in this sub-block
    a, hs, ah, y = _sub_block_states(h, dt, u, Bt, Ct, A2, Dv, HAS_D)
    dy = dout
    if HAS_Z:
        zz = tl.load(z_ptr + offs, mask=m2, other=0.0).to(ACC)
        sg = _sigmoid(zz)
        dy = dout * zz * sg
        dz = dout * y * sg * (1.0 + zz * (1.0 - sg))
        tl.store(dz_ptr + offs, dz, mask=m2)
    # reverse scan of the state gradient: g_t = a_{t+1} g_{t+1} + dy_t C_t
    tt = tl.arange(0, BT)
    m_next = ((t + 1) < ck.L)[None, :] & (tt < BT - 1)[None, :] & (ck.offs_d[:, None] < ck.dim)
    dt_next, _rn = _load_dt(delta_ptr, offs + 1, m_next, ck, HAS_BIAS, SOFTPLUS)
    alpha = tl.exp(dt_next[:, None, :] * A2[:, :, None])
    alpha = tl.where((tt < BT - 1)[None, None, :], alpha, 1.0)
    beta = dy[:, None, :] * Ct[None, :, :]
    ga, gb = tl.associative_scan((alpha, beta), 2, _lin_combine, reverse=True)
    g = ga * gr[:, :, None] + gb
    # gradients
    gdt = g * dt[:, None, :]
    du = tl.sum(gdt * Bt[None, :, :], axis=1)
    if HAS_D:
        du += dy * Dv[:, None]
        dD_acc += tl.sum(dy * u, axis=1)
    ddt = tl.sum(g * (Bt[None, :, :] * u[:, None, :] + A2[:, :, None] * ah), axis=1)
    dA_acc += tl.sum(gdt * ah, axis=2)
    if SOFTPLUS:
        ddt = ddt * _sigmoid(raw)
    ddt = tl.where(m2, ddt, 0.0)
    dbias_acc += tl.sum(ddt, axis=1)
    tl.store(du_ptr + offs, du, mask=m2)
    tl.store(ddelta_ptr + offs, ddt, mask=m2)
    dBt = tl.sum(gdt * u[:, None, :], axis=0)  # [NP, BT], summed over the channel block
    dCt = tl.sum(hs * dy[:, None, :], axis=0)
    if ATOMIC_BC:
        tl.atomic_add(dB_ptr + bc_offs, dBt, mask=mbc)
        tl.atomic_add(dC_ptr + bc_offs, dCt, mask=mbc)
    else:
        tl.store(dB_ptr + bc_offs, dBt, mask=mbc)
        tl.store(dC_ptr + bc_offs, dCt, mask=mbc)
    # gradient leaving to the left: a_s * g_s at the sub-block start
    gr = tl.sum(tl.where((tt == 0)[None, None, :], a * g, 0.0), axis=2)
    return gr, dA_acc, dD_acc, dbias_acc


@triton.jit
def _bwd_chunk_grad_kernel(
    ins,
    shape,
    dout_ptr,
    ckpt_ptr,
    gcarry_ptr,
    grads,
    parts,
    n_slots,
    slot_stride,
    BD: tl.constexpr,
    NP: tl.constexpr,
    BT: tl.constexpr,
    CHUNK_LEN: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    ATOMIC_BC: tl.constexpr,
    ACC: tl.constexpr,
):
    """Sub-blocks right to left: their start states recomputed from the chunk checkpoint,
    then every gradient (:func:`_bwd_sub_block`). ``grads`` = (du, ddelta, dz, dB, dC),
    dB/dC with ``n_slots`` copies ``slot_stride`` apart; ``parts`` = per-chunk partials of
    (dA, dD, d(delta_bias))."""
    _u, _delta, _A, _B, _C, D_ptr, _z, _bias = ins
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr = grads
    dA_part_ptr, dD_part_ptr, dbias_part_ptr = parts
    ck = _chunk_setup(ins, shape, BD, NP, CHUNK_LEN, HAS_BIAS, ACC)
    Dv = tl.zeros([BD], dtype=ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + ck.offs_d).to(ACC)
    so = _chunk_state_offsets(ck)
    # dB/dC partial slot of this channel block: blocks of a group spread over n_slots copies
    slot = ck.group_block % n_slots
    dB_ptr += slot.to(tl.int64) * slot_stride
    dC_ptr += slot.to(tl.int64) * slot_stride
    grads = (du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr)
    h0 = tl.load(ckpt_ptr + so, mask=ck.mask_n[None, :], other=0.0).to(ACC)
    gr = tl.load(gcarry_ptr + so, mask=ck.mask_n[None, :], other=0.0).to(ACC)  # a_e * g_e from the right
    acc = (gr, tl.zeros([BD, NP], dtype=ACC), tl.zeros([BD], dtype=ACC), tl.zeros([BD], dtype=ACC))
    N_SUB: tl.constexpr = CHUNK_LEN // BT
    if N_SUB <= 4:
        # Up to 4 sub-blocks: their start states are computed once, front to back, and
        # held in registers; then the sub-blocks are processed back to front.
        starts = (h0,)
        for k in tl.static_range(1, N_SUB):
            h, _tot = _advance_sub_block(starts[k - 1], ck, (k - 1) * BT, ins, BT, HAS_BIAS, SOFTPLUS)
            starts = starts + (h,)
        for k in tl.static_range(N_SUB - 1, -1, -1):
            acc = _bwd_sub_block(
                starts[k], acc, ck, k * BT, ins, dout_ptr, grads, Dv, BT, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC_BC
            )
    else:
        # Many sub-blocks: recompute each start state from the chunk checkpoint.
        n_sub = tl.cdiv(tl.minimum(ck.L - ck.start, CHUNK_LEN), BT)  # sub-blocks holding positions < L
        for si in range(0, n_sub):
            sub = n_sub - 1 - si
            h = h0
            for s2 in range(0, sub):
                h, _tot = _advance_sub_block(h, ck, s2 * BT, ins, BT, HAS_BIAS, SOFTPLUS)
            acc = _bwd_sub_block(
                h, acc, ck, sub * BT, ins, dout_ptr, grads, Dv, BT, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC_BC
            )
    _gr, dA_acc, dD_acc, dbias_acc = acc
    tl.store(dA_part_ptr + so, dA_acc, mask=ck.mask_n[None, :])
    tl.store(dD_part_ptr + ck.state_row + ck.j, dD_acc)
    tl.store(dbias_part_ptr + ck.state_row + ck.j, dbias_acc)


# --------------------------------------------------------------------------- host side


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes for one call: channels per block, padded states, sub-block length, warps."""

    block_d: int
    n_pad: int
    block_t: int
    num_warps: int
    carry_block: int = 64


#: Channels per block (at most). 2 x 16 states x 64 positions on 8 warps compiles without
#: spills for sm_80/sm_90a (4 x 16 x 32 and 1 x 16 x 64 on 4 warps spill in the backward).
MAX_BLOCK_D = 2
#: Elements of one [channels, states, positions] tile (8 per thread on 8 warps).
TILE_ELEMENTS = 2048
#: Budget for the per-slot dB/dC fp32 copies that replace atomics (bytes, both together).
BC_SLOT_BYTES = 256 * 2**20
MAX_BC_SLOTS = 8


def _pow2_divisor(x: int, cap: int) -> int:
    p = 1
    while p * 2 <= cap and x % (p * 2) == 0:
        p *= 2
    return p


def pick_config(dim: int, groups: int, dstate: int, block_t: int | None = None) -> LaunchConfig:
    """Choose tiles: the channel block lies within one B/C group and divides it."""
    dpg = dim // groups
    n_pad = triton.next_power_of_2(dstate)
    block_d = _pow2_divisor(dpg, MAX_BLOCK_D)
    if block_t is None:
        block_t = max(16, min(CHUNK, TILE_ELEMENTS // (block_d * n_pad)))
    num_warps = max(1, min(8, block_d * n_pad * block_t // 256))
    return LaunchConfig(block_d=block_d, n_pad=n_pad, block_t=block_t, num_warps=num_warps)


def bc_slots(blocks_per_group: int, bc_numel: int) -> int:
    """How many fp32 copies of dB/dC the channel blocks of a group write into.

    One copy per block (plain stores, no atomics) when that fits ``BC_SLOT_BYTES``;
    otherwise fewer copies with atomic adds, contention ``blocks_per_group / slots``.
    """
    fit = max(1, BC_SLOT_BYTES // max(1, 2 * 4 * bc_numel))
    if blocks_per_group <= min(fit, MAX_BC_SLOTS):
        return blocks_per_group
    return max(1, min(fit, MAX_BC_SLOTS, blocks_per_group))


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _state_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Call:
    """One forward or backward call as every chunk kernel sees it: the scan's inputs
    (contiguous; absent optional ones None), sizes and launch settings."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor | None
    z: torch.Tensor | None
    delta_bias: torch.Tensor | None
    softplus: bool
    cfg: LaunchConfig

    @classmethod
    def of(cls, u, delta, A, B, C, D, z, delta_bias, delta_softplus, config: LaunchConfig | None) -> _Call:
        _check_device(u)
        u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
        D, z, delta_bias = (t.contiguous() if t is not None else None for t in (D, z, delta_bias))
        cfg = config or pick_config(u.shape[1], B.shape[1], A.shape[1])
        return cls(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), cfg)

    @property
    def sizes(self) -> tuple[int, int, int, int, int, int, int]:
        """(batch, dim, L, groups, dstate, nchunk, channel blocks per batch item)."""
        batch, dim, L = self.u.shape
        return batch, dim, L, self.B.shape[1], self.A.shape[1], triton.cdiv(L, CHUNK), dim // self.cfg.block_d

    @property
    def state_dtype(self) -> torch.dtype:
        return _state_torch_dtype(self.u.dtype)

    @property
    def options(self) -> dict[str, bool]:
        """The compile-time flags of the optional inputs."""
        has_bias = self.delta_bias is not None
        return dict(HAS_D=self.D is not None, HAS_Z=self.z is not None, HAS_BIAS=has_bias, SOFTPLUS=self.softplus)

    def empty(self, *shape: int, zero: bool = False) -> torch.Tensor:
        """A state-dtype (fp32/fp64) buffer on the inputs' device."""
        return (torch.zeros if zero else torch.empty)(shape, device=self.u.device, dtype=self.state_dtype)

    def per_chunk(self, *trailing: int) -> torch.Tensor:
        """A ``(batch, dim, nchunk, *trailing)`` state-dtype buffer."""
        batch, dim, _L, _groups, _dstate, nchunk, _n_dblocks = self.sizes
        return self.empty(batch, dim, nchunk, *trailing)

    def launch(self, kernel, *args, **flags) -> None:
        """One program per (batch, channel block, chunk): the kernel gets the inputs tuple
        (absent ones replaced by a dummy its HAS_ flag leaves unread), the shape tuple,
        then ``args`` and the compile-time ``flags``."""
        batch, dim, L, groups, dstate, nchunk, n_dblocks = self.sizes
        dummy = self.u
        ins = tuple(t if t is not None else dummy for t in (self.u, self.delta, self.A, self.B, self.C))
        ins += tuple(t if t is not None else dummy for t in (self.D, self.z, self.delta_bias))
        shape = (dim, L, nchunk, dim // groups, groups, dstate, n_dblocks)
        consts = _chunk_constexprs(self.cfg, _acc_dtype(self.u.dtype), **flags)
        kernel[(batch * n_dblocks * nchunk,)](ins, shape, *args, **consts, num_warps=self.cfg.num_warps)

    def carries(self, dout: torch.Tensor | None, init: torch.Tensor | None) -> torch.Tensor:
        """What enters each chunk, ``(b, d, nchunk, n)``: forward (no dout, no init) the
        state before it, i.e. the checkpoints; backward (dout, init = dlast_state) the state
        gradient entering it from the right."""
        batch, dim, _L, _groups, dstate, nchunk, _n_dblocks = self.sizes
        if nchunk == 1:  # nothing to carry: the chunk starts from init (or zero)
            start = init if init is not None else self.empty(batch, dim, dstate, zero=True)
            return start.reshape(batch, dim, 1, dstate).contiguous()
        backward = dout is not None
        local, dtsum = self.per_chunk(dstate), self.per_chunk()
        flags = dict(
            HAS_Z=backward and self.z is not None, HAS_BIAS=self.delta_bias is not None, SOFTPLUS=self.softplus
        )
        dout_arg = dout if backward else self.u
        self.launch(_chunk_carry_kernel, dout_arg, local, dtsum, BACKWARD=backward, **flags)
        carry, _final = _carry_scan(local, dtsum, self.A, init, backward, self.cfg)
        return carry


def _carry_scan(local, dtsum, A, init, reverse, cfg: LaunchConfig):
    batch, dim, nchunk, dstate = local.shape
    carry = torch.empty_like(local)
    final = torch.empty(batch, dim, dstate, device=local.device, dtype=local.dtype)
    cb = min(cfg.carry_block, triton.next_power_of_2(nchunk))
    _carry_scan_kernel[(batch * dim,)](
        local,
        dtsum,
        A,
        init if init is not None else local,
        carry,
        final,
        dim,
        nchunk,
        dstate,
        triton.cdiv(nchunk, cb),
        CB=cb,
        NP=cfg.n_pad,
        HAS_INIT=init is not None,
        REVERSE=reverse,
        ACC=_acc_dtype(local.dtype),
        num_warps=4,
    )
    return carry, final


def _check_device(u: torch.Tensor) -> None:
    """Triton kernels need CUDA tensors, except in Triton's CPU interpreter (tests)."""
    if u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UserInputError(
            f"the Triton selective-scan backend got tensors on {u.device.type}",
            None,
            "move the model to a CUDA GPU or use backend='torch'",
        )


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, config: LaunchConfig | None = None):
    """Backend interface: ``(out, last_state, checkpoints)``; B/C grouped ``(b, g, n, L)``."""
    call = _Call.of(u, delta, A, B, C, D, z, delta_bias, delta_softplus, config)
    batch, dim, _L, _groups, dstate, _nchunk, _n_dblocks = call.sizes
    checkpoints = call.carries(None, None)
    last_state = call.empty(batch, dim, dstate)
    out = torch.empty_like(call.u)
    call.launch(_fwd_chunk_out_kernel, checkpoints, out, last_state, **call.options)
    return out, last_state, checkpoints


def backward(
    dout,
    dlast_state,
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    delta_bias,
    delta_softplus,
    checkpoints,
    config: LaunchConfig | None = None,
):
    """Backend interface: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    call = _Call.of(u, delta, A, B, C, D, z, delta_bias, delta_softplus, config)
    _batch, _dim, _L, groups, dstate, _nchunk, n_dblocks = call.sizes
    dout, checkpoints = dout.contiguous(), checkpoints.contiguous()
    init = dlast_state.to(call.state_dtype).contiguous() if dlast_state is not None else None
    gcarry = call.carries(dout, init)

    dz = torch.empty_like(call.z) if z is not None else None
    grads = (torch.empty_like(call.u), torch.empty_like(call.delta), dz if dz is not None else call.u)
    blocks_per_group = n_dblocks // groups
    n_slots = bc_slots(blocks_per_group, B.numel())
    atomic = n_slots < blocks_per_group
    dB = call.empty(n_slots, *B.shape, zero=atomic)
    dC = call.empty(n_slots, *C.shape, zero=atomic)
    parts = (call.per_chunk(dstate), call.per_chunk(), call.per_chunk())
    call.launch(
        _bwd_chunk_grad_kernel,
        dout,
        checkpoints,
        gcarry,
        (*grads, dB, dC),
        parts,
        n_slots,
        B.numel(),
        ATOMIC_BC=atomic,
        **call.options,
    )
    du, ddelta, _dz = grads
    dA_part, dD_part, dbias_part = parts
    dA = dA_part.sum(dim=(0, 2)).to(A.dtype)
    dD = dD_part.sum(dim=(0, 2)).to(D.dtype) if D is not None else None
    ddelta_bias = dbias_part.sum(dim=(0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    dB = dB[0] if n_slots == 1 else dB.sum(0)
    dC = dC[0] if n_slots == 1 else dC.sum(0)
    return du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz, ddelta_bias


# --------------------------------------------------------------------------- AOT configurations

#: The chunk kernels' tuple arguments, element by element, in the order ``_Call`` builds them.
_TUPLE_ARGS = {
    "ins": ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"),
    "shape": ("dim", "L", "nchunk", "dpg", "groups", "dstate", "n_dblocks"),
    "grads": ("du", "ddelta", "dz", "dB", "dC"),
    "parts": ("dA_part", "dD_part", "dbias_part"),
}
#: Tensors in the I/O dtype (bf16 in production); everything else is fp32 state.
_IO_TENSORS = {"u", "delta", "B", "C", "z", "dout", "out", "du", "ddelta", "dz"}
_INT_ARGS = {"dim", "L", "nchunk", "dpg", "groups", "dstate", "n_dblocks", "n_iters", "n_slots", "slot_stride"}


def _aot_type(name: str, io_dtype: str) -> str:
    if name in _INT_ARGS:
        return "i32"
    return f"*{io_dtype}" if name.removesuffix("_ptr") in _IO_TENSORS else "*fp32"


def aot_signature(kernel, io_dtype: str = "bf16") -> dict[str, str | tuple[str, ...]]:
    """Triton signature of ``kernel``: half/float I/O pointers as ``io_dtype``, state in fp32."""
    sig: dict[str, str | tuple[str, ...]] = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name in _TUPLE_ARGS:
            sig[name] = tuple(_aot_type(element, io_dtype) for element in _TUPLE_ARGS[name])
        else:
            sig[name] = _aot_type(name, io_dtype)
    return sig


def _chunk_constexprs(cfg: LaunchConfig, acc=tl.float32, **flags) -> dict[str, object]:
    """Compile-time constants of a chunk kernel: tiles, chunk length, accumulation dtype, options."""
    return dict(BD=cfg.block_d, NP=cfg.n_pad, BT=cfg.block_t, CHUNK_LEN=CHUNK, ACC=acc, **flags)


def aot_configs_for(cfg: LaunchConfig, io_dtype: str = "bf16") -> list[AotConfig]:
    """Every kernel of one forward + backward call with all options on (the heaviest variant);
    the gradient kernel both with atomic and with plain dB/dC stores."""
    full = dict(HAS_BIAS=True, SOFTPLUS=True)
    rows = [
        (_chunk_carry_kernel, _chunk_constexprs(cfg, BACKWARD=False, HAS_Z=False, **full)),
        (_fwd_chunk_out_kernel, _chunk_constexprs(cfg, HAS_D=True, HAS_Z=True, **full)),
        (_chunk_carry_kernel, _chunk_constexprs(cfg, BACKWARD=True, HAS_Z=True, **full)),
        (_bwd_chunk_grad_kernel, _chunk_constexprs(cfg, HAS_D=True, HAS_Z=True, ATOMIC_BC=True, **full)),
        (_bwd_chunk_grad_kernel, _chunk_constexprs(cfg, HAS_D=True, HAS_Z=True, ATOMIC_BC=False, **full)),
    ]
    out = [AotConfig(fn, aot_signature(fn, io_dtype), consts, cfg.num_warps, label=io_dtype) for fn, consts in rows]
    for reverse in (False, True):
        consts = dict(CB=cfg.carry_block, NP=cfg.n_pad, HAS_INIT=reverse, REVERSE=reverse, ACC=tl.float32)
        out.append(AotConfig(_carry_scan_kernel, aot_signature(_carry_scan_kernel, io_dtype), consts, 4))
    return out


#: The production tile configurations for d_state 16: channels per group even (2 per
#: block, SegMamba/U-Mamba/VM-UNet) and odd (1 per block).
PRODUCTION_CONFIGS = (pick_config(96, 1, 16), pick_config(3, 1, 16))


def aot_configs() -> list[AotConfig]:
    """Every kernel variant launched with the production tiles (carry scans deduplicated)."""
    rows: list[AotConfig] = []
    seen: set[tuple] = set()
    for cfg in PRODUCTION_CONFIGS:
        for c in aot_configs_for(cfg):
            key = (c.fn.__name__, tuple(sorted((k, str(v)) for k, v in c.constexprs.items())), c.num_warps)
            if key not in seen:
                seen.add(key)
                rows.append(c)
    return rows


def __getattr__(name: str):
    # AOT_CONFIGS is built on first use: it needs compiled (not interpreted) kernels.
    if name == "AOT_CONFIGS":
        return aot_configs()
    raise AttributeError(name)
