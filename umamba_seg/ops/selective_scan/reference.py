"""The selective scan (Mamba-1 S6) written as a plain sequential loop: the specification.

Every faster backend is tested against this file. It favours readability over speed
(one Python iteration per position) and uses autograd through the loop for gradients.

Semantics, for each batch ``b``, channel ``c`` (group ``g = c // (d // groups)``),
state index ``k`` and position ``t``::

    dt[t]   = softplus(delta[t] + delta_bias)  if delta_softplus  else  delta[t] + delta_bias
    h[t, k] = exp(dt[t] * A[c, k]) * h[t-1, k] + dt[t] * B[g, k, t] * u[t]       (h[-1] = 0)
    y[t]    = sum_k C[g, k, t] * h[t, k] + D[c] * u[t]
    out[t]  = y[t] * silu(z[t])  if z is given  else  y[t]

The state and all accumulations are float32 (float64 for float64 inputs); ``out`` has
u's dtype. ``forward``/``backward`` expose the backend interface of this package so the
reference can stand in for any backend in tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import (
    CHECKPOINT_LEN,
    ScanArgs,
    compute_dt,
    expand_groups,
    num_checkpoints,
    state_dtype,
    takes_scan_args,
    to_grouped,
)


def _scan(args: ScanArgs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequential scan (B/C variable or grouped); returns (out, last_state, checkpoints)."""
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = args
    sd = state_dtype(u.dtype)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    uf = u.to(sd)
    dt = compute_dt(delta, delta_bias, delta_softplus, sd)
    Af = A.to(sd)
    Bf = expand_groups(to_grouped(B), dim).to(sd)  # (b, d, n, L)
    Cf = expand_groups(to_grouped(C), dim).to(sd)

    # unbind once: indexing one position per step would make autograd's backward quadratic in L
    dt_t, u_t, B_t, C_t = dt.unbind(-1), uf.unbind(-1), Bf.unbind(-1), Cf.unbind(-1)
    h = uf.new_zeros(batch, dim, dstate)
    checkpoints = []
    ys = []
    for t in range(length):
        if t % CHECKPOINT_LEN == 0:
            checkpoints.append(h)
        decay = torch.exp(dt_t[t][:, :, None] * Af)
        h = decay * h + (dt_t[t] * u_t[t])[:, :, None] * B_t[t]
        ys.append((h * C_t[t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(sd)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(sd))
    ckpt = torch.stack(checkpoints, dim=2)
    assert ckpt.shape[2] == num_checkpoints(length)
    return y.to(u.dtype), h, ckpt


@takes_scan_args
def selective_scan_ref(
    args: ScanArgs, return_last_state: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference selective scan; B/C may be ``(b, n, L)`` or grouped ``(b, g, n, L)``.

    Differentiable through autograd. Returns ``out`` or ``(out, last_state)``.
    """
    out, last, _ = _scan(args)
    return (out, last) if return_last_state else out


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Backend interface: ``(out, last_state, checkpoints)`` without autograd."""
    with torch.no_grad():
        return _scan(ScanArgs(u, delta, A, B, C, D, z, delta_bias, delta_softplus))


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: gradients by autograd through the sequential loop.

    ``checkpoints`` is accepted for interface parity and unused (the loop recomputes).
    """
    inputs = [u, delta, A, B, C, D, z, delta_bias]
    leaves = [None if t is None else t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        out, last, _ = _scan(ScanArgs(*leaves, delta_softplus))
        outputs, grads = [out], [dout]
        if dlast_state is not None:
            outputs.append(last)
            grads.append(dlast_state)
        wanted = [t for t in leaves if t is not None]
        got = iter(torch.autograd.grad(outputs, wanted, grads, allow_unused=True))
    result = []
    for leaf in leaves:
        if leaf is None:
            result.append(None)
            continue
        g = next(got)
        result.append(torch.zeros_like(leaf) if g is None else g)
    return tuple(result)
