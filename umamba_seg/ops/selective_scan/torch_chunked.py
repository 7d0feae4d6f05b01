"""Chunked, vectorised PyTorch selective scan: forward and hand-written backward.

Used on CPU and as the GPU fallback. No Python loop over every position of the
sequence and no autograd through one; memory stays bounded for any length.

Layout. Inputs are turned time-major once, ``(L, b, g, dg)`` for per-channel tensors and
``(L, b, g, n)`` for B/C, and padded to a multiple of ``CHECKPOINT_LEN`` with ``dt = 0``
(decay 1, no input: the state passes through unchanged). The sequence is then processed
in blocks of whole checkpoint intervals; a block is viewed as ``c`` chunks of ``T``
positions, ``(c, T, b, g, dg, n)``, so one step ``t`` of the recurrence updates all ``c``
chunks at once with a single tensor operation on a slice that stays in cache.

Forward, per block: ``decay = exp(dt * A)`` and ``x = dt * u * B`` in bulk; a loop over
the ``T`` positions of a chunk runs ``h_t = decay_t * h_{t-1} + x_t`` for all chunks from
a zero state while turning ``decay`` into its running product ``P_t`` within the chunk;
a short loop over chunks carries the true state across chunk boundaries; then
``h = h_local + P * h_chunk_start`` and ``y = <C, h>`` (a batched matmul over n). Only
products of decays (all in ``[0, 1]`` for ``dt * A <= 0``) are formed: nothing is divided
by a decay, so long sequences with strong decay stay finite.

Backward, per block from the last: recompute the states from the block's checkpoint the
same way, run the adjoint recurrence ``g_t = dy_t C_t + decay_{t+1} g_{t+1}`` backwards
with suffix products of decays for the chunk carry, then form every gradient with
batched matmuls/einsums. States and accumulations are float32 (float64 for float64
inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import CHECKPOINT_LEN, compute_dt, num_checkpoints, state_dtype

# Chunk length inside a block (must divide CHECKPOINT_LEN) and the target number of
# state elements (positions * b * d * n) per block buffer; tuned on a 2-core CPU so the
# per-step slices are large enough to amortise dispatch and the buffers stay small.
FWD_CHUNK = 16
BWD_CHUNK = 16
BLOCK_ELEMENTS = 1 << 21


def _block_len(batch: int, dim: int, dstate: int, padded_len: int) -> int:
    """Positions per block: a multiple of CHECKPOINT_LEN near BLOCK_ELEMENTS state elements."""
    per_position = batch * dim * dstate
    k = max(1, BLOCK_ELEMENTS // (per_position * CHECKPOINT_LEN))
    return min(k * CHECKPOINT_LEN, padded_len)


def _time_major(x: torch.Tensor, padded_len: int, dtype: torch.dtype) -> torch.Tensor:
    """``(b, k, L)`` -> contiguous ``(Lp, b, k)`` in ``dtype``, zero-padded at the end."""
    b, k, L = x.shape
    out = x.new_zeros(padded_len, b, k, dtype=dtype)
    out[:L].copy_(x.permute(2, 0, 1))
    return out


def _grouped_time_major(x: torch.Tensor, padded_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Grouped ``(b, g, n, L)`` -> contiguous ``(Lp, b, g, n)``, zero-padded."""
    b, g, n, L = x.shape
    out = x.new_zeros(padded_len, b, g, n, dtype=dtype)
    out[:L].copy_(x.permute(3, 0, 1, 2))
    return out


