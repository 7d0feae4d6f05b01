"""Chunked, vectorised PyTorch selective scan: forward and hand-written backward.

Used on CPU and as the GPU fallback. No autograd through a loop over the sequence, no
state tensor of the whole sequence: memory stays bounded for any length.

Layout. Per-channel inputs are made time-major once, ``(Lp, b, g, 1, dg)``, and B/C
``(Lp, b, g, n, 1)``; states are ``(..., b, g, n, dg)`` with the channels innermost, so
every bulk operation runs over long contiguous rows. ``Lp`` pads the length to a
multiple of ``CHECKPOINT_LEN`` with ``dt = 0`` (decay 1, no input: the state passes
through unchanged, so the last state and the adjoint are exact).

Forward, per block of whole checkpoint intervals, viewed as ``c`` chunks of ``T``
positions: ``decay = exp(dt * A)`` and ``x = dt * u * B`` in bulk; a loop over the ``T``
positions runs ``h_t = decay_t * h_{t-1} + x_t`` for all ``c`` chunks at once from a zero
state, giving each chunk's end state; a short loop over chunks carries the true state
across chunk boundaries with the whole-chunk decay ``exp(A * sum(dt))``; the loop then
runs again from the true chunk starts, and ``y = <C, h>`` is one batched matmul. Only
decays and sums of ``dt * A`` are exponentiated; nothing is divided by a decay (long
sequences with strong decay stay finite) and no chain of products of decays is formed
(it would crawl through denormals, which are very slow on CPUs). ``T`` is picked so one
loop step touches about ``STEP_ELEMENTS`` elements.

Backward, per checkpoint interval from the last: the interval starts at a checkpoint, so
its states are recomputed by one loop; the adjoint ``g_t = dy_t C_t + decay_{t+1}
g_{t+1}`` enters from the interval's end and runs backwards by one loop; then every
gradient is a bulk product and reduction over the interval. States and accumulations
are float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from .common import CHECKPOINT_LEN, num_checkpoints, state_dtype

# Tiling knobs, tuned on a 2-core CPU. A forward block holds about BLOCK_ELEMENTS state
# elements (positions * b * d * n, whole checkpoint intervals); the chunk length T makes
# one loop step touch about STEP_ELEMENTS elements: below PyTorch's parallel grain
# (32768) the many small loop ops run without a thread barrier, while the few bulk ops
# per block use all threads. CHUNK forces T (tests).
BLOCK_ELEMENTS = 3 << 19
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
    """``(b, k, L)`` or ``(b, g, n, L)`` -> contiguous ``(Lp, b, ...)`` in ``dtype``, zero-padded."""
    out = torch.empty(padded_len, *x.shape[:-1], dtype=dtype, device=x.device)
    L = x.shape[-1]
    out[:L].copy_(x.movedim(-1, 0))
    out[L:].zero_()
    return out


def _batch_major(x: torch.Tensor, length: int) -> torch.Tensor:
    """``(Lp, b, ...)`` -> a ``(b, ..., L)`` view (drops the padding)."""
    return x[:length].movedim(0, -1)


class _Scan:
    """The time-major tensors shared by forward and backward of one call."""

    def __init__(self, u, delta, A, B, C, delta_bias, delta_softplus):
        b, d, L = u.shape
        self.b, self.d, self.L = b, d, L
        self.g, self.n = B.shape[1], A.shape[1]
        self.dg = d // self.g
        self.sd = state_dtype(u.dtype)
        self.padded = num_checkpoints(L) * CHECKPOINT_LEN
        # dt = softplus(delta + bias), time-major; the padding stays 0
        dt = _time_major(delta, self.padded, self.sd)
        if delta_bias is not None:
            dt[:L] += delta_bias.to(self.sd)
        if delta_softplus:
            torch.ops.aten.softplus.out(dt[:L], 1, 20, out=dt[:L])
        self.dt = dt
        self.dtu = _time_major(u, self.padded, self.sd).mul_(dt)
        self.B = _time_major(B, self.padded, self.sd)
        self.C = _time_major(C, self.padded, self.sd)
        # A as (g, n, dg): channels innermost, like the states
        self.A = A.to(self.sd).reshape(self.g, self.dg, self.n).transpose(1, 2).contiguous()

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        """``(Lp, b, d)`` -> ``(Lp, b, g, 1, dg)`` view."""
        return x.view(self.padded, self.b, self.g, 1, self.dg)

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """``(Lp, b, g, n)`` -> ``(Lp, b, g, n, 1)`` view."""
        return x.unsqueeze(-1)

    def buffer(self, *shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=self.sd, device=self.dt.device)


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
        # whole-chunk decay exp(A * sum(dt)): from a sum, not a chain of products that
        # would crawl through denormals
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
    s = _Scan(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, dg, padded = s.b, s.d, s.g, s.n, s.dg, s.padded
    blk, T = _tiling(b, d, n, padded)
    per_ckpt = CHECKPOINT_LEN // T
    dt, dtu, Bs, Cs = s.channels(s.dt), s.channels(s.dtu), s.states(s.B), s.states(s.C)

    y_tm = s.buffer(padded, b, g, 1, dg)
    checkpoints = s.buffer(num_checkpoints(s.L), b, g, n, dg)
    c_max = blk // T
    decay_buf, h_buf = s.buffer(c_max * T, b, g, n, dg), s.buffer(c_max * T, b, g, n, dg)
    starts_buf = s.buffer(c_max + 1, b, g, n, dg)
    h = torch.zeros(b, g, n, dg, dtype=s.sd, device=u.device)
    for p0 in range(0, padded, blk):
        p1 = min(p0 + blk, padded)
        c = (p1 - p0) // T
        shape = (c, T, b, g, n, dg)
        hs, starts = h_buf[: c * T].view(shape), starts_buf[: c + 1]
        _block_states(
            dt[p0:p1].view(c, T, b, g, 1, dg),
            dtu[p0:p1].view(c, T, b, g, 1, dg),
            Bs[p0:p1].view(c, T, b, g, n, 1),
            s.A,
            h,
            decay_buf[: c * T].view(shape),
            hs,
            starts,
        )
        torch.matmul(Cs[p0:p1].view(c, T, b, g, n, 1).transpose(-1, -2), hs, out=y_tm[p0:p1].view(c, T, b, g, 1, dg))
        k0 = p0 // CHECKPOINT_LEN
        checkpoints[k0 : k0 + c // per_ckpt] = starts[0:c:per_ckpt]
        h = starts[c].clone()

    out = torch.empty(b, d, s.L, dtype=s.sd, device=u.device)
    out.copy_(_batch_major(y_tm.view(padded, b, d), s.L))
    if D is not None:
        out.addcmul_(u.to(s.sd), D.to(s.sd)[:, None])
    if z is not None:
        out.mul_(torch.nn.functional.silu(z.to(s.sd)))
    last_state = h.transpose(-1, -2).reshape(b, d, n)
    ckpt = checkpoints.permute(1, 2, 4, 0, 3).reshape(b, d, -1, n)
    return out.to(u.dtype), last_state, ckpt


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    s = _Scan(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, g, n, dg, padded, L, sd = s.b, s.d, s.g, s.n, s.dg, s.padded, s.L, s.sd
    dt, dtu, Bs, Cs = s.channels(s.dt), s.channels(s.dtu), s.states(s.B), s.states(s.C)

    # dy: the gradient reaching y = <C, h> (+ D u), time-major
    dy_tm = _time_major(dout, padded, sd)
    sig_z = None
    if z is not None:
        sig_z = torch.sigmoid(z.to(sd))
        dy_tm[:L].mul_((z.to(sd) * sig_z).movedim(-1, 0))
    dy = s.channels(dy_tm)
    y_tm = s.buffer(padded, b, g, 1, dg) if z is not None else None
    # checkpoints (b, d, k, n) -> (k, b, g, n, dg)
    ckpt = checkpoints.to(sd).view(b, g, dg, -1, n).permute(3, 0, 1, 4, 2).contiguous()

    ddtu_tm, ddt_tm = s.buffer(padded, b, g, 1, dg), s.buffer(padded, b, g, 1, dg)
    dB_tm, dC_tm = s.buffer(padded, b, g, n, 1), s.buffer(padded, b, g, n, 1)
    dA_acc = torch.zeros(g, n, dg, dtype=sd, device=u.device)
    gin = torch.zeros(b, g, n, dg, dtype=sd, device=u.device)
    if dlast_state is not None:
        gin += dlast_state.to(sd).view(b, g, dg, n).transpose(-1, -2)

    # One checkpoint interval at a time, from the last: it starts at a checkpoint, so its
    # states come from one forward loop; the adjoint enters from its end and runs back
    # in one loop. No products of decays are formed (they would underflow slowly through
    # denormals, which are very slow on CPUs).
    T = CHECKPOINT_LEN
    decay, hs, adj, tmp = (s.buffer(T, b, g, n, dg) for _ in range(4))
    decay_t, hs_t, adj_t = decay.unbind(0), hs.unbind(0), adj.unbind(0)
    for k in reversed(range(padded // T)):
        p0, p1 = k * T, (k + 1) * T
        dt_b, dtu_b, dy_b, B_b, C_b = dt[p0:p1], dtu[p0:p1], dy[p0:p1], Bs[p0:p1], Cs[p0:p1]
        h_in = ckpt[k]
        torch.mul(dt_b, s.A, out=decay).exp_()
        torch.mul(dtu_b, B_b, out=hs)
        hs_t[0].addcmul_(decay_t[0], h_in)
        for t in range(1, T):
            hs_t[t].addcmul_(decay_t[t], hs_t[t - 1])
        if y_tm is not None:
            torch.matmul(C_b.transpose(-1, -2), hs, out=y_tm[p0:p1])

        # adjoint g_t = dL/dh_t = dy_t C_t + decay_{t+1} g_{t+1}
        torch.mul(dy_b, C_b, out=adj)
        adj_t[T - 1].add_(gin)
        for t in range(T - 2, -1, -1):
            adj_t[t].addcmul_(decay_t[t + 1], adj_t[t + 1])
        gin = decay_t[0] * adj_t[0]

        # q = g_t * decay_t * h_{t-1}: the gradient reaching exp(dt * A)
        q = decay.mul_(adj)
        q[1:].mul_(hs[: T - 1])
        q[0].mul_(h_in)
        torch.sum(torch.mul(q, s.A, out=tmp), dim=-2, keepdim=True, out=ddt_tm[p0:p1])
        dA_acc += torch.mul(q, dt_b, out=tmp).sum((0, 1))
        torch.sum(torch.mul(hs, dy_b, out=tmp), dim=-1, keepdim=True, out=dC_tm[p0:p1])
        torch.sum(torch.mul(adj, dtu_b, out=tmp), dim=-1, keepdim=True, out=dB_tm[p0:p1])
        torch.matmul(B_b.transpose(-1, -2), adj, out=ddtu_tm[p0:p1])

    # per-channel gradients, back in (b, d, L)
    ddtu = _batch_major(ddtu_tm.view(padded, b, d), L)
    du = torch.empty(b, d, L, dtype=sd, device=u.device)
    torch.mul(ddtu, _batch_major(s.dt, L), out=du)
    ddt = _batch_major(ddt_tm.view(padded, b, d), L).contiguous()
    ddt.addcmul_(ddtu, u.to(sd))
    dy_bl = _batch_major(dy_tm, L)
    dD = None
    if D is not None:
        du.addcmul_(dy_bl, D.to(sd)[:, None])
        dD = torch.einsum("bdl,bdl->d", dy_bl, u.to(sd)).to(D.dtype)
    dz = None
    if z is not None:
        y = _batch_major(y_tm.view(padded, b, d), L).contiguous()
        if D is not None:
            y.addcmul_(u.to(sd), D.to(sd)[:, None])
        # d silu(z)/dz = sig * (1 + z * (1 - sig))
        dsilu = torch.rsub(sig_z, 1).mul_(z.to(sd)).add_(1).mul_(sig_z)
        dz = dsilu.mul_(y).mul_(dout.to(sd)).to(z.dtype)
    if delta_softplus:
        pre = delta.to(sd, copy=True)
        if delta_bias is not None:
            pre += delta_bias.to(sd)[:, None]
        ddt.mul_(pre.sigmoid_())
    ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    dB = _batch_major(dB_tm.view(padded, b, g, n), L)
    dC = _batch_major(dC_tm.view(padded, b, g, n), L)
    return (
        du.to(u.dtype),
        ddt.to(delta.dtype),
        dA_acc.transpose(1, 2).reshape(d, n).to(A.dtype),
        dB.to(B.dtype, memory_format=torch.contiguous_format),
        dC.to(C.dtype, memory_format=torch.contiguous_format),
        dD,
        dz,
        ddelta_bias,
    )
