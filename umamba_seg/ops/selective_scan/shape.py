"""Shape-only selective-scan backend: what the real backends return, without computing it.

Planning traces a network's memory on the meta device (shapes and dtypes, no data), where
the Triton kernels and the torch backend's sequential loops cannot run. This backend has
the same interface as ``torch_chunked``/``triton_kernels`` and returns empty tensors of the
shapes and dtypes they return:

* forward: ``out (b, d, L)`` in u's dtype, ``last_state (b, d, n)`` and the checkpoints
  ``(b, d, ceil(L / CHECKPOINT_LEN), n)`` in the state dtype (see ``common.py``); the
  checkpoints are what the autograd op saves for backward besides its inputs, so a trace
  counts the bytes a real training step keeps;
* backward: one gradient per input, each shaped and typed as that input (None for absent
  optional inputs), as the real backends return them.

Selected with ``use_backend("shape")`` (:mod:`umamba_seg.ops.backend`) or ``backend="shape"``;
``"auto"`` never picks it.
"""

from __future__ import annotations

import torch

from .common import num_checkpoints, state_dtype


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Backend interface: empty ``(out, last_state, checkpoints)`` with the real shapes and dtypes."""
    b, d, length = u.shape
    n = A.shape[1]
    sd = state_dtype(u.dtype)
    out = torch.empty(b, d, length, dtype=u.dtype, device=u.device)
    last_state = torch.empty(b, d, n, dtype=sd, device=u.device)
    checkpoints = torch.empty(b, d, num_checkpoints(length), n, dtype=sd, device=u.device)
    return out, last_state, checkpoints


def backward(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, checkpoints):
    """Backend interface: empty ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)``."""
    return tuple(None if t is None else torch.empty_like(t) for t in (u, delta, A, B, C, D, z, delta_bias))
