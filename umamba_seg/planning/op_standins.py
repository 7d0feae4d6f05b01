"""Shape-only stand-ins while the memory model traces: the ops' shape backends, and fast norms.

The selective-scan and mLSTM backends run Triton kernels or data-dependent loops that
cannot run on meta tensors. Each op has a shape-only backend of its own (``shape`` in
:mod:`umamba_seg.ops.selective_scan` and :mod:`umamba_seg.ops.mlstm`) that returns empty
outputs plus exactly the extra tensors the real backends hand to their autograd Function
for backward; :func:`standin_ops` selects them through the ops' public resolver
(:func:`umamba_seg.ops.backend.use_backend`). The autograd Functions around the backends
stay the real ones, so the inputs they save (``u, delta, A, B, C, D, z, delta_bias``;
``q, k, v, igate, fgate``) are whatever the network really passes. Tests check each shape
backend against its real backend.

:class:`FastMetaNorms` does the same for instance norm, whose meta implementation is a slow
Python decomposition: a stand-in that saves the tensors ``native_batch_norm`` saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

from umamba_seg.ops import mlstm, selective_scan  # noqa: F401 - importing them registers their backends
from umamba_seg.ops.backend import use_backend

SHAPE_BACKEND = "shape"


@contextlib.contextmanager
def standin_ops() -> Iterator[None]:
    """Inside the block, every op runs its shape-only backend."""
    with use_backend(SHAPE_BACKEND):
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


_INPLACE_ACTIVATIONS = {"relu", "leaky_relu", "elu", "selu", "celu", "hardtanh", "relu6", "silu", "hardswish", "mish"}


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
