"""Planned networks, untrained, and the closures the benchmark scripts time.

A network is built from a plans dict (normally the benchmark's same-plan plans) exactly as the
trainer and the predictor build it (``nnUNetTrainer.build_network_architecture``), seeded so two
runs time the same weights. The closures run what training and inference run: autocast on CUDA
only, as nnunetv2's trainer and predictor do (fp32 on the CPU); forward+backward in training
mode with every deep-supervision output in the loss; sliding-window prediction through the
same predictor class ``predict`` uses (:func:`umamba_seg.inference.model.predictor_for_network`),
so tiling, Gaussian weighting and mirroring are the real ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from umamba_seg.inference.model import predictor_for_network
from umamba_seg.training.run import TRAINER_NAME


@dataclass
class PlannedNetwork:
    """One configuration of a plans dict, resolved: managers, channel counts, patch and batch."""

    arch: str
    plans_manager: object
    configuration_manager: object
    dataset_json: dict
    input_channels: int
    num_outputs: int

    @property
    def patch_size(self) -> list[int]:
        return [int(p) for p in self.configuration_manager.patch_size]

    @property
    def batch_size(self) -> int:
        return int(self.configuration_manager.batch_size)

    def build(self, deep_supervision: bool = True, seed: int = 0) -> nn.Module:
        """The network, freshly initialised with ``seed``."""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        from umamba_seg.architectures.plans_allowlist import check_architecture

        check_architecture(
            self.configuration_manager.configuration.get("architecture"), f"plans {self.plans_manager.plans_name}"
        )  # before nnunetv2 imports what it names
        torch.manual_seed(seed)
        return nnUNetTrainer.build_network_architecture(
            self.plans_manager,
            self.configuration_manager,
            self.input_channels,
            self.num_outputs,
            enable_deep_supervision=deep_supervision,
        )


def planned_network(plans: dict, configuration: str, dataset_json: dict) -> PlannedNetwork:
    """Resolve ``configuration`` of ``plans`` for ``dataset_json``'s channels and labels."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    return PlannedNetwork(
        plans.get("umamba_arch", plans["plans_name"]),
        pm,
        cm,
        dataset_json,
        determine_num_input_channels(pm, cm, dataset_json),
        pm.get_label_manager(dataset_json).num_segmentation_heads,
    )


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _amp(device: torch.device):
    return torch.autocast(device.type, enabled=True) if device.type == "cuda" else contextlib.nullcontext()


def forward_fn(network: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Inference-mode forward of ``x`` (eval, no autograd)."""
    network.eval()

    def run() -> None:
        with torch.inference_mode(), _amp(x.device):
            network(x)

    return run


def forward_backward_fn(network: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Training-mode forward and backward of ``x``; the loss sums the mean of every output
    (all deep-supervision heads get gradients, as with nnU-Net's loss); gradients are dropped."""
    network.train()

    def run() -> None:
        with _amp(x.device):
            out = network(x)
            outputs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(o.float().mean() for o in outputs)
        loss.backward()
        network.zero_grad(set_to_none=True)

    return run


def sliding_window_predictor(
    planned: PlannedNetwork, device: torch.device, step_size: float = 0.5, tta: bool = True, seed: int = 0
):
    """``predict``'s predictor around the untrained network (mirroring over every spatial axis)."""
    network = planned.build(deep_supervision=False, seed=seed).to(device)
    mirror_axes = tuple(range(len(planned.patch_size)))
    return predictor_for_network(
        network,
        planned.plans_manager,
        planned.configuration_manager,
        [network.state_dict()],
        planned.dataset_json,
        TRAINER_NAME,
        mirror_axes,
        device,
        step_size,
        tta,
    )


def sliding_window_fn(predictor, data: torch.Tensor) -> Callable[[], None]:
    """Sliding-window prediction of one preprocessed case ``data`` (channels, *spatial)."""

    def run() -> None:
        predictor.predict_logits_from_preprocessed_data(data).cpu()

    return run
