"""Helpers shared by the test modules: where the test resources live, one closeness check,
the random inputs of the two sequence ops (selective scan and mLSTM), the child pytest that runs
the Triton interpreter tests, small CNN plans and the networks the registry plans from them.

Every op test draws its inputs here, so a kernel test and a PyTorch-path test of the same op
see inputs of the same kind, and a tolerance means the same thing everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

RESOURCES = Path(__file__).resolve().parent / "resources"
REPO_ROOT = Path(__file__).resolve().parents[1]
INTERPRETER_TESTS = REPO_ROOT / "tests" / "ops" / "triton_interp"  # run only in a child pytest


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str, *, floor: float = 0.0) -> None:
    """``actual`` has ``expected``'s shape, is finite, and its largest absolute error is at most
    ``rtol`` times ``max(max|expected|, floor)`` (gradients span decades, so the error is scaled by
    the reference's largest magnitude rather than compared element by element)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), floor) + 1e-12
    assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.1e} x {scale:.3e}"


def run_interpreter_tests(module: str, expected: int, *pytest_args: str) -> None:
    """Runs tests/ops/triton_interp/``module`` in a child pytest under Triton's CPU interpreter and
    asserts that it passed, with at least ``expected`` tests and none skipped.

    ``TRITON_INTERPRET=1`` must be set before ``triton`` is first imported, which would change every
    other Triton use in this pytest process; hence the child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, str(INTERPRETER_TESTS / module)],
        cwd=REPO_ROOT,
        env=dict(os.environ, TRITON_INTERPRET="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"interpreter tests failed:\n{report}"
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= expected, f"expected at least {expected} interpreter tests to pass:\n{report}"
    assert "skipped" not in proc.stdout.splitlines()[-1], f"interpreter tests were skipped:\n{report}"


def scan_inputs(
    b: int,
    d: int,
    n: int,
    L: int,
    g: int = 1,
    dtype: torch.dtype = torch.float64,
    *,
    D: bool = False,
    z: bool = False,
    bias: bool = False,
    softplus: bool = False,
    variable: bool = False,
    dt_scale: float = 0.5,
    seed: int = 0,
) -> dict:
    """Keyword arguments of ``selective_scan``: ``u, delta, z`` ``(b, d, L)``, decaying ``A``
    ``(d, n)`` (fp32, fp64 for fp64 inputs), ``B, C`` grouped ``(b, g, n, L)`` (``(b, n, L)`` when
    ``variable``); ``D``, ``z``, ``delta_bias`` only where asked. Without softplus the steps are
    positive (``dt_scale`` wide), which keeps the recurrence contracting."""
    gen = torch.Generator().manual_seed(seed)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=sdt) * scale).to(dtype)

    u = rnd(b, d, L)
    if softplus:  # raw steps, softplus makes them positive; dt_scale 0.5 gives unit spread
        delta = rnd(b, d, L, scale=2.0 * dt_scale)
    else:
        delta = (torch.rand(b, d, L, generator=gen, dtype=sdt) * dt_scale + 0.05).to(dtype)
    A = -(torch.rand(d, n, generator=gen, dtype=sdt) * 2.0 + 0.2)
    bc = (b, n, L) if variable else (b, g, n, L)
    return dict(
        u=u,
        delta=delta,
        A=A,
        B=rnd(*bc),
        C=rnd(*bc),
        D=torch.randn(d, generator=gen, dtype=sdt) if D else None,
        z=rnd(b, d, L) if z else None,
        delta_bias=torch.randn(d, generator=gen, dtype=sdt) * 0.3 if bias else None,
        delta_softplus=softplus,
    )


def mlstm_inputs(
    b: int = 1,
    h: int = 2,
    L: int = 23,
    dh: int = 8,
    dtype: torch.dtype = torch.float64,
    *,
    seed: int = 0,
    gate_scale: float = 2.0,
    fgate_bias: float = 2.0,
    requires_grad: bool = False,
) -> list[torch.Tensor]:
    """``[q, k, v, igate, fgate]`` of the mLSTM: ``q, k, v`` ``(b, h, L, dh)``, gates ``(b, h, L)``;
    ``fgate_bias`` shifts the forget-gate pre-activations (ViL's range is around 3)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, L, dh, generator=gen, dtype=dtype) for _ in range(3))
    igate = torch.randn(b, h, L, generator=gen, dtype=dtype) * gate_scale
    fgate = torch.randn(b, h, L, generator=gen, dtype=dtype) * gate_scale + fgate_bias
    out = [q, k, v, igate, fgate]
    return [t.clone().requires_grad_() for t in out] if requires_grad else out


def plain_cnn_block(dim: int, features: list[int], strides: list[list[int]]) -> dict:
    """A CNN ``architecture`` block as our CNN planner writes it into plans (nnunetv2's), with the
    topology set here: ``features`` and ``strides`` per stage, 3x3 convs, two per stage."""
    from umamba_seg.planning.ssm_planner import TopologyKnobs, cnn_architecture  # op tests stay light

    _, block, _ = cnn_architecture([1.0] * dim, [8] * dim, TopologyKnobs())
    n = len(features)
    block["arch_kwargs"].update(
        n_stages=n,
        features_per_stage=list(features),
        kernel_sizes=[[3] * dim] * n,
        strides=strides,
        n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1),
    )
    return block


