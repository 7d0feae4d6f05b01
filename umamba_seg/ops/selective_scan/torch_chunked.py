"""Chunked, vectorised PyTorch selective scan: forward and hand-written backward.

Used on CPU and as the GPU fallback. No autograd through a loop over the sequence and no
tensor of ``L x d x n`` states: memory stays bounded for any length.

Layout. The sequence is processed in blocks of whole checkpoint intervals. Each block's
inputs are copied time-major into small reused buffers, ``(T, b, g, 1, dg)`` per channel
and ``(T, b, g, n, 1)`` for B/C, and the states are ``(T, b, g, n, dg)`` with the channels
innermost, so every bulk operation runs over contiguous rows and a block's buffers stay
near the cache. Transposing block by block is cache-friendly, unlike transposing the
whole ``(b, d, L)`` tensors. A block shorter than its buffer (the sequence's tail) is padded
to a multiple of its chunk length with ``dt = 0`` (decay 1, no input: the state passes
through unchanged); the chunk shrinks for short tails, so padding stays below one chunk.

Forward, per block viewed as ``c`` chunks of ``T`` positions: ``decay = exp(dt * A)`` and
``x = dt * u * B`` in bulk; a loop over the ``T`` positions runs ``h_t = decay_t * h_{t-1}
+ x_t`` for all ``c`` chunks at once from a zero state, giving each chunk's end state; a
short loop over chunks carries the true state across chunk boundaries with the
whole-chunk decay ``exp(A * sum(dt))``; the loop then runs again from the true chunk
starts, and ``y = <C, h>`` is one batched matmul. Only decays and sums of ``dt * A`` are
exponentiated; nothing is divided by a decay (long sequences with strong decay stay
finite) and no chain of products of decays is formed (it would crawl through denormals,
which are very slow on CPUs). ``T`` is picked so one loop step touches about
``STEP_ELEMENTS`` elements.

Backward, per checkpoint interval from the last: the interval starts at a checkpoint, so
its states are recomputed by one loop; the adjoint ``g_t = dy_t C_t + decay_{t+1}
g_{t+1}`` enters from the interval's end and runs backwards by one loop; then every
gradient is a bulk product and reduction over the interval. States and accumulations
are float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import CHECKPOINT_LEN, num_checkpoints, state_dtype

# Tiling knobs, tuned on a 2-core CPU. A forward block holds about BLOCK_ELEMENTS state
# elements (positions * b * d * n, whole checkpoint intervals; 2 MB in float32, so the
# block's buffers stay near the core's L2 cache); the chunk length T makes one loop step
# touch about STEP_ELEMENTS elements: large enough to amortise the per-op dispatch, and
# below PyTorch's parallel grain (32768) so the many small loop ops need no thread
# barrier, while the few bulk ops per block use all threads. CHUNK forces T (tests).
BLOCK_ELEMENTS = 1 << 19
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


def _last_block_rows(real: int, chunk: int) -> tuple[int, int]:
    """``(chunk_len, rows)`` for a block of ``real`` positions. A block no longer than one
    chunk is one chunk of exactly ``real`` positions; a longer one is padded to a multiple
    of the chunk. So a short sequence (or the tail of a long one) is never padded to a whole
    checkpoint interval: VM-UNet's deep stages scan 6 to 80 positions over thousands of
    channels, where that padding cost up to 40x."""
    if real <= chunk:
        return real, real
    return chunk, -(-real // chunk) * chunk


def _into_time_major(buf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Copy ``x`` ``(b, ..., l)`` into ``buf`` ``(rows, b, ...)`` time-major, zero the rows past l."""
    length = x.shape[-1]
    buf[:length].copy_(x.movedim(-1, 0))
    buf[length:].zero_()
    return buf


