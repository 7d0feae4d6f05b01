"""Shape-only stand-ins for our scan ops' backends, used while the memory model traces.

The selective-scan and mLSTM backends run Triton kernels or data-dependent loops that
cannot run on meta tensors. While tracing, the backend functions are swapped for
stand-ins that return empty outputs plus exactly the extra tensors the real backends
hand to their autograd Function for backward:

* selective scan: the states every ``CHECKPOINT_LEN`` positions, ``(b, d, ceil(L/256), n)``
  in the state dtype (fp32; fp64 for fp64 inputs), see ``ops/selective_scan/common.py``;
* mLSTM (chunkwise): ``h`` (padded to whole chunks), per-position ``n``/``m``, and per
  chunk ``c_prev (dh x dh)``, ``n_prev``, ``m_prev``, in the compute dtype.

The autograd Functions around the backends stay the real ones, so the inputs they save
(``u, delta, A, B, C, D, z, delta_bias``; ``q, k, v, igate, fgate``) are whatever the
network really passes. Tests check each stand-in against its real backend.

:class:`FastMetaNorms` does the same for instance norm, whose meta implementation is a slow
Python decomposition: a stand-in that saves the tensors ``native_batch_norm`` saves.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode


def scan_forward_standin(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """``(out, last_state, checkpoints)`` with the real backends' shapes and dtypes."""
    from umamba_seg.ops.selective_scan.common import num_checkpoints, state_dtype

    b, d, length = u.shape
    n = A.shape[1]
    sd = state_dtype(u.dtype)
    out = torch.empty(b, d, length, dtype=u.dtype, device=u.device)
    last = torch.empty(b, d, n, dtype=sd, device=u.device)
    ckpt = torch.empty(b, d, num_checkpoints(length), n, dtype=sd, device=u.device)
    return out, last, ckpt


SCAN_BACKEND_STANDIN = types.SimpleNamespace(forward=scan_forward_standin)


def mlstm_forward_standin(q, k, v, igate, fgate, eps: float = 1e-6, chunk: int = 64):
    """A ``ForwardResult`` with the chunkwise backends' shapes and dtypes."""
    from umamba_seg.ops.mlstm.reference import compute_dtype
    from umamba_seg.ops.mlstm.torch_chunkwise import ForwardResult

    b, h, length, dh = q.shape
    n_chunks = -(-length // chunk)
    kw = dict(dtype=compute_dtype(q.dtype), device=q.device)
    padded = torch.empty(b, h, n_chunks, chunk, dh, **kw)
    return ForwardResult(
        h=padded.flatten(-3, -2)[..., :length, :],
        n=torch.empty(b, h, n_chunks, chunk, **kw),
        m=torch.empty(b, h, n_chunks, chunk, **kw),
        c_prev=torch.empty(b, h, n_chunks, dh, dh, **kw),
        n_prev=torch.empty(b, h, n_chunks, dh, **kw),
        m_prev=torch.empty(b, h, n_chunks + 1, **kw),
    )


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def standin_ops() -> Iterator[None]:
    """Inside the block, every scan backend is its stand-in."""
    import umamba_seg.ops.mlstm as mlstm_pkg
    import umamba_seg.ops.selective_scan as scan_pkg

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(scan_pkg, "_backend_module", lambda name: SCAN_BACKEND_STANDIN))
        stack.enter_context(_patched(scan_pkg, "_resolve_backend", lambda name, device: "torch"))
        stack.enter_context(_patched(mlstm_pkg, "mlstm_chunkwise_forward", mlstm_forward_standin))
        stack.enter_context(_patched(mlstm_pkg, "resolve_backend", lambda backend, q: "torch"))
        yield


class _InstanceNormStandin(torch.autograd.Function):
    """Instance norm on meta tensors without PyTorch's Python decomposition (the slowest op of a
    meta trace). Saves what ``native_batch_norm`` saves for it: the input, the weight repeated
    per sample, and fp32 mean and inverse std per (sample, channel)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        b, c = x.shape[:2]
        stats = torch.empty(b * c, dtype=torch.float32, device=x.device)
        w = None if weight is None else weight.repeat(b)
        ctx.save_for_backward(x, w, stats, torch.empty_like(stats))
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - traces never run backward
        raise RuntimeError("the instance-norm stand-in is for memory tracing only")


class _InplaceActivationStandin(torch.autograd.Function):
    """An in-place activation on a meta tensor: saves its result (the input's storage), as
    PyTorch's in-place activations do, without their Python meta decompositions."""

    @staticmethod
    def forward(ctx, x):
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - traces never run backward
        raise RuntimeError("the activation stand-in is for memory tracing only")


_INPLACE_ACTIVATIONS = {"relu", "leaky_relu", "elu", "selu", "celu", "hardtanh", "relu6", "silu", "hardswish",
                        "mish"}


def _inplace_activation(func, args, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    if name.endswith("_") and name[:-1] in _INPLACE_ACTIVATIONS:
        return True
    if name in _INPLACE_ACTIVATIONS:
        import inspect

        try:
            bound = inspect.signature(func).bind(*args, **kwargs)
        except (TypeError, ValueError):
            return False
        return bool(bound.arguments.get("inplace", False))
    return False


class FastMetaNorms(TorchFunctionMode):
    """Routes ``instance_norm`` and in-place activations on meta tensors to stand-ins that save
    the same tensors (PyTorch runs both through slow Python decompositions on meta)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.is_meta and _inplace_activation(func, args, kwargs):
            return _InplaceActivationStandin.apply(x)
        if getattr(func, "__name__", "") == "instance_norm":
            x = args[0]
            if isinstance(x, torch.Tensor) and x.is_meta:
                # F.instance_norm(input, running_mean, running_var, weight, bias, ...) or
                # torch.instance_norm(input, weight, bias, running_mean, ...)
                w_at, b_at = (1, 2) if func is torch.instance_norm else (3, 4)
                weight = args[w_at] if len(args) > w_at else kwargs.get("weight")
                bias = args[b_at] if len(args) > b_at else kwargs.get("bias")
                return _InstanceNormStandin.apply(x, weight, bias)
        return func(*args, **kwargs)