def as_stored(block: dict) -> dict:
    """``block`` as a plans file stores it: through JSON (tuples become lists, and it must serialize)."""
    return json.loads(json.dumps(block))


def network_from_block(block: dict, input_channels: int, num_classes: int, **kwargs) -> torch.nn.Module:
    """nnunetv2's ``get_network_from_plans`` on an ``architecture`` block, as its trainer calls it
    (``kwargs``: ``allow_init``, ``deep_supervision``)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # op tests stay light

    return get_network_from_plans(
        block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"], input_channels, num_classes,
        **kwargs,
    )  # fmt: skip


def planned_network(
    arch: str, cnn: dict, patch: Sequence[int], input_channels: int, num_classes: int, **kwargs
) -> tuple[torch.nn.Module, dict]:
    """The registry's ``architecture`` block of ``arch`` for the CNN block ``cnn`` and ``patch``, as a
    plans file stores it, and the network nnunetv2 builds from it."""
    from umamba_seg.architectures import registry

    block = as_stored(registry.get(arch).architecture_block(cnn, list(patch)))
    return network_from_block(block, input_channels, num_classes, **kwargs), block


def check_deep_supervision(
    net: torch.nn.Module,
    strides: list[list[int]],
    x: torch.Tensor,
    num_classes: int,
    check_gradients: Callable[[], None],
) -> None:
    """nnunetv2's deep-supervision contract on the batch ``x``: one output per stride but the last, at
    the scales ``1 / cumprod(strides)`` the trainer computes its targets at; a loss of all of them
    backpropagates (``check_gradients`` then looks at the gradients); with ``net.decoder.deep_supervision``
    off, as the trainer toggles it, one full-resolution output."""
    patch = list(x.shape[2:])
    outs = net(x)
    scales = 1 / np.cumprod(np.vstack(strides), axis=0)[:-1]
    assert isinstance(outs, list) and len(outs) == len(strides) - 1
    for out, scale in zip(outs, scales):
        assert list(out.shape) == [len(x), num_classes, *(int(round(p * s)) for p, s in zip(patch, scale))]
    sum(o.float().square().mean() for o in outs).backward()
    check_gradients()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        single = net(x[:1])
    assert torch.is_tensor(single) and list(single.shape) == [1, num_classes, *patch]


def check_bf16_backward(net: torch.nn.Module, x: torch.Tensor) -> None:
    """Under CPU bf16 autocast, ``net``'s outputs for ``x`` and, after the backward pass of a loss of
    every output (deep supervision's list), every gradient are finite."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(x)
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o.float()).all() for o in outs)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def cnn_plans_2d(spacing: list[float], patch: list[int], batch: int = 7, dataset_name: str = "Dataset903_X") -> dict:
    """Minimal nnunetv2 CNN plans of one RGB ``2d`` configuration, topology from our CNN planner."""
    from umamba_seg.planning.ssm_planner import TopologyKnobs, cnn_architecture  # op tests stay light

    patch, block, _ = cnn_architecture(spacing, patch, TopologyKnobs())
    conf = {
        "data_identifier": "umambaPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch,
        "patch_size": patch,
        "median_image_size_in_voxels": [float(p) for p in patch],
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"] * 3,
        "use_mask_for_norm": [False] * 3,
        "architecture": block,
        "batch_dice": True,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": "umambaPlans_cnn",
        "configurations": {"2d": conf},
        "transpose_forward": [0, 1],
        "transpose_backward": [0, 1],
        "label_manager": "LabelManager",
        "image_reader_writer": "NaturalImage2DIO",
        "foreground_intensity_properties_per_channel": {},
    }
