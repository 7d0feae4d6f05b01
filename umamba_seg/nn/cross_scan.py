"""Cross-scan SSM (VMamba's SS2D) for 2D and 3D maps, and the VSS block around it.

The layer reads a channels-last map ``(B, *spatial, C)``: ``in_proj`` splits it into a
branch ``x`` and a gate ``z``; ``x`` goes through a depthwise conv + SiLU, is read in
K = 2 * ndim orders (:func:`umamba_seg.ops.scan_orders.cross_scan_orders`: 2D row,
column and both reversed; 3D three axis rotations and their reverses), and all K
sequences go through **one** selective-scan call: the K directions are stacked on the
channel axis (``K * d_inner`` channels) with grouped B/C (``g = K``) and per-direction
``x_proj``/``dt_proj``/``A``/``D``. The K outputs are put back in place and summed,
then LayerNorm, ``* silu(z)`` and ``out_proj``.

Parameter layout follows the authors' (``x_proj_weight (K, R + 2N, E)``,
``dt_projs_weight (K, E, R)``, ``dt_projs_bias (K, E)``, ``A_logs (K * E, N)``,
``Ds (K * E)``), so counts match VM-UNet exactly. ``use_ssm=False`` is the ablation:
the scan is replaced by the identity (conv, norm, gate and projections stay).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from umamba_seg.nn.ssm_branch import dt_bias_init, dt_weight_bound, s4d_real_a_log
from umamba_seg.nn.ssm_config import SSMConfig
from umamba_seg.nn.token_mixer import TokenMixer
from umamba_seg.ops.scan_orders import ScanOrder, cross_merge, cross_scan, cross_scan_orders
from umamba_seg.ops.selective_scan import selective_scan

__all__ = ["CrossScanSSM", "VSSBlock"]


class CrossScanSSM(TokenMixer):
    """SS2D (``spatial_dims=2``, K = 4) / SS3D (``spatial_dims=3``, K = 6) on ``(B, *spatial, C)``."""

    def __init__(
        self, d_model: int, config: SSMConfig, spatial_dims: int = 2, use_ssm: bool = True, scan_backend: str = "auto"
    ):
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.d_model = d_model
        self.spatial_dims = spatial_dims
        self.d_state = config.d_state
        self.d_inner = E = config.inner(d_model)
        self.dt_rank = R = config.rank(d_model)
        self.num_directions = K = 2 * spatial_dims
        self.use_ssm = use_ssm
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, 2 * E, bias=config.bias)
        conv, k = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1], config.d_conv
        self.conv = conv(E, E, kernel_size=k, padding=(k - 1) // 2, groups=E, bias=config.conv_bias)
        if use_ssm:
            N = config.d_state
            bound = E**-0.5  # nn.Linear's default init, as the authors' stacked x_proj
            self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, E).uniform_(-bound, bound))
            dt_bound = dt_weight_bound(R, config)
            self.dt_projs_weight = nn.Parameter(torch.empty(K, E, R).uniform_(-dt_bound, dt_bound))
            self.dt_projs_bias = nn.Parameter(torch.stack([dt_bias_init(E, config) for _ in range(K)]))
            self.A_logs = nn.Parameter(s4d_real_a_log(K * E, N))
            self.Ds = nn.Parameter(torch.ones(K * E))
            # every direction's A and D (one tensor each): no weight decay under AdamW, as the authors mark them
            self.A_logs._no_weight_decay = True
            self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(E)
        self.out_proj = nn.Linear(E, d_model, bias=config.bias)
        self._orders: dict[tuple[int, ...], list[ScanOrder]] = {}

    @property
    def state_size(self) -> int:
        """One ``(d_inner, d_state)`` state per direction; none in the ``use_ssm=False`` ablation."""
        return self.num_directions * self.d_inner * self.d_state if self.use_ssm else 0

    def orders(self, shape: tuple[int, ...]) -> list[ScanOrder]:
        """The K scan orders for a spatial ``shape`` (cached)."""
        if shape not in self._orders:
            self._orders[shape] = cross_scan_orders(shape)
        return self._orders[shape]

    def scan_core(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, E, *spatial)`` -> ``(B, E, L)`` row-major, float32: K directions, one scan."""
        b, e = x.shape[:2]
        shape = tuple(x.shape[2:])
        L = math.prod(shape)
        K, n, R = self.num_directions, self.d_state, self.dt_rank
        orders = self.orders(shape)
        xs = cross_scan(x, orders)  # (B, K, E, L)
        x_dbl = torch.einsum("bkel,kce->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = torch.split(x_dbl, [R, n, n], dim=2)
        dts = torch.einsum("bkrl,ker->bkel", dts, self.dt_projs_weight.to(dts.dtype))
        y = selective_scan(
            xs.reshape(b, K * e, L).float(),
            dts.reshape(b, K * e, L).float(),
            -torch.exp(self.A_logs.float()),
            Bs.float().contiguous(),
            Cs.float().contiguous(),
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return cross_merge(y.view(b, K, e, L), orders)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *spatial, C)`` -> ``(B, *spatial, C)``."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected (B, *{self.spatial_dims} spatial, C), got shape {tuple(x.shape)}")
        spatial = tuple(x.shape[1:-1])
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = x.movedim(-1, 1).contiguous()  # (B, E, *spatial)
        x = F.silu(self.conv(x))
        y = self.scan_core(x) if self.use_ssm else x.flatten(2)
        y = y.view(y.shape[0], self.d_inner, *spatial).movedim(1, -1)  # (B, *spatial, E)
        y = self.out_norm(y.to(self.out_norm.weight.dtype))
        return self.out_proj(y * F.silu(z))


class VSSBlock(TokenMixer):
    """VM-UNet's visual state-space block: ``x + drop_path(SSM(LN(x)))`` on ``(B, *spatial, C)``;
    ``ssm_options`` are :class:`CrossScanSSM`'s (``spatial_dims``, ``use_ssm``, ``scan_backend``)."""

    def __init__(self, dim: int, config: SSMConfig, drop_path: float = 0.0, **ssm_options):
        super().__init__()
        self.d_model = dim
        self.norm = nn.LayerNorm(dim)
        self.ssm = CrossScanSSM(dim, config, **ssm_options)
        self.drop_path = DropPath(drop_path)

    @property
    def state_size(self) -> int:
        return self.ssm.state_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ssm(self.norm(x)))
