"""What a synthetic dataset kind declares: its nnU-Net metadata, sizes and case renderer.

Each kind module (ct3d, mri3d, endoscopy2d, microscopy2d) builds one :class:`DatasetKind`;
:mod:`umamba_seg.data.writer` turns it into an nnU-Net raw dataset. Keeping the
declaration separate from the writing lets tests and the demo ask a kind about its
labels, channels and sizes without rendering anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SizePreset:
    """Image shape (numpy axis order: z, y, x or y, x), spacing in the same order, case counts."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    num_train: int
    num_test: int


def size_presets(
    spacing: tuple[float, ...] | None = None, **presets: tuple[tuple[int, ...], int, int]
) -> dict[str, SizePreset]:
    """A kind's ``sizes``: each preset given as ``name=(shape, num_train, num_test)``, all at one
    ``spacing`` (default 1 per axis: plain pixels), in the order given."""
    return {
        name: SizePreset(shape, spacing or (1.0,) * len(shape), num_train, num_test)
        for name, (shape, num_train, num_test) in presets.items()
    }


@dataclass
class Case:
    """One rendered case.

    ``images`` holds one array per image file: channel files for NIfTI/TIFF
    (``_0000``, ``_0001``, ...), or a single (H, W, 3) array for an RGB PNG.
    ``label`` has the image's spatial shape and values from the kind's ``labels``.
    """

    images: list[np.ndarray]
    label: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    instances: np.ndarray | None = None  # instance map (0 background, 1..n), written to instancesTr/Ts


CaseRenderer = Callable[[np.random.Generator, SizePreset], Case]


@dataclass(frozen=True)
class DatasetKind:
    """Everything the writer needs to produce one nnU-Net raw dataset of this kind."""

    kind: str  # command-line name, e.g. "ct3d"
    name: str  # the part after DatasetXXX_
    default_id: int
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    description: str
    sizes: dict[str, SizePreset]
    render: CaseRenderer
    case_prefix: str
    reader_writer: str | None = None  # nnunetv2 reader/writer class to pin in dataset.json
    extra_json: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(next(iter(self.sizes.values())).shape)