def _from_time_major(x: torch.Tensor, length: int) -> torch.Tensor:
    """``(Lp, b, ...)`` -> ``(b, ..., L)`` (drops the padding)."""
    perm = list(range(1, x.dim())) + [0]
    return x[:length].permute(*perm)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Shared set-up of forward and backward: sizes, state dtype, time-major tensors."""
    batch, dim, length = u.shape
    groups, dstate = B.shape[1], A.shape[1]
    sd = state_dtype(u.dtype)
    padded = num_checkpoints(length) * CHECKPOINT_LEN
    dt = compute_dt(delta, delta_bias, delta_softplus, sd)
    uf = u.to(sd)
    dt_tm = _time_major(dt, padded, sd)
    dtu_tm = _time_major(dt * uf, padded, sd)
    B_tm = _grouped_time_major(B, padded, sd)
    C_tm = _grouped_time_major(C, padded, sd)
    Ag = A.to(sd).reshape(groups, dim // groups, dstate)
    return dict(
        batch=batch, dim=dim, length=length, groups=groups, dstate=dstate, sd=sd, padded=padded,
        dt=dt, uf=uf, dt_tm=dt_tm, dtu_tm=dtu_tm, B_tm=B_tm, C_tm=C_tm, Ag=Ag,
    )


def _recompute_states(
    dt_b: torch.Tensor,
    dtu_b: torch.Tensor,
    B_b: torch.Tensor,
    Ag: torch.Tensor,
    h_in: torch.Tensor,
    chunk: int,
    decay_out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """States of one block.

    ``dt_b, dtu_b``: ``(c, T, b, g, dg)``; ``B_b``: ``(c, T, b, g, n)``; ``h_in``:
    ``(b, g, dg, n)``, the state before the block. Returns ``(h, starts)``: ``h`` of
    shape ``(c, T, b, g, dg, n)`` (the state after every position) and ``starts``
    ``(c + 1, b, g, dg, n)`` (the state before every chunk, then the block's last state).
    If ``decay_out`` is given, the decays ``exp(dt * A)`` are written there and kept.
    """
    c, T = dt_b.shape[:2]
    decay = torch.mul(dt_b.unsqueeze(-1), Ag, out=decay_out) if decay_out is not None else dt_b.unsqueeze(-1) * Ag
    decay.exp_()
    h = dtu_b.unsqueeze(-1) * B_b.unsqueeze(-2)
    # cumulative decay inside each chunk; reuse the decay buffer when the caller does not keep it
    prod = decay.clone() if decay_out is not None else decay
    for t in range(1, T):
        h[:, t].addcmul_(decay[:, t], h[:, t - 1])
        prod[:, t].mul_(prod[:, t - 1])
    starts = h.new_empty(c + 1, *h.shape[2:])
    starts[0] = h_in
    for i in range(c):
        torch.addcmul(h[i, T - 1], prod[i, T - 1], starts[i], out=starts[i + 1])
    h.addcmul_(prod, starts[:c].unsqueeze(1))
    return h, starts


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Backend interface: ``(out, last_state, checkpoints)``; see the package docstring."""
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, sd = p["batch"], p["dim"], p["groups"], p["dstate"], p["sd"]
    dg = d // g
    padded = p["padded"]
    blk = _block_len(b, d, n, padded)
    T = FWD_CHUNK
    per_ckpt = CHECKPOINT_LEN // T

    y_tm = u.new_empty(padded, b, g, dg, dtype=sd)
    checkpoints = u.new_empty(num_checkpoints(p["length"]), b, g, dg, n, dtype=sd)
    h = u.new_zeros(b, g, dg, n, dtype=sd)
    for s in range(0, padded, blk):
        e = min(s + blk, padded)
        c = (e - s) // T
        dt_b = p["dt_tm"][s:e].view(c, T, b, g, dg)
        dtu_b = p["dtu_tm"][s:e].view(c, T, b, g, dg)
        B_b = p["B_tm"][s:e].view(c, T, b, g, n)
        C_b = p["C_tm"][s:e].view(c, T, b, g, n, 1)
        hs, starts = _recompute_states(dt_b, dtu_b, B_b, p["Ag"], h, T, None)
        torch.matmul(hs, C_b, out=y_tm[s:e].view(c, T, b, g, dg, 1))
        k0 = s // CHECKPOINT_LEN
        checkpoints[k0 : k0 + c // per_ckpt] = starts[0:c:per_ckpt]
        h = starts[c]

    y = _from_time_major(y_tm.view(padded, b, d), p["length"])
    if D is not None:
        y = y + D.to(sd)[:, None] * p["uf"]
    if z is not None:
        y = y * F.silu(z.to(sd))
    last_state = h.reshape(b, d, n)
    ckpt = checkpoints.view(-1, b, d, n).permute(1, 2, 0, 3).contiguous()
    return y.to(u.dtype).contiguous(), last_state, ckpt


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, sd, L = p["batch"], p["dim"], p["groups"], p["dstate"], p["sd"], p["length"]
    dg = d // g
    padded = p["padded"]
    blk = _block_len(b, d, n, padded)
    T = BWD_CHUNK
    Ag = p["Ag"]

    dout_f = dout.to(sd)
    dy = dout_f
    if z is not None:
        zf = z.to(sd)
        sig_z = torch.sigmoid(zf)
        dy = dout_f * (zf * sig_z)
    dD = (dy * p["uf"]).sum((0, 2)).to(D.dtype) if D is not None else None
    y_tm = torch.empty(padded, b, g, dg, dtype=sd, device=u.device) if z is not None else None

    dy_tm = _time_major(dy, padded, sd).view(padded, b, g, dg)
    ckpt = checkpoints.to(sd).reshape(b, g, dg, -1, n)

    ddtu_tm = torch.empty(padded, b, g, dg, dtype=sd, device=u.device)
    ddt_tm = torch.empty(padded, b, g, dg, dtype=sd, device=u.device)
    dB_tm = torch.empty(padded, b, g, n, dtype=sd, device=u.device)
    dC_tm = torch.empty(padded, b, g, n, dtype=sd, device=u.device)
    dA_acc = torch.zeros(g, dg, n, dtype=sd, device=u.device)
    gin = (
        dlast_state.to(sd).reshape(b, g, dg, n).clone()
        if dlast_state is not None
        else torch.zeros(b, g, dg, n, dtype=sd, device=u.device)
    )
    block_starts = list(range(0, padded, blk))
    for s in reversed(block_starts):
        e = min(s + blk, padded)
        c = (e - s) // T
        dt_b = p["dt_tm"][s:e].view(c, T, b, g, dg)
        dtu_b = p["dtu_tm"][s:e].view(c, T, b, g, dg)
        B_b = p["B_tm"][s:e].view(c, T, b, g, n)
        C_b = p["C_tm"][s:e].view(c, T, b, g, n)
        dy_b = dy_tm[s:e].view(c, T, b, g, dg)
        h_in = ckpt[:, :, :, s // CHECKPOINT_LEN]
        decay = torch.empty(c, T, b, g, dg, n, dtype=sd, device=u.device)
        hs, starts = _recompute_states(dt_b, dtu_b, B_b, Ag, h_in, T, decay)
        if y_tm is not None:
            torch.matmul(hs, C_b.unsqueeze(-1), out=y_tm[s:e].view(c, T, b, g, dg, 1))

        # adjoint recurrence inside chunks from a zero incoming adjoint
        adj = dy_b.unsqueeze(-1) * C_b.unsqueeze(-2)
        for t in range(T - 2, -1, -1):
            adj[:, t].addcmul_(decay[:, t + 1], adj[:, t + 1])
        # suffix products of decays: suf[:, t] = prod_{s >= t} decay[:, s]
        suf = decay.clone()
        for t in range(T - 2, -1, -1):
            suf[:, t].mul_(suf[:, t + 1])
        # carry the adjoint across chunks, right to left
        gins = adj.new_empty(c, b, g, dg, n)
        for i in range(c - 1, -1, -1):
            gins[i] = gin
            gin = torch.addcmul(suf[i, 0] * gin, decay[i, 0], adj[i, 0])
        if T > 1:
            adj[:, : T - 1].addcmul_(suf[:, 1:], gins.unsqueeze(1))
        adj[:, T - 1].add_(gins)

        # q = adj * decay * h_prev: the gradient reaching the decay term
        q = decay.mul_(adj)
        if T > 1:
            q[:, 1:].mul_(hs[:, : T - 1])
        q[:, 0].mul_(starts[:c])
        ddt_tm[s:e].view(c, T, b, g, dg).copy_(torch.einsum("ctbgdn,gdn->ctbgd", q, Ag))
        dA_acc += torch.einsum("ctbgdn,ctbgd->gdn", q, dt_b)
        torch.matmul(dy_b.unsqueeze(-2), hs, out=dC_tm[s:e].view(c, T, b, g, 1, n))
        torch.matmul(dtu_b.unsqueeze(-2), adj, out=dB_tm[s:e].view(c, T, b, g, 1, n))
        torch.matmul(adj, B_b.unsqueeze(-1), out=ddtu_tm[s:e].view(c, T, b, g, dg, 1))

    ddtu = _from_time_major(ddtu_tm.view(padded, b, d), L)
    ddt = _from_time_major(ddt_tm.view(padded, b, d), L) + ddtu * p["uf"]
    du = ddtu * p["dt"]
    dz = None
    if D is not None:
        du = du + dy * D.to(sd)[:, None]
    if z is not None:
        y = _from_time_major(y_tm.view(padded, b, d), L)
        if D is not None:
            y = y + D.to(sd)[:, None] * p["uf"]
        dz = (dout_f * y * sig_z * (1 + zf * (1 - sig_z))).to(z.dtype)
    if delta_softplus:
        pre = delta.to(sd)
        if delta_bias is not None:
            pre = pre + delta_bias.to(sd)[:, None]
        ddt = ddt * torch.sigmoid(pre)
    ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    dB = _from_time_major(dB_tm, L)
    dC = _from_time_major(dC_tm, L)
    return (
        du.to(u.dtype).contiguous(),
        ddt.to(delta.dtype).contiguous(),
        dA_acc.reshape(d, n).to(A.dtype),
        dB.to(B.dtype).contiguous(),
        dC.to(C.dtype).contiguous(),
        dD,
        dz.contiguous() if dz is not None else None,
        ddelta_bias,
    )
