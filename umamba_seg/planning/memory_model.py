"""Bytes of activations a network keeps for backward, traced on the meta device.

The planner needs, for a candidate patch and batch size, the memory a training step's
forward pass leaves on the GPU for backward. nnU-Net's proxy counts conv feature maps
only, so token mixers (projections, conv1d output, dt/B/C, scan checkpoints, cross-scan
copies, mLSTM chunk states) never enter it. Here the network itself runs on meta
tensors (shapes and dtypes, no data) and every tensor autograd saves is caught by
``torch.autograd.graph.saved_tensors_hooks``:

* autocast's casting policy is replayed by :mod:`amp_emulation` (CUDA's by default: conv
  and linear outputs in fp16/bf16, layer norms and softplus in fp32, fp32 token layers
  where a network turns autocast off), so bytes are those a GPU stores under AMP;
  ``device_type="cpu"`` replays CPU autocast (the calibration against real CPU runs);
* bytes are counted once per storage (views and repeated saves are free), parameters
  excluded; a saved tensor counts as *token mixer* when it is saved inside a
  :class:`~umamba_seg.nn.token_mixer.TokenMixer` (Mamba, cross-scan, ToM, ViL and the token
  layers around them), as *conv* otherwise; cached casts of parameters are counted apart
  (they do not grow with the batch);
* the scan ops run their shape-only backends (:mod:`op_standins`, selected through the ops'
  backend resolver), which save the same checkpoints; their autograd Functions stay the real ones;
* networks are built by nnunetv2's ``get_network_from_plans`` (after the plans allow-list
  check), with large factory tensors on the meta device (no allocation, no init cost) and
  small ones on the CPU (constructors may call ``tolist()`` on e.g. a drop-path schedule),
  then moved to meta.

The saved bytes are linear in the batch (an intercept: copies a forward derives from
parameters), so traces at batches 2 and 3 give every batch size (:meth:`MemoryEstimate.at_batch`).
Not batch 1: with a batch of one, ``(1, d, L)`` views are often already contiguous, so
``.contiguous()`` copies that a real batch makes are missed (U-Mamba Enc came out 6% low
scaled from batch 1). :func:`measure_saved_bytes`
counts the same way on real tensors; the calibration test compares the two. Results are
cached per (network, kwargs, patch, AMP policy).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn
from torch.overrides import TorchFunctionMode

from umamba_seg.architectures.plans_allowlist import check_architecture
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.planning.amp_emulation import emulated_autocast
from umamba_seg.planning.cpu_conv_fp32 import Fp32ConvUnderCpuAutocast
from umamba_seg.planning.op_standins import FastMetaNorms, standin_ops

__all__ = [
    "MemoryEstimate",
    "ActivationCounter",
    "build_network",
    "estimate_memory",
    "is_token_mixer",
    "measure_saved_bytes",
    "trace_saved_bytes",
]

# factory functions whose tensors stay on the CPU whatever their size (schedules like drop-path rates)
_ALWAYS_CPU = {torch.linspace, torch.logspace, torch.tensor, torch.as_tensor}
_SIZED = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.rand,
    torch.randn,
    torch.full,
    torch.randint,
    torch.arange,
    torch.empty_strided,
}
SMALL_NUMEL = 1024  # factory tensors up to this size are built for real on the CPU


@dataclass(frozen=True)
class MemoryEstimate:
    """Activation bytes of one training-mode forward pass at ``batch`` samples.

    The ``*_per_sample`` fields say how each part grows per sample; the rest of a part does
    not depend on the batch (copies a forward derives from parameters: autocast's weight
    casts, explicit ``weight.to(dtype)``, ``A = -exp(A_log)``, reshaped conv kernels).
    """

    conv_bytes: int  # saved for backward outside token mixers (convs, norms, skips, heads, input)
    mixer_bytes: int  # saved for backward inside token mixers
    output_bytes: int  # network outputs (logits kept for the loss) not already saved
    param_cast_bytes: int  # saved low-precision copies of parameters (autocast's weight cache)
    n_parameters: int
    batch: int
    conv_per_sample: float | None = None  # None: proportional to the batch
    mixer_per_sample: float | None = None
    output_per_sample: float | None = None

    @property
    def saved_bytes(self) -> int:
        """Bytes saved for backward (what the calibration measures)."""
        return self.conv_bytes + self.mixer_bytes + self.param_cast_bytes

    @property
    def activation_bytes(self) -> int:
        """Saved bytes plus the outputs: what a training step holds between forward and backward."""
        return self.saved_bytes + self.output_bytes

    def _slopes(self) -> tuple[float, float, float]:
        def slope(value: int, per: float | None) -> float:
            return value / self.batch if per is None else per

        return (
            slope(self.conv_bytes, self.conv_per_sample),
            slope(self.mixer_bytes, self.mixer_per_sample),
            slope(self.output_bytes, self.output_per_sample),
        )

    @property
    def per_sample_bytes(self) -> float:
        """Bytes each additional sample adds."""
        return sum(self._slopes())

    @property
    def batch_independent_bytes(self) -> float:
        """Activation bytes at a batch of zero (the intercept of the linear model)."""
        return self.activation_bytes - self.batch * self.per_sample_bytes

    def at_batch(self, batch: int) -> MemoryEstimate:
        """The same network and patch at another batch size."""
        c, m, o = self._slopes()
        d = batch - self.batch
        return replace(
            self,
            conv_bytes=round(self.conv_bytes + d * c),
            mixer_bytes=round(self.mixer_bytes + d * m),
            output_bytes=round(self.output_bytes + d * o),
            batch=batch,
            conv_per_sample=c,
            mixer_per_sample=m,
            output_per_sample=o,
        )

    @classmethod
    def linear(cls, a: MemoryEstimate, b: MemoryEstimate) -> MemoryEstimate:
        """``a`` with per-sample slopes fitted through traces ``a`` and ``b`` at two batch sizes."""
        n = b.batch - a.batch
        return replace(
            a,
            conv_per_sample=(b.conv_bytes - a.conv_bytes) / n,
            mixer_per_sample=(b.mixer_bytes - a.mixer_bytes) / n,
            output_per_sample=(b.output_bytes - a.output_bytes) / n,
        )


def is_token_mixer(module: nn.Module) -> bool:
    """True for the sequence-mixing layers of :mod:`umamba_seg.nn` (Mamba, cross-scan, ToM, ViL,
    and the token layers and blocks around them): instances of :class:`TokenMixer`."""
    return isinstance(module, TokenMixer)


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    try:
        s = t.untyped_storage()
        return s._cdata, s.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. sparse)
        return id(t), t.numel() * t.element_size()


class ActivationCounter:
    """Counts bytes saved for backward while :meth:`active`: once per storage, parameters
    excluded, split into conv and token-mixer parts by the module that saved them."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.param_keys = {_storage_key(p)[0] for p in model.parameters()}
        self.seen: dict[int, tuple[int, bool]] = {}  # storage -> (bytes, saved inside a token mixer)
        self._depth = 0
        self._keep: list[torch.Tensor] = []  # every saved tensor, alive so storages are not reused

    def _pack(self, t: torch.Tensor) -> int:
        key, nbytes = _storage_key(t)
        if key not in self.param_keys and key not in self.seen:
            self.seen[key] = (nbytes, self._depth > 0)
        # The graph gets an index, not the tensor: a pack hook returning a tensor the node itself
        # produced makes a tensor -> grad_fn -> tensor cycle through C++ that Python's collector
        # cannot see, so every measured forward's activations would leak.
        self._keep.append(t)
        return len(self._keep) - 1

    def _unpack(self, index: int) -> torch.Tensor:
        return self._keep[index]

    def release(self) -> None:
        """Drop the saved tensors (the totals stay; backward through the counted graph is no
        longer possible): a measured forward can hold gigabytes."""
        self._keep.clear()

    def _enter(self, module, args) -> None:
        self._depth += 1

    def _leave(self, module, args, output) -> None:
        self._depth -= 1

    @contextlib.contextmanager
    def active(self) -> Iterator[ActivationCounter]:
        mixers = [m for m in self.model.modules() if is_token_mixer(m)]
        hooks = [m.register_forward_pre_hook(self._enter) for m in mixers]
        hooks += [m.register_forward_hook(self._leave, always_call=True) for m in mixers]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield self
        finally:
            for h in hooks:
                h.remove()

    def estimate(self, outputs, param_cast_keys: set[int], n_parameters: int, batch: int) -> MemoryEstimate:
        """Totals so far, plus the network ``outputs`` not already saved."""
        out_bytes = 0
        for t in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            key, nbytes = _storage_key(t)
            if key not in self.seen and key not in self.param_keys:
                self.seen[key] = (nbytes, False)
                out_bytes += nbytes
        casts = sum(b for k, (b, _) in self.seen.items() if k in param_cast_keys)
        conv = sum(b for k, (b, mixer) in self.seen.items() if not mixer and k not in param_cast_keys)
        mixer = sum(b for k, (b, m) in self.seen.items() if m and k not in param_cast_keys)
        return MemoryEstimate(
            conv_bytes=conv - out_bytes,
            mixer_bytes=mixer,
            output_bytes=out_bytes,
            param_cast_bytes=casts,
            n_parameters=n_parameters,
            batch=batch,
        )


