"""How a case's images are named: ``<case>_XXXX<ending>``, one file per channel.

The raw-dataset check (training images) and the prediction input folder follow the same
rule, so it lives here, below both. Natural images (PNG, BMP, JPEG) of a 3- or 4-channel
dataset may also come as one RGB(A) file per case, which nnunetv2's reader splits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")  # a file name without its ending
NATURAL_IMAGE_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")


def allowed_file_counts(num_channels: int, endings: Sequence[str]) -> set[int]:
    """Files per case: one per channel, or one RGB(A) file for 3/4 channels of natural images."""
    counts = {num_channels}
    if num_channels in (3, 4) and any(e.lower() in NATURAL_IMAGE_ENDINGS for e in endings):
        counts.add(1)
    return counts
