"""Per-architecture planner: the CNN's spacing, each network's own patch, topology and batch.

nnU-Net chooses patch, topology and batch with a proxy of conv feature-map memory; U-Mamba
and xLSTM-UNet reused it, so their token mixers never entered the estimate. Here, per
configuration of the CNN's plans (spacing, median shape and preprocessing are kept, so
preprocessed data is shared by every architecture):

1. the candidate patches are nnU-Net's: start from the spacing's aspect ratio at
   256^3 (3D) / 2048^2 (2D) voxels clipped to the median shape, then repeatedly shrink
   the axis largest relative to the median shape by one unit of the total downsampling,
   recomputing the topology (``get_pool_and_conv_props``: anisotropic spacing is handled
   as nnU-Net does) at each step. nnunetv2 2.8.1 keeps this walk and the architecture block
   inline in ``ExperimentPlanner.get_plans_for_configuration``, driven by its own memory
   proxy, so there is no method to call for them; a test checks that the CNN plan nnunetv2
   writes lies on this path with the identical block;
2. each candidate becomes the architecture's own: the registry's ``adjust_patch`` moves
   it to a size the network accepts (VM-UNet: its embedding and merges; SegMamba: its
   stem and four halvings) and ``build_kwargs`` derives the rest (channel-token stages,
   slice counts, strides) from that patch;
3. the memory model (:mod:`memory_model`, traced per candidate at batches 2 and 3) gives
   the activation bytes; the budget (:mod:`budget`) gives what the card leaves for them;
   the first (largest) candidate that fits with the minimum batch size is found by
   bisection along the path;
4. the batch fills the activation budget, capped as nnU-Net does so that one step sees
   at most 5% of the dataset's voxels, and never below the minimum of 2.

``*_nossm`` ablations take their parent's patch and batch, so the comparison changes only
the token mixer. The plan records the estimate (``umamba_memory``) for ``--explain``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op, get_matching_instancenorm
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

from umamba_seg.architectures import registry
from umamba_seg.planning.budget import GB, MemoryBudget
from umamba_seg.planning.memory_model import MemoryEstimate, estimate_memory
from umamba_seg.planning.naming import CNN_ARCH, plans_identifier

__all__ = ["TopologyKnobs", "ConfigurationPlan", "candidate_path", "plan_arch_from_cnn", "search_configuration"]

NOSSM_SUFFIX = "_nossm"
MAX_PATH_STEPS = 512


@dataclass(frozen=True)
class TopologyKnobs:
    """nnU-Net's planner settings that shape the CNN topology and the batch (its defaults)."""

    base_num_features: int = 32
    max_features_2d: int = 512
    max_features_3d: int = 320
    featuremap_min_edge_length: int = 4
    blocks_per_stage_encoder: tuple[int, ...] = (2,) * 14
    blocks_per_stage_decoder: tuple[int, ...] = (2,) * 13
    unet_class_name: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    min_batch_size: int = 2
    max_dataset_covered: float = 0.05


@dataclass
class ConfigurationPlan:
    """The outcome of the search for one architecture and configuration."""

    patch_size: list[int]
    batch_size: int
    architecture: dict
    estimate: MemoryEstimate  # at batch_size
    budget: MemoryBudget
    fits: bool
    traced: int  # candidates the memory model traced
    notes: list[str] = field(default_factory=list)

    def memory_record(self) -> dict:
        """What the plans file keeps for ``--explain`` (GB)."""
        e, b = self.estimate, self.budget
        return {
            "gpu_memory_gb": b.gpu_memory_gb,
            "optimizer": b.optimizer,
            "n_parameters": int(e.n_parameters),
            "conv_gb": e.conv_bytes / GB,
            "token_mixer_gb": e.mixer_bytes / GB,
            "outputs_gb": e.output_bytes / GB,
            "param_casts_gb": e.param_cast_bytes / GB,
            "fixed_gb": b.fixed_bytes / GB,
            "params_grads_optimizer_gb": (b.param_bytes + b.grad_bytes + b.optimizer_bytes) / GB,
            "workspace_gb": b.workspace_bytes / GB,
            "total_gb": (b.fixed_bytes + e.activation_bytes) / GB,
            "fits": bool(self.fits),
            "notes": list(self.notes),
        }


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> list[int]:
    """nnU-Net's start: the spacing's aspect ratio at 256^3 / 2048^2 voxels, clipped to the median shape."""
    tmp = 1 / np.asarray(spacing, dtype=float)
    volume = 256**3 if len(spacing) == 3 else 2048**2
    patch = [round(i) for i in tmp * (volume / np.prod(tmp)) ** (1 / len(spacing))]
    return [int(min(p, m)) for p, m in zip(patch, median_shape)]