# --------------------------------------------------------------------------- building


_KEEP_INPLACE = {"requires_grad_", "resize_", "set_", "share_memory_"}


class _LazyFactories(TorchFunctionMode):
    """Factory calls without a device: large tensors on meta, small ones on the CPU. In-place
    initialisation of meta tensors (``normal_``, ``uniform_``, ...) is skipped: there is no data
    to fill, and PyTorch's meta versions of random fills are slow Python decompositions."""

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if (
            name.endswith("_")
            and not name.startswith("__")
            and name not in _KEEP_INPLACE
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].is_meta
        ):
            return args[0]
        if kwargs.get("device") is None and (func in _SIZED or func in _ALWAYS_CPU):
            small = func in _ALWAYS_CPU or _requested_numel(func, args, kwargs) <= SMALL_NUMEL
            kwargs["device"] = "cpu" if small else "meta"
        return func(*args, **kwargs)


def _requested_numel(func, args, kwargs) -> int:
    try:
        if func is torch.arange:  # arange(end) / arange(start, end[, step])
            nums = [float(a) for a in args if isinstance(a, (int, float))]
            start, end, step = (0.0, nums[0], 1.0) if len(nums) == 1 else (nums + [1.0])[:3]
            return int(math.ceil((end - start) / step))
        if func is torch.randint:  # randint(high, size) / randint(low, high, size)
            size = kwargs.get("size", args[-1] if args else ())
        elif args and isinstance(args[0], (tuple, list, torch.Size)):
            size = args[0]
        else:
            size = kwargs.get("size", tuple(a for a in args if isinstance(a, int)))
        return math.prod(int(s) for s in size)
    except (TypeError, ValueError, IndexError):
        return SMALL_NUMEL + 1


