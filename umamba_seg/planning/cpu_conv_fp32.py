"""Fast bf16-autocast convolutions on CPU for memory measurements.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` PyTorch runs 2D and 3D convolutions
in bf16, which on CPUs without native bf16 convolution falls back to ``slow_conv3d`` /
``slow_conv2d``: 40-70x slower than fp32 (a U-Mamba Enc forward at a 16x48x48 patch took
171 s instead of 1.8 s). Measuring what a planned 3D network saves for backward on CPU
(:func:`umamba_seg.planning.memory_model.measure_saved_bytes`) then takes many minutes.

:class:`Fp32ConvUnderCpuAutocast` intercepts ``conv2d``/``conv3d`` while CPU bf16 autocast is
on and runs them as an autograd Function that keeps autocast's observable behaviour
(inputs cast to bf16, parameter casts cached per forward, bf16 output, and exactly the
tensors the convolution saves for backward: the bf16 input and the bf16 weight) but
computes in fp32 from those bf16 values. Saved bytes are therefore identical to the real
op's; values differ only by fp32-vs-bf16 accumulation. A test checks both.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_CONVS = {torch.conv2d: 2, torch.conv3d: 3}  # F.conv2d / F.conv3d are these same builtins


def _tuple(value, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * n


class _Fp32Conv(torch.autograd.Function):
    """Convolution of bf16 tensors computed in fp32; saves (input, weight) like aten's conv."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        # aten's convolution and convolution_backward end in the same arguments: not transposed,
        # no output padding; kept once here for both directions
        ctx.geometry = (stride, padding, dilation, False, [0] * len(stride), groups)
        ctx.bias_shape = None if bias is None else list(bias.shape)
        ctx.save_for_backward(x, weight)
        with torch.autocast("cpu", enabled=False):
            out = torch.ops.aten.convolution(
                x.float(), weight.float(), None if bias is None else bias.float(), *ctx.geometry
            )
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        has_bias = ctx.bias_shape is not None
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        with torch.autocast("cpu", enabled=False):
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad.float(), x.float(), weight.float(), ctx.bias_shape, *ctx.geometry, mask
            )
        return (
            None if gx is None else gx.to(x.dtype),
            None if gw is None else gw.to(weight.dtype),
            None if gb is None else gb.to(x.dtype),
            None,
            None,
            None,
            None,
        )


class Fp32ConvUnderCpuAutocast(TorchFunctionMode):
    """While active, CPU bf16-autocast ``conv2d``/``conv3d`` calls run through :class:`_Fp32Conv`.

    Calls outside CPU bf16 autocast, on other devices, or with string padding pass through."""

    def __init__(self) -> None:
        super().__init__()
        self._cast_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _low(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or t.dtype == torch.bfloat16:
            return t
        if isinstance(t, torch.nn.Parameter) and t.requires_grad:  # autocast's weight cache
            hit = self._cast_cache.get(id(t))
            if hit is None or hit[0] is not t:
                hit = (t, t.to(torch.bfloat16))
                self._cast_cache[id(t)] = hit
            return hit[1]
        return t.to(torch.bfloat16)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        n = _CONVS.get(func)
        if n is None or not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
            return func(*args, **kwargs)
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        call = dict(zip(names, args), **kwargs)
        x = call["input"]
        if not isinstance(x, torch.Tensor) or x.device.type != "cpu" or isinstance(call.get("padding", 0), str):
            return func(*args, **kwargs)
        return _Fp32Conv.apply(
            self._low(x),
            self._low(call["weight"]),
            self._low(call.get("bias")),
            _tuple(call.get("stride", 1), n),
            _tuple(call.get("padding", 0), n),
            _tuple(call.get("dilation", 1), n),
            int(call.get("groups", 1)),
        )