def cnn_architecture(
    spacing: Sequence[float], patch: Sequence[int], knobs: TopologyKnobs
) -> tuple[list[int], dict, list[int]]:
    """nnU-Net's topology for ``patch``: (padded patch, CNN ``architecture`` block, divisibility)."""
    _, pools, kernels, patch, divisible = get_pool_and_conv_props(
        list(spacing), list(patch), knobs.featuremap_min_edge_length, 999999
    )
    n = len(pools)
    dim = len(spacing)
    max_features = knobs.max_features_2d if dim == 2 else knobs.max_features_3d
    conv_op = convert_dim_to_conv_op(dim)
    norm = get_matching_instancenorm(conv_op)
    block = {
        "network_class_name": knobs.unet_class_name,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [min(max_features, knobs.base_num_features * 2**i) for i in range(n)],
            "conv_op": f"{conv_op.__module__}.{conv_op.__name__}",
            "kernel_sizes": [[int(k) for k in ks] for ks in kernels],
            "strides": [[int(s) for s in st] for st in pools],
            "n_conv_per_stage": list(knobs.blocks_per_stage_encoder[:n]),
            "n_conv_per_stage_decoder": list(knobs.blocks_per_stage_decoder[: n - 1]),
            "conv_bias": True,
            "norm_op": f"{norm.__module__}.{norm.__name__}",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    return [int(p) for p in patch], block, [int(d) for d in divisible]


def candidate_path(
    spacing: Sequence[float], median_shape: Sequence[float], knobs: TopologyKnobs
) -> list[tuple[list[int], dict]]:
    """nnU-Net's sequence of (patch, CNN block), largest first, down to the smallest patch."""
    patch, block, divisible = cnn_architecture(spacing, initial_patch(spacing, median_shape), knobs)
    path = [(patch, block)]
    for _ in range(MAX_PATH_STEPS):
        axis = int(np.argsort([p / m for p, m in zip(patch, median_shape)])[-1])
        tmp = list(patch)
        tmp[axis] -= divisible[axis]
        if tmp[axis] < 1:
            break
        _, _, _, _, div_tmp = get_pool_and_conv_props(list(spacing), tmp, knobs.featuremap_min_edge_length, 999999)
        smaller = list(patch)
        smaller[axis] -= div_tmp[axis]
        if smaller[axis] < knobs.featuremap_min_edge_length:
            break
        new_patch, new_block, divisible = cnn_architecture(spacing, smaller, knobs)
        if math.prod(new_patch) >= math.prod(patch):
            break
        patch, block = new_patch, new_block
        path.append((patch, block))
    return path


def _search_spec(arch: str) -> registry.ArchSpec:
    """The spec whose memory decides the patch: an ablation plans like its parent."""
    if arch.endswith(NOSSM_SUFFIX):
        parent = arch.removesuffix(NOSSM_SUFFIX)
        if parent in registry.available():
            return registry.get(parent)
    return registry.get(arch)


def _arch_candidate(spec: registry.ArchSpec, patch: Sequence[int], cnn_block: dict) -> tuple[list[int], dict]:
    if spec.adjust_patch is not None:
        patch = [int(p) for p in spec.adjust_patch(list(patch))]
    return list(patch), spec.architecture_block(cnn_block, patch)


def search_configuration(
    arch: str,
    spacing: Sequence[float],
    median_shape: Sequence[float],
    n_voxels_dataset: float,
    input_channels: int,
    num_classes: int,
    gpu_memory_gb: float,
    knobs: TopologyKnobs = TopologyKnobs(),
    optimizer: str | None = None,
    device_type: str = "cuda",
    amp_dtype: str = "float16",
    preset: str = "default",
) -> ConfigurationPlan:
    """The patch, topology and batch of ``arch`` for one configuration (see the module docstring).
    ``optimizer`` (whose state the budget counts): default, the one ``arch`` trains with;
    ``preset``: the size of the architecture family's preset."""
    spec, search_spec = registry.get(arch).at_size(preset), _search_spec(arch).at_size(preset)
    optimizer = optimizer or spec.authors_optimizer
    path = candidate_path(spacing, median_shape, knobs)
    cache: dict[int, tuple[list[int], dict, MemoryEstimate]] = {}

    def candidate(i: int) -> tuple[list[int], dict, MemoryEstimate]:
        if i not in cache:
            patch, block = _arch_candidate(search_spec, *path[i])
            est = estimate_memory(
                block, patch, knobs.min_batch_size, input_channels, num_classes, device_type, amp_dtype
            )
            cache[i] = (patch, block, est)
        return cache[i]

    def needed(est: MemoryEstimate, batch: int) -> int:
        fixed = MemoryBudget(gpu_memory_gb, est.n_parameters, optimizer).fixed_bytes
        return fixed + est.at_batch(batch).activation_bytes

    def fits(i: int) -> bool:
        return needed(candidate(i)[2], knobs.min_batch_size) <= int(gpu_memory_gb * GB)

    lo, hi = 0, len(path) - 1  # first fitting candidate, by bisection (memory shrinks along the path)
    if fits(lo):
        pass
    elif not fits(hi):
        lo = hi
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
    patch, block, est = candidate(lo)
    notes = []
    fit = fits(lo)
    if not fit:
        notes.append("even the smallest patch does not fit the memory target with the minimum batch size")
    budget = MemoryBudget(gpu_memory_gb, est.n_parameters, optimizer)
    by_memory = int((budget.activation_bytes - est.batch_independent_bytes) // max(est.per_sample_bytes, 1))
    cap = round(n_voxels_dataset * knobs.max_dataset_covered / math.prod(patch))
    batch = int(max(min(by_memory, cap), knobs.min_batch_size))
    if cap < by_memory and batch > knobs.min_batch_size:
        notes.append(f"batch capped at {knobs.max_dataset_covered:.0%} of the dataset's voxels")
    if spec is not search_spec:
        notes.append(f"patch and batch of {search_spec.name} (ablation)")
        patch, block = _arch_candidate(spec, patch, path[lo][1])
        est = estimate_memory(block, patch, knobs.min_batch_size, input_channels, num_classes, device_type, amp_dtype)
        budget = MemoryBudget(gpu_memory_gb, est.n_parameters, optimizer)
    return ConfigurationPlan(patch, batch, block, est.at_batch(batch), budget, fit, len(cache), notes)


def _n_voxels_dataset(plans: dict, name: str, num_training: int) -> float:
    """nnU-Net's dataset size for the 5% batch cap: median voxels x cases (2d uses the 3D median)."""
    confs = plans["configurations"]
    median = confs[name]["median_image_size_in_voxels"]
    if name == "2d" and "median_image_size_in_voxels" in confs.get("3d_fullres", {}):
        median = confs["3d_fullres"]["median_image_size_in_voxels"]
    return float(np.prod(median, dtype=np.float64) * num_training)


def plan_arch_from_cnn(
    cnn_plans: dict,
    arch: str,
    dataset_json: dict,
    gpu_memory_gb: float = 8.0,
    knobs: TopologyKnobs = TopologyKnobs(),
    optimizer: str | None = None,
    preset: str = "default",
) -> dict:
    """Plans for ``arch``: the CNN's plans with each configuration's patch, batch and
    architecture searched for ``arch`` at preset size ``preset`` (spacing, preprocessing and
    data identifier kept)."""
    plans = copy.deepcopy(cnn_plans)
    plans["plans_name"] = plans_identifier(arch)
    plans["umamba_arch"] = arch
    plans["umamba_gpu_memory_gb"] = gpu_memory_gb
    if arch == CNN_ARCH:
        return plans
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    input_channels, num_classes = len(channels), len(dataset_json["labels"])
    num_training = int(dataset_json["numTraining"])
    for name, conf in plans["configurations"].items():
        if "architecture" not in conf:  # e.g. 3d_cascade_fullres inherits it
            continue
        res = search_configuration(
            arch,
            conf["spacing"],
            conf["median_image_size_in_voxels"],
            _n_voxels_dataset(plans, name, num_training),
            input_channels,
            num_classes,
            gpu_memory_gb,
            knobs,
            optimizer,
            preset=preset,
        )
        conf["patch_size"] = res.patch_size
        conf["batch_size"] = res.batch_size
        conf["architecture"] = res.architecture
        conf["umamba_memory"] = res.memory_record()
    return plans