def build_network(
    network_class_name: str,
    arch_kwargs: dict,
    requires_import: Sequence[str],
    input_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
    lazy: bool = False,
) -> nn.Module:
    """The network of a plans ``architecture`` block, built by nnunetv2's ``get_network_from_plans``
    as the trainer builds it; ``lazy`` puts it on the meta device (and skips the weight init,
    which has no data to fill there). The names are checked against the plans allow-list
    before anything is imported."""
    block = {
        "network_class_name": network_class_name,
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": list(requires_import),
    }
    check_architecture(block, "plans architecture block")
    # imported before the lazy context: tensors a module makes at import time must stay real
    importlib.import_module(network_class_name.rsplit(".", 1)[0])
    ctx = _LazyFactories() if lazy else contextlib.nullcontext()
    with ctx:
        model = get_network_from_plans(
            network_class_name,
            arch_kwargs,
            list(requires_import),
            input_channels,
            num_classes,
            allow_init=not lazy,
            deep_supervision=deep_supervision,
        )
    return model.to("meta") if lazy else model


def _set_deep_supervision(model: nn.Module, enabled: bool) -> None:
    decoder = getattr(model, "decoder", None)
    if decoder is not None and hasattr(decoder, "deep_supervision"):
        decoder.deep_supervision = enabled


