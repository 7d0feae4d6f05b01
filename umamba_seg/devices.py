"""``--device cpu|cuda|mps|auto`` -> a torch.device, with a clear error when unavailable."""

from __future__ import annotations

import torch

from umamba_seg.errors import UserInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "--device cuda requested but no CUDA GPU is visible",
            "--device",
            "use --device cpu (or auto), or check CUDA_VISIBLE_DEVICES and the driver",
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserInputError("--device mps requested but MPS is not available", "--device", "use --device cpu or auto")
    if name not in DEVICE_CHOICES:
        raise UserInputError(f"unknown device '{name}'", "--device", f"choose one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def configure_cpu_threads(device: torch.device) -> None:
    """On CPU, leave data augmentation workers a sensible default (nnU-Net's table is GPU-cluster specific)."""
    import os

    if device.type == "cpu" and "nnUNet_n_proc_DA" not in os.environ:
        os.environ["nnUNet_n_proc_DA"] = str(max(0, min(2, (os.cpu_count() or 2) // 2)))


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so a timer sees the work it started."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
