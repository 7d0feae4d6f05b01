"""PyTorch autocast's casting policy, replayed on meta tensors.

The memory model runs networks on the meta device (shapes only, C++-fast), but autocast
only casts CPU/CUDA tensors, and ``torch.autocast(device_type="meta")`` does not exist.
:class:`AmpEmulation` is a ``TorchFunctionMode`` that applies autocast's op lists to
meta tensors, so the dtypes (hence the bytes) of what autograd saves are those a real
AMP step produces on the emulated device:

* ops on the lower-precision list run on inputs cast to fp16/bf16 (the casts of
  parameters are cached per forward, as autocast's weight cache does);
* ops on the fp32 list run on inputs cast to fp32;
* everything else runs on its inputs unchanged (type promotion decides).

The lists are autocast's for CUDA and CPU (``aten/src/ATen/autocast_mode.cpp``), reduced
to the ops our networks can reach. While tracing, ``torch.autocast`` is replaced by a
context manager that turns the emulation on or off (networks use
``torch.autocast(device_type=x.device.type, enabled=False)`` for fp32 token layers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

_LOWER_COMMON = {
    "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "_convolution", "convolution", "prelu", "addmm", "addbmm", "baddbmm", "bmm", "mm", "matmul", "__matmul__",
    "__rmatmul__", "linear", "linalg_vecdot", "einsum", "scaled_dot_product_attention",
}  # fmt: skip
LOWER_PRECISION_OPS = {
    "cuda": _LOWER_COMMON
    | {
        "addmv",
        "addr",
        "mv",
        "chain_matmul",
        "linalg_multi_dot",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
    },
    "cpu": set(_LOWER_COMMON),
}
FP32_OPS = {
    "cuda": {
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
        "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm", "group_norm", "frobenius_norm",
        "nuclear_norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
        "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
        "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
        "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm",
        "logsumexp", "softmax", "log_softmax", "cumsum", "cumprod", "prod", "sum", "norm", "rms_norm",
    },
    "cpu": {
        "avg_pool3d", "binary_cross_entropy", "grid_sampler", "polar", "prod", "quantile", "nanquantile", "stft",
        "cdist", "trace", "view_as_complex", "cholesky", "inverse", "pinverse", "max_pool3d", "max_unpool2d",
        "max_unpool3d", "adaptive_avg_pool3d", "reflection_pad1d", "reflection_pad2d", "replication_pad1d",
        "replication_pad2d", "replication_pad3d", "mse_loss", "cosine_embedding_loss", "nll_loss",
        "hinge_embedding_loss", "poisson_nll_loss", "smooth_l1_loss", "cross_entropy", "l1_loss", "huber_loss",
        "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "ctc_loss",
        "kl_div", "multilabel_margin_loss", "binary_cross_entropy_with_logits",
    },
}  # fmt: skip


def _op_name(func) -> str:
    return getattr(func, "__name__", "")  # in-place variants (``exp_``) are not autocast, as in PyTorch


class AmpEmulation(TorchFunctionMode):
    """Autocast for ``device_type``'s policy at ``dtype``, on whatever device the tensors are."""

    def __init__(self, device_type: str = "cuda", dtype: torch.dtype = torch.float16, enabled: bool = True):
        super().__init__()
        if device_type not in LOWER_PRECISION_OPS:
            raise ValueError(f"no autocast policy for device type {device_type!r}")
        self.lower = LOWER_PRECISION_OPS[device_type]
        self.fp32 = FP32_OPS[device_type]
        self.dtype = dtype
        self.enabled = [enabled]
        self.weight_cache: dict[int, torch.Tensor] = {}
        self.weight_copy_keys: set[int] = set()  # storages of cached parameter casts

    def _cast(self, target: torch.dtype):
        def cast(x):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype in (torch.float64, target):
                return x
            if x.is_leaf and x.requires_grad:  # parameters: cast once per forward
                hit = self.weight_cache.get(id(x))
                if hit is None or hit.dtype != target:
                    hit = x.to(target)
                    self.weight_cache[id(x)] = hit
                    self.weight_copy_keys.add(hit.untyped_storage()._cdata)
                return hit
            return x.to(target)

        return cast

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.enabled[-1]:
            name = _op_name(func)
            if name in self.lower:
                cast = self._cast(self.dtype)
                args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
            elif name in self.fp32:
                cast = self._cast(torch.float32)
                args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def switched(self, enabled: bool) -> Iterator[None]:
        self.enabled.append(bool(enabled))
        try:
            yield
        finally:
            self.enabled.pop()


@contextlib.contextmanager
def emulated_autocast(device_type: str = "cuda", dtype: torch.dtype | None = torch.float16) -> Iterator[AmpEmulation]:
    """Run the block under :class:`AmpEmulation` (off when ``dtype`` is None), with
    ``torch.autocast``/``torch.amp.autocast`` redirected to it."""
    import torch.amp

    emulation = AmpEmulation(device_type, dtype or torch.float16, enabled=dtype is not None)

    class _Autocast:  # the stand-in for torch.autocast while tracing
        def __init__(self, device_type: str = "", dtype=None, enabled: bool = True, cache_enabled=None):
            self._enabled = enabled
            self._ctx = None

        def __enter__(self):
            self._ctx = emulation.switched(self._enabled)
            self._ctx.__enter__()
            return self

        def __exit__(self, *exc):
            return self._ctx.__exit__(*exc)

        def __call__(self, fn):
            def wrapped(*a, **k):
                with self:
                    return fn(*a, **k)

            return wrapped

    saved = (torch.autocast, torch.amp.autocast)
    torch.autocast = torch.amp.autocast = _Autocast  # type: ignore[assignment,misc]
    try:
        with emulation:
            yield emulation
    finally:
        torch.autocast, torch.amp.autocast = saved  # type: ignore[misc]
