"""How much of a GPU's memory a training step can spend on activations.

``--gpu-memory-gb`` is the whole card. Before any activation is stored, training holds
(all fp32 under PyTorch AMP, which keeps fp32 master weights and casts on the fly):

* parameters, 4 bytes each;
* their gradients, 4 bytes each;
* optimizer state: SGD with momentum (nnU-Net's trainer and most of our networks) 4 bytes
  per parameter, Adam/AdamW (VM-UNet's authors' recipe, ``ArchSpec.authors_optimizer``) 8;
* a fixed workspace: the CUDA context, cuDNN/cuBLAS workspaces and the caching
  allocator's fragmentation, plus the transient gradient buffers of backward. Stated as
  ``WORKSPACE_BASE_GB`` plus ``WORKSPACE_FRACTION`` of the card.

What remains is the activation budget the planner fills (the memory model's estimate
of saved activations, outputs and autocast's parameter casts).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1024**3
OPTIMIZER_STATE_BYTES = {"sgd": 4, "adam": 8, "adamw": 8}
PARAM_BYTES = 4
GRAD_BYTES = 4
WORKSPACE_BASE_GB = 0.5
WORKSPACE_FRACTION = 0.1


@dataclass(frozen=True)
class MemoryBudget:
    """The split of ``gpu_memory_gb`` for a network of ``n_parameters`` trained with ``optimizer``."""

    gpu_memory_gb: float
    n_parameters: int
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_STATE_BYTES:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATE_BYTES)}, got {self.optimizer!r}")
        if self.gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb must be positive, got {self.gpu_memory_gb}")

    @property
    def total_bytes(self) -> int:
        return int(self.gpu_memory_gb * GB)

    @property
    def param_bytes(self) -> int:
        return PARAM_BYTES * self.n_parameters

    @property
    def grad_bytes(self) -> int:
        return GRAD_BYTES * self.n_parameters

    @property
    def optimizer_bytes(self) -> int:
        return OPTIMIZER_STATE_BYTES[self.optimizer] * self.n_parameters

    @property
    def workspace_bytes(self) -> int:
        return int(WORKSPACE_BASE_GB * GB + WORKSPACE_FRACTION * self.total_bytes)

    @property
    def fixed_bytes(self) -> int:
        """Everything that does not depend on patch or batch."""
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.workspace_bytes

    @property
    def activation_bytes(self) -> int:
        """What is left for activations (negative when the network alone does not fit)."""
        return self.total_bytes - self.fixed_bytes

    def describe(self) -> str:
        """One line: the fixed parts and what is left, in GB."""
        return (
            f"{self.gpu_memory_gb:g} GB = params {self.param_bytes / GB:.2f} + grads {self.grad_bytes / GB:.2f}"
            f" + {self.optimizer} state {self.optimizer_bytes / GB:.2f} + workspace {self.workspace_bytes / GB:.2f}"
            f" + activations {self.activation_bytes / GB:.2f}"
        )
