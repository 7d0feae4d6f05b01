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

# Tiling knobs, tuned on a 2-core CPU. A block holds about BLOCK_ELEMENTS state elements
# (positions * b * d * n, whole checkpoint intervals); a chunk length T is picked so that
# one step of the in-chunk loop touches about STEP_ELEMENTS elements: below PyTorch's
# parallel grain (32768) the many small loop ops run on one thread without a barrier,
# while the few bulk ops per block use all threads. CHUNK forces T (tests).
BLOCK_ELEMENTS = 1 << 21
STEP_ELEMENTS = 24576
CHUNK: int | None = None


def _tiling(batch: int, dim: int, dstate: int, padded_len: int) -> tuple[int, int]:
    """``(block_len, chunk_len)``: block a multiple of CHECKPOINT_LEN, chunk a power of 2 dividing it."""
    per_position = batch * dim * dstate
    k = max(1, BLOCK_ELEMENTS // (per_position * CHECKPOINT_LEN))
    block = min(k * CHECKPOINT_LEN, padded_len)
    if CHUNK is not None:
        return block, CHUNK
    chunk = 1
    while chunk < CHECKPOINT_LEN and (block // chunk) * per_position > STEP_ELEMENTS:
        chunk *= 2
    return block, chunk


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
    dg = dim // groups
    dt_tm = _time_major(dt, padded, sd).view(padded, batch, groups, 1, dg)
    dtu_tm = _time_major(dt * uf, padded, sd).view(padded, batch, groups, 1, dg)
    B_tm = _grouped_time_major(B, padded, sd).unsqueeze(-1)
    C_tm = _grouped_time_major(C, padded, sd).unsqueeze(-1)
    # A as (g, n, dg): the channel axis innermost, like every state tensor here
    Ag = A.to(sd).reshape(groups, dg, dstate).transpose(1, 2).contiguous()
    return dict(
        batch=batch, dim=dim, length=length, groups=groups, dstate=dstate, sd=sd, padded=padded,
        dt=dt, uf=uf, dt_tm=dt_tm, dtu_tm=dtu_tm, B_tm=B_tm, C_tm=C_tm, Ag=Ag,
    )


def _block_states(
    dt_b: torch.Tensor, dtu_b: torch.Tensor, B_b: torch.Tensor, Ag: torch.Tensor, h_in: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """States of one block of ``c`` chunks of ``T`` positions.

    ``dt_b, dtu_b``: ``(c, T, b, g, 1, dg)``; ``B_b``: ``(c, T, b, g, n, 1)``; ``h_in``:
    ``(b, g, n, dg)``, the state before the block. Returns ``(h, starts)``: ``h``
    ``(c, T, b, g, n, dg)``, the state after every position, and ``starts``
    ``(c + 1, b, g, n, dg)``, the state before every chunk followed by the block's last state.
    """
    c, T = dt_b.shape[:2]
    decay = torch.mul(dt_b, Ag).exp_()
    h = torch.mul(dtu_b, B_b)
    # local scan from a zero state; decay becomes the running product inside the chunk
    for t in range(1, T):
        h[:, t].addcmul_(decay[:, t], h[:, t - 1])
        decay[:, t].mul_(decay[:, t - 1])
    starts = h.new_empty(c + 1, *h.shape[2:])
    starts[0] = h_in
    for i in range(c):
        torch.addcmul(h[i, T - 1], decay[i, T - 1], starts[i], out=starts[i + 1])
    h.addcmul_(decay, starts[:c].unsqueeze(1))
    return h, starts


def _to_checkpoint_layout(x: torch.Tensor, batch: int, dim: int, dstate: int) -> torch.Tensor:
    """``(k, b, g, n, dg)`` -> ``(b, d, k, n)`` contiguous."""
    k, _, g = x.shape[:3]
    return x.permute(1, 2, 4, 0, 3).reshape(batch, dim, k, dstate).contiguous()


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Backend interface: ``(out, last_state, checkpoints)``; see the package docstring."""
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, sd = p["batch"], p["dim"], p["groups"], p["dstate"], p["sd"]
    dg = d // g
    padded = p["padded"]
    blk, T = _tiling(b, d, n, padded)
    per_ckpt = CHECKPOINT_LEN // T

    y_tm = u.new_empty(padded, b, g, 1, dg, dtype=sd)
    checkpoints = u.new_empty(num_checkpoints(p["length"]), b, g, n, dg, dtype=sd)
    h = u.new_zeros(b, g, n, dg, dtype=sd)
    for s in range(0, padded, blk):
        e = min(s + blk, padded)
        c = (e - s) // T
        dt_b = p["dt_tm"][s:e].view(c, T, b, g, 1, dg)
        dtu_b = p["dtu_tm"][s:e].view(c, T, b, g, 1, dg)
        B_b = p["B_tm"][s:e].view(c, T, b, g, n, 1)
        C_b = p["C_tm"][s:e].view(c, T, b, g, n, 1)
        hs, starts = _block_states(dt_b, dtu_b, B_b, p["Ag"], h)
        torch.matmul(C_b.transpose(-1, -2), hs, out=y_tm[s:e].view(c, T, b, g, 1, dg))
        k0 = s // CHECKPOINT_LEN
        checkpoints[k0 : k0 + c // per_ckpt] = starts[0:c:per_ckpt]
        h = starts[c]

    y = _from_time_major(y_tm.view(padded, b, d), p["length"])
    if D is not None:
        y = y + D.to(sd)[:, None] * p["uf"]
    if z is not None:
        y = y * F.silu(z.to(sd))
    last_state = h.permute(0, 1, 3, 2).reshape(b, d, n)
    ckpt = _to_checkpoint_layout(checkpoints, b, d, n)
    return y.to(u.dtype).contiguous(), last_state, ckpt


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, sd, L = p["batch"], p["dim"], p["groups"], p["dstate"], p["sd"], p["length"]
    dg = d // g
    padded = p["padded"]
    Ag = p["Ag"]

    def buffer(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=sd, device=u.device)

    dout_f = dout.to(sd)
    dy = dout_f
    if z is not None:
        zf = z.to(sd)
        sig_z = torch.sigmoid(zf)
        dy = dout_f * (zf * sig_z)
    dD = (dy * p["uf"]).sum((0, 2)).to(D.dtype) if D is not None else None
    y_tm = buffer(padded, b, g, 1, dg) if z is not None else None
    dy_tm = _time_major(dy, padded, sd).view(padded, b, g, 1, dg)
    # checkpoints (b, d, k, n) -> (k, b, g, n, dg)
    ckpt = checkpoints.to(sd).view(b, g, dg, -1, n).permute(3, 0, 1, 4, 2).contiguous()

    ddtu_tm, ddt_tm = buffer(padded, b, g, 1, dg), buffer(padded, b, g, 1, dg)
    dB_tm, dC_tm = buffer(padded, b, g, n, 1), buffer(padded, b, g, n, 1)
    dA_acc = torch.zeros(g, n, dg, dtype=sd, device=u.device)
    gin = torch.zeros(b, g, n, dg, dtype=sd, device=u.device)
    if dlast_state is not None:
        gin += dlast_state.to(sd).view(b, g, dg, n).transpose(-1, -2)

    # One checkpoint interval per block: its first state is a checkpoint, so the states
    # are recomputed by a plain loop, and the adjoint enters the block from its end.
    T = CHECKPOINT_LEN
    decay, hs, adj, tmp = (buffer(T, b, g, n, dg) for _ in range(4))
    for k in reversed(range(padded // T)):
        s, e = k * T, (k + 1) * T
        dt_b, dtu_b, dy_b = p["dt_tm"][s:e], p["dtu_tm"][s:e], dy_tm[s:e]
        B_b, C_b = p["B_tm"][s:e], p["C_tm"][s:e]
        h_in = ckpt[k]
        torch.mul(dt_b, Ag, out=decay).exp_()
        torch.mul(dtu_b, B_b, out=hs)
        hs[0].addcmul_(decay[0], h_in)
        for t in range(1, T):
            hs[t].addcmul_(decay[t], hs[t - 1])
        if y_tm is not None:
            torch.matmul(C_b.transpose(-1, -2), hs, out=y_tm[s:e])

        # adjoint g_t = dL/dh_t: g_t = dy_t C_t + decay_{t+1} g_{t+1}
        torch.mul(dy_b, C_b, out=adj)
        adj[T - 1].add_(gin)
        for t in range(T - 2, -1, -1):
            adj[t].addcmul_(decay[t + 1], adj[t + 1])
        gin = decay[0] * adj[0]

        # q = g_t * decay_t * h_{t-1}: the gradient reaching exp(dt * A)
        q = decay.mul_(adj)
        q[1:].mul_(hs[: T - 1])
        q[0].mul_(h_in)
        torch.sum(torch.mul(q, Ag, out=tmp), dim=-2, keepdim=True, out=ddt_tm[s:e])
        dA_acc += torch.mul(q, dt_b, out=tmp).sum((0, 1))
        torch.matmul(hs, dy_b.transpose(-1, -2), out=dC_tm[s:e])
        torch.matmul(adj, dtu_b.transpose(-1, -2), out=dB_tm[s:e])
        torch.matmul(B_b.transpose(-1, -2), adj, out=ddtu_tm[s:e])

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
    dB = _from_time_major(dB_tm.view(padded, b, g, n), L)
    dC = _from_time_major(dC_tm.view(padded, b, g, n), L)
    return (
        du.to(u.dtype).contiguous(),
        ddt.to(delta.dtype).contiguous(),
        dA_acc.transpose(1, 2).reshape(d, n).to(A.dtype),
        dB.to(B.dtype).contiguous(),
        dC.to(C.dtype).contiguous(),
        dD,
        dz.contiguous() if dz is not None else None,
        ddelta_bias,
    )