def trace_saved_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    device_type: str = "cuda",
    amp_dtype: torch.dtype | None = torch.float16,
) -> MemoryEstimate:
    """Trace one training-mode forward of a meta-device ``model`` on an input of ``input_shape``
    = (batch, channels, *patch) under ``device_type``'s AMP policy (none if ``amp_dtype`` is None)."""
    model.train()
    _set_deep_supervision(model, True)
    x = torch.empty(*input_shape, device="meta")
    counter = ActivationCounter(model)
    with standin_ops(), emulated_autocast(device_type, amp_dtype) as amp, FastMetaNorms(), counter.active():
        out = model(x)
    return counter.estimate(out, amp.weight_copy_keys, sum(p.numel() for p in model.parameters()), int(input_shape[0]))


def measure_saved_bytes(
    model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None = torch.bfloat16, fast_cpu_conv: bool = True
) -> MemoryEstimate:
    """Run a real training-mode forward of ``model`` on ``x`` (autocast at ``amp_dtype`` on
    x's device) and count what it saves for backward the same way as :func:`trace_saved_bytes`
    (parameter casts are not told apart here: they are in ``conv_bytes``).

    ``fast_cpu_conv``: under CPU bf16 autocast, 2D/3D convolutions compute in fp32 from their
    bf16 inputs (:mod:`cpu_conv_fp32`); they save the same tensors as the real bf16 op, which
    is 40-70x slower on CPUs without native bf16 convolution."""
    model.train()
    _set_deep_supervision(model, True)
    counter = ActivationCounter(model)
    amp = torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    convs = Fp32ConvUnderCpuAutocast() if fast_cpu_conv else contextlib.nullcontext()
    with amp, convs, counter.active():
        out = model(x)
    est = counter.estimate(out, set(), sum(p.numel() for p in model.parameters()), x.shape[0])
    del out
    counter.release()
    return est


@lru_cache(maxsize=4096)
def _estimate_cached(
    network_class_name: str,
    kwargs_json: str,
    requires_import: tuple[str, ...],
    input_channels: int,
    num_classes: int,
    patch: tuple[int, ...],
    batch: int,
    device_type: str,
    amp_dtype: str,
) -> MemoryEstimate:
    model = build_network(
        network_class_name,
        json.loads(kwargs_json),
        requires_import,
        input_channels,
        num_classes,
        deep_supervision=True,
        lazy=True,
    )
    dtype = None if amp_dtype == "none" else getattr(torch, amp_dtype)
    return trace_saved_bytes(model, (batch, input_channels, *patch), device_type, dtype)


def estimate_memory(
    architecture: dict,
    patch_size: Sequence[int],
    batch_size: int,
    input_channels: int,
    num_classes: int,
    device_type: str = "cuda",
    amp_dtype: str = "float16",
    traced_batch: int | None = None,
) -> MemoryEstimate:
    """Activation bytes of a plans ``architecture`` block at ``patch_size`` x ``batch_size`` under
    ``device_type``'s AMP (``amp_dtype``: "float16", "bfloat16" or "none"); cached.

    Traced at batches 2 and 3 (the bytes are exactly linear in the batch from 2 on; a batch of
    one is avoided because ``(1, d, L)`` views are often already contiguous, so copies a real
    batch makes would be missed) and extrapolated; ``traced_batch`` traces that batch alone."""
    kwargs_json = json.dumps(architecture["arch_kwargs"], sort_keys=True, default=_jsonable)
    key = (
        architecture["network_class_name"],
        kwargs_json,
        tuple(architecture.get("_kw_requires_import", ())),
        int(input_channels),
        int(num_classes),
        tuple(int(p) for p in patch_size),
    )
    if traced_batch is not None:
        est = _estimate_cached(*key, int(traced_batch), device_type, amp_dtype)
    else:
        est = MemoryEstimate.linear(
            _estimate_cached(*key, 2, device_type, amp_dtype), _estimate_cached(*key, 3, device_type, amp_dtype)
        )
    return est if est.batch == batch_size else est.at_batch(int(batch_size))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__name__}"
    raise TypeError(f"cannot serialise {obj!r}")
