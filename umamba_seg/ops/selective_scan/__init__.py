"""Selective scan (Mamba-1 S6), the op every SSM layer runs on.

Replaces mamba-ssm's ``selective_scan_fn`` with the same semantics (see ``reference.py``,
the specification) and no compiled extension. One ``torch.autograd.Function`` calls a
backend that implements ``forward``/``backward`` of the interface described in
``common.py``; backends are registered with the ops' shared resolver
(:mod:`umamba_seg.ops.backend`, which also says how one is chosen):

* ``"triton"``: ``triton_kernels`` (GPU), imported lazily; ``"auto"`` picks it for CUDA tensors;
* ``"torch"``: ``torch_chunked`` (vectorised PyTorch; CPU and GPU fallback, ``"auto"``'s default);
* ``"reference"``: the sequential loop with autograd through it (tests, debugging);
* ``"shape"``: ``shape`` (empty outputs of the real shapes; planning's memory traces).

Whatever the backend, the forward saves the inputs and the states at every
``CHECKPOINT_LEN`` positions for backward, so memory use does not depend on it.
"""

from __future__ import annotations

import torch

from .. import backend as backends
from .common import CHECKPOINT_LEN, ScanArgs, check_shapes, state_dtype, takes_scan_args
from .reference import selective_scan_ref

__all__ = ["CHECKPOINT_LEN", "BACKENDS", "OP", "selective_scan", "selective_scan_ref", "triton_available"]

OP = "selective-scan"

backends.register_backend(
    OP, "triton", backends.module_loader(f"{__name__}.triton_kernels"), auto=lambda u: u.is_cuda, label="Triton"
)
backends.register_backend(OP, "torch", backends.module_loader(f"{__name__}.torch_chunked"), default=True)
backends.register_backend(OP, "reference", lambda: selective_scan_ref)
backends.register_backend(OP, "shape", backends.module_loader(f"{__name__}.shape"), computes=False)
BACKENDS = backends.available_backends(OP)


def triton_available() -> bool:
    """True when the Triton backend module imports."""
    return backends.backend_available(OP, "triton")


class SelectiveScanFn(torch.autograd.Function):
    """Autograd op over a backend's ``forward``/``backward`` (B, C already grouped)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, backend: str):
        sd = state_dtype(u.dtype)
        inputs = [u, delta, A.to(sd), B, C, D, z, delta_bias]
        inputs = [None if t is None else t.contiguous() for t in inputs]
        module = backends.backend_implementation(OP, backend)
        out, last_state, checkpoints = module.forward(*inputs, delta_softplus)
        ctx.save_for_backward(*inputs, checkpoints)
        ctx.delta_softplus = delta_softplus
        ctx.backend = backend
        ctx.A_dtype = A.dtype
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast_state):
        *inputs, checkpoints = ctx.saved_tensors
        u = inputs[0]
        if dout is None:
            dout = torch.zeros_like(u)
        module = backends.backend_implementation(OP, ctx.backend)
        grads = module.backward(
            dout.contiguous(),
            None if dlast_state is None else dlast_state.contiguous(),
            *inputs,
            ctx.delta_softplus,
            checkpoints,
        )
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = grads
        dA = dA.to(ctx.A_dtype)
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None, None


@takes_scan_args
def selective_scan(
    args: ScanArgs, return_last_state: bool = False, backend: str = "auto"
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics.

    ``u, delta, z``: ``(b, d, L)``; ``A``: ``(d, n)``; ``B, C``: ``(b, n, L)`` or grouped
    ``(b, g, n, L)``; ``D, delta_bias``: ``(d,)``. Returns ``out (b, d, L)`` in u's dtype,
    and the final state ``(b, d, n)`` (float32, float64 for float64 inputs) when
    ``return_last_state``. ``backend``: one of :data:`BACKENDS` (``"auto"``, ``"triton"``,
    ``"torch"``, ``"reference"``, ``"shape"``); inside ``ops.backend.use_backend(name)`` that
    backend runs whatever is asked here. Takes the :class:`~.common.ScanArgs` fields spread,
    then ``return_last_state`` and ``backend`` (mamba-ssm's signature plus ``backend``).
    """
    args = args.grouped()
    check_shapes(args)
    name = backends.resolve_backend(OP, backend, args.u)
    if name == "reference":
        return selective_scan_ref(*args, return_last_state)
    out, last_state = SelectiveScanFn.apply(*args, name)
    return (out, last_state) if return_last_state else out
