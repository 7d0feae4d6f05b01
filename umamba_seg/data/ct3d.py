"""Synthetic abdominal CT: liver and kidneys in Hounsfield units, anisotropic 0.8 x 0.8 x 3 mm.

Each case is an axial stack through an abdomen phantom: air, skin/subcutaneous fat,
muscle, visceral fat with bowel gas, a vertebra, the aorta and vena cava (contrast
enhanced, so as bright as the kidneys: intensity alone does not solve the task), the
liver (label 1) and both kidneys (label 2, bright cortex around a darker medulla).
Organ positions, sizes, outlines and enhancement vary per case; blur and noise mimic
partial volume and quantum noise. Intensities are stored as int16 HU.
"""

from __future__ import annotations

import numpy as np

from umamba_seg.data.kind import Case, DatasetKind, SizePreset, size_presets
from umamba_seg.data.shapes import blob, blur, ellipsoid_radius, grid, smooth_field

LIVER, KIDNEY = 1, 2


def _jitter(rng: np.random.Generator, values: tuple[float, ...], amount: float) -> list[float]:
    return [v + rng.uniform(-amount, amount) for v in values]


def render_ct_case(rng: np.random.Generator, preset: SizePreset) -> Case:
    """One abdominal CT case (z, y, x) with its liver/kidney label map."""
    shape = preset.shape
    z, y, x = grid(shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)

    # body outline, subcutaneous fat, muscle wall
    body_r = ellipsoid_radius(
        (y, x), (0.05 + rng.uniform(-0.03, 0.03), 0.0), (rng.uniform(0.78, 0.88), rng.uniform(0.88, 0.96))
    )
    body_r = body_r * (1.0 + 0.03 * smooth_field(rng, shape, (2, 3, 3))) + 0.0 * z
    body = body_r < 1.0
    fat_depth = rng.uniform(0.82, 0.9)
    hu[body] = -100.0
    wall = body_r < fat_depth
    hu[wall] = 45.0
    inside = body_r < fat_depth - 0.06
    # visceral fat and bowel gas pockets
    visceral = smooth_field(rng, shape, (3, 6, 6))
    hu[inside] = np.where(visceral[inside] > 0.7, -90.0, 30.0)
    gas = inside & (smooth_field(rng, shape, (3, 8, 8)) > 2.0) & (y < 0.1)
    hu[gas] = -850.0

    # vertebra: cortical rim around cancellous bone, plus the spinal canal
    spine_c = (0.55 + rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03))
    spine_r = ellipsoid_radius((y, x), spine_c, (0.14, 0.15)) + 0.0 * z
    hu[spine_r < 1.0] = 700.0
    hu[spine_r < 0.75] = 230.0
    canal = ellipsoid_radius((y, x), (spine_c[0] + 0.21, spine_c[1]), (0.05, 0.06)) + 0.0 * z
    hu[canal < 1.0] = 15.0
    # paraspinal muscles
    for side in (-1.0, 1.0):
        m = ellipsoid_radius((y, x), (spine_c[0] + 0.12, side * 0.28), (0.11, 0.15)) + 0.0 * z
        hu[(m < 1.0) & inside] = 55.0

    # kidneys (label 2): bean-shaped, posterior, either side of the spine
    enh = rng.uniform(0.85, 1.15)
    kidneys = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        center = _jitter(rng, (-0.25 - 0.1 * side, spine_c[0] - 0.12, side * 0.44), 0.06)
        radii = [rng.uniform(0.5, 0.65), rng.uniform(0.19, 0.24), rng.uniform(0.14, 0.18)]
        kid = blob(rng, (z, y, x), center, radii, irregularity=0.1, cells=3, max_angle=0.35) & inside
        cortex_r = ellipsoid_radius((z, y, x), center, [r * 0.62 for r in radii])
        medulla = kid & (cortex_r < 1.0)
        hu[kid] = 185.0 * enh
        hu[medulla] = 125.0 * enh
        kidneys |= kid

    # aorta and inferior vena cava: bright tubes that are not kidney
    aorta = ellipsoid_radius((y, x), (spine_c[0] - 0.22, spine_c[1] + 0.1), (0.065, 0.065)) + 0.0 * z
    hu[aorta < 1.0] = 210.0 * enh
    ivc = ellipsoid_radius((y, x), (spine_c[0] - 0.2, spine_c[1] - 0.16), (0.06, 0.08)) + 0.0 * z
    hu[ivc < 1.0] = 140.0 * enh

    # liver (label 1): large, irregular, patient's right (image left), upper slices
    center = _jitter(rng, (0.3, -0.05, -0.38), 0.08)
    radii = [rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.58), rng.uniform(0.4, 0.5)]
    liver = blob(rng, (z, y, x), center, radii, irregularity=0.18, cells=4, max_angle=0.4) & inside
    liver &= ~kidneys & (aorta >= 1.2) & (ivc >= 1.1) & (spine_r >= 1.1)
    liver_hu = rng.uniform(90.0, 115.0)
    texture = 6.0 * smooth_field(rng, shape, (4, 10, 10))
    hu[liver] = liver_hu + texture[liver]
    # hepatic vessels: slightly brighter branching structures inside the liver
    vessels = liver & (np.abs(smooth_field(rng, shape, (3, 6, 6))) < 0.12)
    hu[vessels] += 30.0 * enh

    hu = blur(hu, (0.4, 0.7, 0.7))
    hu += rng.normal(0.0, rng.uniform(8.0, 14.0), size=shape).astype(np.float32)
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = LIVER
    label[kidneys] = KIDNEY
    extent = [n * s for n, s in zip(shape, preset.spacing)]
    origin = (rng.uniform(-400.0, -200.0), -extent[1] / 2.0, -extent[2] / 2.0)  # z, y, x in mm
    return Case(images=[image], label=label, spacing=preset.spacing, origin=origin)


KIND = DatasetKind(
    kind="ct3d",
    name="SynthAbdomenCT",
    default_id=901,
    channel_names={"0": "CT"},
    labels={"background": 0, "liver": LIVER, "kidney": KIDNEY},
    file_ending=".nii.gz",
    description="Synthetic contrast-enhanced abdominal CT (HU, 0.8 x 0.8 x 3 mm): liver and kidneys "
    "among vertebra, aorta, vena cava, fat and bowel gas. Generated by umamba-seg.",
    sizes=size_presets(
        (3.0, 0.8, 0.8), tiny=((24, 48, 48), 6, 2), small=((16, 48, 48), 10, 3), default=((48, 128, 128), 30, 10)
    ),
    render=render_ct_case,
    case_prefix="ct",
)
