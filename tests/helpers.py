"""Helpers shared by the test modules: where the test resources live, one closeness check,
the random inputs of the two sequence ops (selective scan and mLSTM), and small CNN plans.

Every op test draws its inputs here, so a kernel test and a PyTorch-path test of the same op
see inputs of the same kind, and a tolerance means the same thing everywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch

RESOURCES = Path(__file__).resolve().parent / "resources"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str, *, floor: float = 0.0) -> None:
    """``actual`` has ``expected``'s shape, is finite, and its largest absolute error is at most
    ``rtol`` times ``max(max|expected|, floor)`` (gradients span decades, so the error is scaled by
    the reference's largest magnitude rather than compared element by element)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), floor) + 1e-12
    assert err <= rtol * scale, f"{name}: max error {err:.3e} > {rtol:.1e} x {scale:.3e}"


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
    """A CNN ``architecture`` block as nnunetv2's planner writes it into plans (3x3 convs, two per stage)."""
    n = len(features)
    conv = "Conv2d" if dim == 2 else "Conv3d"
    norm = "InstanceNorm2d" if dim == 2 else "InstanceNorm3d"
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": features,
            "conv_op": f"torch.nn.modules.conv.{conv}",
            "kernel_sizes": [[3] * dim] * n,
            "strides": strides,
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.{norm}",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


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
