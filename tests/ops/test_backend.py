"""The ops' shared backend resolver, and the shape-only backends of the selective scan and the mLSTM."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import umamba_seg.ops.backend as backends
import umamba_seg.ops.mlstm as mlstm_pkg
import umamba_seg.ops.selective_scan as scan_pkg
from umamba_seg.errors import UserInputError
from umamba_seg.ops.mlstm import mlstm
from umamba_seg.ops.selective_scan import selective_scan

OPS = (scan_pkg.OP, mlstm_pkg.OP)
# aten ops that only allocate, alias or reshape: a backend that calls nothing else computes no value
NON_COMPUTING = {
    "empty",
    "empty_like",
    "empty_strided",
    "detach",
    "alias",
    "view",
    "_unsafe_view",
    "slice",
    "select",
    "unsqueeze",
    "squeeze",
    "expand",
    "permute",
    "transpose",
    "t",
    "as_strided",
    "split",
    "unbind",
}


class _AtenOps(TorchDispatchMode):
    """Records the name of every aten op that runs inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _scan_inputs(device: str = "cpu") -> dict:
    gen = torch.Generator().manual_seed(0)
    b, d, n, g, L = 2, 8, 4, 2, 600  # three checkpoint intervals, grouped B/C

    def r(*shape):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_()

    return {
        "u": r(b, d, L),
        "delta": r(b, d, L),
        "A": (-r(d, n).detach().abs()).requires_grad_(),
        "B": r(b, g, n, L),
        "C": r(b, g, n, L),
        "D": r(d),
        "z": r(b, d, L),
        "delta_bias": r(d),
    }


def _mlstm_inputs(device: str = "cpu") -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    b, h, L, dh = 1, 2, 100, 8  # two chunks, the last one ragged
    return [
        torch.randn(*shape, generator=gen).to(device).requires_grad_()
        for shape in ((b, h, L, dh),) * 3 + ((b, h, L),) * 2
    ]


