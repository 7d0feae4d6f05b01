"""Built-in synthetic datasets in nnU-Net raw format, for the demo, tests and first steps.

Four kinds, each with learnable, realistic structure and held-out labelled test cases:

- ``ct3d``: abdominal CT in HU, 0.8 x 0.8 x 3 mm, liver and kidneys (NIfTI);
- ``mri3d``: two-channel brain MRI (T1, FLAIR), oedema and tumour core (NIfTI);
- ``endoscopy2d``: RGB laparoscopy frames, instruments over textured tissue (PNG);
- ``microscopy2d``: fluorescence nuclei, touching, of varying size, nucleus + border (TIFF).

``make_dataset`` writes ``<raw_dir>/DatasetXXX_<Name>`` and is what
``umamba-seg make-dataset --kind ...`` runs.
"""

from __future__ import annotations

from umamba_seg.data.generate import case_ids, get_kind, make_dataset

KINDS: tuple[str, ...] = ("ct3d", "mri3d", "endoscopy2d", "microscopy2d")

__all__ = ["KINDS", "case_ids", "get_kind", "make_dataset"]
