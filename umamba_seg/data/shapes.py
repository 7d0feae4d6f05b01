"""Random smooth fields and irregular shapes: the building blocks of every synthetic kind.

Real anatomy is neither noise nor a perfect ellipse. Each helper here works in 2D and 3D
on normalised coordinates (every axis spans [-1, 1] over the field of view), so a
generator describes its scene once and renders it at any size. All randomness comes
from the ``numpy.random.Generator`` passed in, which keeps datasets deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Normalised coordinates, one array per axis, each spanning [-1, 1] (broadcastable)."""
    axes = []
    for i, n in enumerate(shape):
        view = [1] * len(shape)
        view[i] = n
        axes.append(np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(view))
    return axes


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: int | Sequence[int] = 4) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation.

    ``cells`` control points per axis (more cells = finer structure); they are
    interpolated with cubic splines to ``shape``.
    """
    if isinstance(cells, int):
        cells = [cells] * len(shape)
    cells = [max(2, min(int(c), int(n))) for c, n in zip(cells, shape)]
    coarse = rng.standard_normal(cells).astype(np.float32)
    zoom = [n / c for n, c in zip(shape, cells)]
    field = ndimage.zoom(coarse, zoom, order=3, mode="reflect", grid_mode=True)
    field = field[tuple(slice(0, n) for n in shape)]
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


def random_rotation(rng: np.random.Generator, ndim: int, max_angle: float = np.pi) -> np.ndarray:
    """A random rotation matrix (angles uniform in +-max_angle per plane)."""
    rot = np.eye(ndim)
    for a in range(ndim):
        for b in range(a + 1, ndim):
            t = rng.uniform(-max_angle, max_angle)
            r = np.eye(ndim)
            r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
            rot = rot @ r
    return rot


def ellipsoid_radius(
    coords: Sequence[np.ndarray],
    center: Sequence[float],
    radii: Sequence[float],
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised radius of every point w.r.t. an (optionally rotated) ellipsoid: < 1 inside."""
    ndim = len(coords)
    shifted = [c - float(m) for c, m in zip(coords, center)]
    if rotation is not None:
        shifted = [sum(float(rotation[j, i]) * shifted[j] for j in range(ndim)) for i in range(ndim)]
    return np.sqrt(sum((s / float(r)) ** 2 for s, r in zip(shifted, radii)))


def blob(
    rng: np.random.Generator,
    coords: Sequence[np.ndarray],
    center: Sequence[float],
    radii: Sequence[float],
    irregularity: float = 0.2,
    cells: int = 4,
    max_angle: float = 0.5,
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """An irregular organ-like mask: a rotated ellipsoid whose surface is bent by smooth noise."""
    shape = np.broadcast_shapes(*[c.shape for c in coords])
    rot = random_rotation(rng, len(coords), max_angle) if rotation is None else rotation
    r = ellipsoid_radius(coords, center, radii, rot)
    wobble = irregularity * smooth_field(rng, shape, cells) if irregularity > 0 else 0.0
    return r < 1.0 + wobble


def blur(image: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian blur (partial-volume / point-spread effect)."""
    return ndimage.gaussian_filter(image.astype(np.float32, copy=False), sigma)


def edge_ring(label: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of an instance map (0 = background, k = instance k) that touch another value."""
    ring = np.zeros(label.shape, dtype=bool)
    for axis in range(label.ndim):
        for shift in (1, -1):
            moved = np.roll(label, shift, axis=axis)
            edge_index = [slice(None)] * label.ndim
            edge_index[axis] = 0 if shift == 1 else -1
            moved[tuple(edge_index)] = label[tuple(edge_index)]
            ring |= moved != label
    ring &= label > 0
    if width > 1:
        grown = ndimage.binary_dilation(ring, iterations=width - 1)
        ring = grown & (label > 0)
    return ring