class _Inputs:
    """One call's inputs, handed out block by block in the state dtype."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        self.u, self.delta, self.B, self.C, self.z = u, delta, B, C, z
        self.b, self.d, self.L = u.shape
        self.g, self.n = B.shape[1], A.shape[1]
        self.dg = self.d // self.g
        self.sd = state_dtype(u.dtype)
        self.softplus = delta_softplus
        self.bias = None if delta_bias is None else delta_bias.to(self.sd)[:, None]
        self.D = None if D is None else D.to(self.sd)[:, None]
        # A as (g, n, dg): channels innermost, like the states
        self.A = A.to(self.sd).reshape(self.g, self.dg, self.n).transpose(1, 2).contiguous()

    def buffer(self, *shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=self.sd, device=self.u.device)

    def pre_dt(self, p0: int, p1: int) -> torch.Tensor:
        """``delta + bias`` on positions ``[p0, p1)``, ``(b, d, l)``, a fresh tensor."""
        x = self.delta[..., p0:p1]
        return torch.add(x, self.bias) if self.bias is not None else x.to(self.sd, copy=True)

    def dt(self, p0: int, p1: int) -> torch.Tensor:
        """The step ``dt`` on positions ``[p0, p1)``, ``(b, d, l)``."""
        x = self.pre_dt(p0, p1)
        return F.softplus(x) if self.softplus else x

    def channels(self, buf: torch.Tensor) -> torch.Tensor:
        """``(rows, b, d)`` -> ``(rows, b, g, 1, dg)`` view."""
        return buf.view(buf.shape[0], self.b, self.g, 1, self.dg)


def _block_states(
    dt_b: torch.Tensor,
    dtu_b: torch.Tensor,
    B_b: torch.Tensor,
    A: torch.Tensor,
    h_in: torch.Tensor,
    decay: torch.Tensor,
    h: torch.Tensor,
    starts: torch.Tensor,
) -> None:
    """States of one block of ``c`` chunks of ``T`` positions, written into ``h``.

    ``dt_b, dtu_b``: ``(c, T, b, g, 1, dg)``; ``B_b``: ``(c, T, b, g, n, 1)``; ``h_in``:
    ``(b, g, n, dg)``, the state before the block. Fills ``h`` ``(c, T, b, g, n, dg)`` with
    the state after every position and ``starts`` ``(c + 1, b, g, n, dg)`` with the state
    before every chunk followed by the block's last state; ``decay`` is scratch.
    """
    c, T = dt_b.shape[:2]
    torch.mul(dt_b, A, out=decay).exp_()
    h_t, decay_t = h.unbind(1), decay.unbind(1)
    starts[0] = h_in
    if c > 1:
        # local scan of every chunk from a zero state, only for the chunk-end states
        torch.mul(dtu_b, B_b, out=h)
        for t in range(1, T):
            h_t[t].addcmul_(decay_t[t], h_t[t - 1])
        # whole-chunk decay exp(A * sum(dt)): from a sum, not a chain of products
        total = torch.mul(dt_b.sum(1), A).exp_()
        for i in range(c - 1):
            torch.addcmul(h[i, T - 1], total[i], starts[i], out=starts[i + 1])
    # the scan proper, every chunk from its true start state
    torch.mul(dtu_b, B_b, out=h)
    h_t[0].addcmul_(decay_t[0], starts[:c])
    for t in range(1, T):
        h_t[t].addcmul_(decay_t[t], h_t[t - 1])
    starts[c] = h[c - 1, T - 1]


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Backend interface: ``(out, last_state, checkpoints)``; see the package docstring."""
    x = _Inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, g, n, dg, L = x.b, x.d, x.g, x.n, x.dg, x.L
    padded = num_checkpoints(L) * CHECKPOINT_LEN
    blk, T = _tiling(b, d, n, padded)
    c_max = blk // T

    dt_buf, dtu_buf, y_buf = x.buffer(blk, b, d), x.buffer(blk, b, d), x.buffer(blk, b, d)
    B_buf, C_buf = x.buffer(blk, b, g, n), x.buffer(blk, b, g, n)
    decay_buf, h_buf = x.buffer(blk, b, g, n, dg), x.buffer(blk, b, g, n, dg)
    starts_buf = x.buffer(c_max + 1, b, g, n, dg)
    out = x.buffer(b, d, L)
    checkpoints = x.buffer(num_checkpoints(L), b, g, n, dg)
    h = torch.zeros(b, g, n, dg, dtype=x.sd, device=u.device)
    for p0 in range(0, L, blk):
        q1 = min(p0 + blk, L)  # real positions end here; the rest of the block is padding
        T_blk, rows = _last_block_rows(q1 - p0, T)
        c, per_ckpt = rows // T_blk, CHECKPOINT_LEN // T_blk
        dt_bm = x.dt(p0, q1)
        u_bm = u[..., p0:q1]
        _into_time_major(dt_buf[:rows], dt_bm)
        _into_time_major(dtu_buf[:rows], dt_bm.mul_(u_bm))
        _into_time_major(B_buf[:rows], B[..., p0:q1])
        _into_time_major(C_buf[:rows], C[..., p0:q1])
        shape = (c, T_blk, b, g, n, dg)
        hs, starts = h_buf[:rows].view(shape), starts_buf[: c + 1]
        _block_states(
            x.channels(dt_buf[:rows]).view(c, T_blk, b, g, 1, dg),
            x.channels(dtu_buf[:rows]).view(c, T_blk, b, g, 1, dg),
            B_buf[:rows].view(c, T_blk, b, g, n, 1),
            x.A,
            h,
            decay_buf[:rows].view(shape),
            hs,
            starts,
        )
        C_b = C_buf[:rows].view(c, T_blk, b, g, 1, n)
        torch.matmul(C_b, hs, out=x.channels(y_buf[:rows]).view(c, T_blk, b, g, 1, dg))
        k0 = p0 // CHECKPOINT_LEN
        block_ckpts = starts[0:c:per_ckpt]  # the states at this block's checkpoint positions
        checkpoints[k0 : k0 + block_ckpts.shape[0]] = block_ckpts
        h = starts[c].clone()

        out_b = out[..., p0:q1]
        out_b.copy_(y_buf[: q1 - p0].movedim(0, -1))
        if x.D is not None:
            out_b.addcmul_(u_bm, x.D)
        if z is not None:
            out_b.mul_(F.silu(z[..., p0:q1].to(x.sd)))

    last_state = h.transpose(-1, -2).reshape(b, d, n)
    ckpt = checkpoints.permute(1, 2, 4, 0, 3).reshape(b, d, -1, n)
    return out.to(u.dtype), last_state, ckpt


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    x = _Inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    b, d, g, n, dg, L, sd = x.b, x.d, x.g, x.n, x.dg, x.L, x.sd
    T = CHECKPOINT_LEN
    # checkpoints (b, d, k, n) -> (k, b, g, n, dg)
    ckpt = checkpoints.to(sd).view(b, g, dg, -1, n).permute(3, 0, 1, 4, 2).contiguous()

    du, ddelta = x.buffer(b, d, L), x.buffer(b, d, L)
    dB, dC = x.buffer(b, g, n, L), x.buffer(b, g, n, L)
    dz = x.buffer(b, d, L) if z is not None else None
    dA_acc = torch.zeros(g, n, dg, dtype=sd, device=u.device)
    dD = torch.zeros(d, dtype=sd, device=u.device) if D is not None else None
    dbias = torch.zeros(d, dtype=sd, device=u.device) if delta_bias is not None else None
    gin = torch.zeros(b, g, n, dg, dtype=sd, device=u.device)
    if dlast_state is not None:
        gin += dlast_state.to(sd).view(b, g, dg, n).transpose(-1, -2)

    dt_buf, dtu_buf, dy_buf = x.buffer(T, b, d), x.buffer(T, b, d), x.buffer(T, b, d)
    ddt_buf, ddtu_buf, y_buf = x.buffer(T, b, d), x.buffer(T, b, d), x.buffer(T, b, d)
    B_buf, C_buf = x.buffer(T, b, g, n), x.buffer(T, b, g, n)
    dB_buf, dC_buf = x.buffer(T, b, g, n), x.buffer(T, b, g, n)
    decay, hs, adj, tmp = (x.buffer(T, b, g, n, dg) for _ in range(4))
    dec_t, h_t, a_t = decay.unbind(0), hs.unbind(0), adj.unbind(0)  # per-position views, made once

    # One checkpoint interval at a time, from the last: it starts at a checkpoint, so its
    # states come from one forward loop; the adjoint enters from its end and runs back
    # in one loop. No products of decays are formed (they would crawl through denormals).
    for k in reversed(range(num_checkpoints(L))):
        p0, p1 = k * T, min((k + 1) * T, L)
        l = p1 - p0
        dt_bm = x.dt(p0, p1)
        u_bm = u[..., p0:p1].to(sd)
        dy_bm = dout[..., p0:p1].to(sd)
        silu_z = sig_z = None
        if z is not None:
            z_bm = z[..., p0:p1].to(sd)
            sig_z = torch.sigmoid(z_bm)
            silu_z = z_bm * sig_z
            dy_y = dy_bm  # gradient reaching the gated output, kept for dz
            dy_bm = dy_bm * silu_z
        # time-major views of this interval, (l, b, g, 1, dg) and (l, b, g, n, 1)
        dt_b = x.channels(_into_time_major(dt_buf[:l], dt_bm))
        dtu_b = x.channels(_into_time_major(dtu_buf[:l], dt_bm * u_bm))
        dy_b = x.channels(_into_time_major(dy_buf[:l], dy_bm))
        B_b = _into_time_major(B_buf[:l], B[..., p0:p1]).unsqueeze(-1)
        C_b = _into_time_major(C_buf[:l], C[..., p0:p1]).unsqueeze(-1)
        dec, h_, a_ = decay[:l], hs[:l], adj[:l]
        h_in = ckpt[k]

        # states, from the interval's checkpoint
        torch.mul(dt_b, x.A, out=dec).exp_()
        torch.mul(dtu_b, B_b, out=h_)
        h_t[0].addcmul_(dec_t[0], h_in)
        for t in range(1, l):
            h_t[t].addcmul_(dec_t[t], h_t[t - 1])

        # adjoint g_t = dL/dh_t = dy_t C_t + decay_{t+1} g_{t+1}
        torch.mul(dy_b, C_b, out=a_)
        a_t[l - 1].add_(gin)
        for t in range(l - 2, -1, -1):
            a_t[t].addcmul_(dec_t[t + 1], a_t[t + 1])
        gin = dec_t[0] * a_t[0]

        # q = g_t * decay_t * h_{t-1}: the gradient reaching exp(dt * A)
        q = dec.mul_(a_)
        q[1:].mul_(h_[: l - 1])
        q[0].mul_(h_in)
        tmp_ = tmp[:l]
        ddt_b = x.channels(ddt_buf[:l])
        torch.sum(torch.mul(q, x.A, out=tmp_), dim=-2, keepdim=True, out=ddt_b)
        dA_acc += torch.mul(q, dt_b, out=tmp_).sum((0, 1))
        # dC_t = sum_c h_t dy_t and dB_t = sum_c g_t dt_t u_t: batched mat-vec products over
        # the channels, so no state-sized product is written and read back
        torch.matmul(h_, dy_b.transpose(-1, -2), out=dC_buf[:l].unsqueeze(-1))
        torch.matmul(a_, dtu_b.transpose(-1, -2), out=dB_buf[:l].unsqueeze(-1))
        ddtu_b = x.channels(ddtu_buf[:l])
        torch.matmul(B_b.transpose(-1, -2), a_, out=ddtu_b)
        dB[..., p0:p1] = dB_buf[:l].movedim(0, -1)
        dC[..., p0:p1] = dC_buf[:l].movedim(0, -1)

        # per-channel gradients of this interval, (b, d, l)
        ddtu_bm = ddtu_buf[:l].movedim(0, -1)
        torch.mul(ddtu_bm, dt_bm, out=du[..., p0:p1])
        ddt_bm = ddelta[..., p0:p1]
        ddt_bm.copy_(ddt_buf[:l].movedim(0, -1))
        ddt_bm.addcmul_(ddtu_bm, u_bm)
        if D is not None:
            du[..., p0:p1].addcmul_(dy_bm, x.D)
            dD += (dy_bm * u_bm).sum((0, 2))
        if delta_softplus:
            ddt_bm.mul_(x.pre_dt(p0, p1).sigmoid_())
        if dbias is not None:
            dbias += ddt_bm.sum((0, 2))
        if z is not None:
            # out = (<C, h> + D u) * silu(z); d silu(z)/dz = sig * (1 + z * (1 - sig))
            y_b = x.channels(y_buf[:l])
            torch.matmul(C_b.transpose(-1, -2), h_, out=y_b)
            y_bm = y_buf[:l].movedim(0, -1).contiguous()
            if D is not None:
                y_bm.addcmul_(u_bm, x.D)
            dsilu = torch.rsub(sig_z, 1).mul_(z_bm).add_(1).mul_(sig_z)
            torch.mul(dsilu.mul_(y_bm), dy_y, out=dz[..., p0:p1])

    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA_acc.transpose(1, 2).reshape(d, n).to(A.dtype),
        dB.to(B.dtype),
        dC.to(C.dtype),
        None if D is None else dD.to(D.dtype),
        None if z is None else dz.to(z.dtype),
        None if delta_bias is None else dbias.to(delta_bias.dtype),
    )