def _run_scan(inputs: dict, backend: str) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Forward and backward; the output gradient is left empty (no values: a fill would compute)."""
    out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
    grads = torch.autograd.grad(out, list(inputs.values()), torch.empty_like(out))
    return [out, last], grads


def _run_mlstm(inputs: list[torch.Tensor], backend: str) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    h = mlstm(*inputs, backend=backend, chunk=64)
    return [h], torch.autograd.grad(h, inputs, torch.empty_like(h))


def _layout(tensors) -> list[tuple[tuple[int, ...], torch.dtype]]:
    return [(tuple(t.shape), t.dtype) for t in tensors]


# --------------------------------------------------------------------------- selection


def test_both_ops_register_the_same_backend_names():
    for op in OPS:
        assert backends.available_backends(op) == ("auto", "triton", "torch", "reference", "shape")
    assert {scan_pkg.OP, mlstm_pkg.OP} <= set(backends.registered_ops())
    assert scan_pkg.BACKENDS == backends.available_backends(scan_pkg.OP)


def test_auto_picks_by_device_and_dtype():
    cpu = torch.zeros(1)
    assert backends.resolve_backend(scan_pkg.OP, "auto", cpu) == "torch"
    assert backends.resolve_backend(mlstm_pkg.OP, "auto", cpu) == "torch"
    if backends.backend_available(scan_pkg.OP, "triton"):  # triton imports here: CUDA inputs get it
        assert backends.resolve_backend(scan_pkg.OP, "auto", SimpleNamespace(is_cuda=True)) == "triton"
    if backends.backend_available(mlstm_pkg.OP, "triton"):
        cuda32 = SimpleNamespace(is_cuda=True, dtype=torch.float32)
        assert backends.resolve_backend(mlstm_pkg.OP, "auto", cuda32) == "triton"
        cuda64 = SimpleNamespace(is_cuda=True, dtype=torch.float64)
        assert backends.resolve_backend(mlstm_pkg.OP, "auto", cuda64) == "torch"  # no float64 kernels
    assert backends.resolve_backend(scan_pkg.OP, "reference", cpu) == "reference"


def test_use_backend_overrides_every_request_and_nests():
    cpu = torch.zeros(1)
    assert backends.forced_backend() is None
    with backends.use_backend("reference"):
        assert [backends.resolve_backend(op, "torch", cpu) for op in OPS] == ["reference"] * 2
        with backends.use_backend("shape"):
            assert backends.forced_backend() == "shape"
            assert [backends.resolve_backend(op, "auto", cpu) for op in OPS] == ["shape"] * 2
        assert backends.forced_backend() == "reference"
    assert backends.forced_backend() is None
    with pytest.raises(RuntimeError), backends.use_backend("shape"):
        raise RuntimeError("the block fails")
    assert backends.forced_backend() is None  # reset on the way out of a failing block too


def test_environment_variable_chooses_for_auto_only(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert [backends.resolve_backend(op, "auto", cpu) for op in OPS] == ["reference"] * 2
    assert backends.resolve_backend(scan_pkg.OP, "torch", cpu) == "torch"  # a named backend wins
    with backends.use_backend("shape"):
        assert backends.resolve_backend(scan_pkg.OP, "auto", cpu) == "shape"  # the context wins
    monkeypatch.setenv(backends.ENV_VAR, "shape")  # would train on empty tensors
    with pytest.raises(UserInputError, match="computes nothing.*torch"):
        backends.resolve_backend(mlstm_pkg.OP, "auto", cpu)
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(backends.UnknownBackendError, match="unknown mLSTM backend 'cuda'"):
        backends.resolve_backend(mlstm_pkg.OP, "auto", cpu)


@pytest.mark.parametrize("op", OPS)
def test_unknown_name_is_a_clear_error_listing_the_backends(op):
    with pytest.raises(backends.UnknownBackendError) as info:
        backends.resolve_backend(op, "cuda", torch.zeros(1))
    line = info.value.line()
    assert line.startswith(f"error: unknown {op} backend 'cuda'")
    assert line.endswith("use one of auto, triton, torch, reference, shape")
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserInputError)
    with (
        pytest.raises(backends.UnknownBackendError, match="no op has a backend 'cuda'.*reference, shape"),
        backends.use_backend("cuda"),
    ):
        pass
    with pytest.raises(KeyError, match="no backends registered for op 'nope'"):
        backends.resolve_backend("nope", "auto", torch.zeros(1))


def test_a_backend_that_cannot_load_is_named_with_the_reason(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'triton'")

    table = backends.backend_table(mlstm_pkg.OP)
    stub = backends.Backend("triton", missing, auto=table["triton"].auto, label="Triton")
    monkeypatch.setitem(table, "triton", stub)
    with pytest.raises(
        backends.BackendUnavailableError,
        match=r"Triton mLSTM backend is unavailable "
        r"\(ModuleNotFoundError: No module named 'triton'\).*torch",
    ):
        mlstm(*_mlstm_inputs(), backend="triton")
    cuda32 = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    assert backends.resolve_backend(mlstm_pkg.OP, "auto", cuda32) == "torch"  # "auto" falls back


# --------------------------------------------------------------------------- the shape backends


def test_scan_shape_backend_matches_the_torch_backend_without_computing():
    real_outs, real_grads = _run_scan(_scan_inputs(), "torch")
    meta = _scan_inputs("meta")  # no data at all: nothing could be computed
    with _AtenOps() as seen:
        outs, grads = _run_scan(meta, "shape")
    assert seen.names <= NON_COMPUTING, seen.names - NON_COMPUTING
    assert _layout(outs) == _layout(real_outs) and _layout(grads) == _layout(real_grads)
    assert all(t.is_meta for t in outs + list(grads))
    cpu = _scan_inputs()
    with backends.use_backend("shape"), _AtenOps() as seen:  # as planning selects it
        outs, _ = _run_scan(cpu, "auto")
    assert seen.names <= NON_COMPUTING and _layout(outs) == _layout(real_outs)


def test_mlstm_shape_backend_matches_the_torch_backend_without_computing():
    real_outs, real_grads = _run_mlstm(_mlstm_inputs(), "torch")
    meta, cpu = _mlstm_inputs("meta"), _mlstm_inputs()
    with _AtenOps() as seen:
        outs, grads = _run_mlstm(meta, "shape")
    assert seen.names <= NON_COMPUTING, seen.names - NON_COMPUTING
    assert _layout(outs) == _layout(real_outs) and _layout(grads) == _layout(real_grads)
    with backends.use_backend("shape"), _AtenOps() as seen:
        outs, _ = _run_mlstm(cpu, "auto")
    assert seen.names <= NON_COMPUTING and _layout(outs) == _layout(real_outs)


def test_mlstm_shape_backend_returns_the_chunkwise_layout():
    from umamba_seg.ops.mlstm import shape
    from umamba_seg.ops.mlstm.reference import MLSTMInputs
    from umamba_seg.ops.mlstm.torch_chunkwise import mlstm_chunkwise_forward

    inputs = [t.detach() for t in _mlstm_inputs()]
    real = mlstm_chunkwise_forward(MLSTMInputs(*inputs), chunk=64)
    fake = shape.forward(MLSTMInputs(*[t.to("meta") for t in inputs]), chunk=64)
    for name in ("h", "n", "m", "c_prev", "n_prev", "m_prev"):
        got, want = getattr(fake, name), getattr(real, name)
        assert (got.shape, got.dtype) == (want.shape, want.dtype), name
        assert got.untyped_storage().nbytes() == want.untyped_storage().nbytes(), name
