"""How a case's image files are named (umamba_seg.case_files), as training checks and prediction read it."""

from __future__ import annotations

import pytest

from umamba_seg.case_files import CHANNEL_NAME, allowed_file_counts
from umamba_seg.errors import UserInputError
from umamba_seg.inference.inputs import group_cases


def test_channel_suffix():
    m = CHANNEL_NAME.match("liver_07_0002")
    assert m and (m.group("case"), int(m.group("ch"))) == ("liver_07", 2)
    assert CHANNEL_NAME.match("liver_07_002") is None and CHANNEL_NAME.match("_0000") is None


@pytest.mark.parametrize(
    "channels, endings, counts",
    [
        (3, [".png"], {1, 3}),  # one RGB file or three grey ones
        (4, [".JPG"], {1, 4}),  # RGBA, any case of the ending
        (3, [".nii.gz"], {3}),  # volumes: one file per channel
        (1, [".png"], {1}),
        (2, [".png"], {2}),
    ],
)
def test_files_per_case(channels, endings, counts):
    assert allowed_file_counts(channels, endings) == counts


def test_prediction_inputs_follow_the_same_rule(tmp_path):
    (tmp_path / "rgb_0000.png").write_bytes(b"")  # one RGB file for three channels
    (tmp_path / "grey_0000.png").write_bytes(b"")
    (tmp_path / "grey_0001.png").write_bytes(b"")
    (tmp_path / "grey_0002.png").write_bytes(b"")
    cases = group_cases(tmp_path, [".png"], 3)
    assert {k: len(v.files) for k, v in cases.items()} == {"rgb": 1, "grey": 3}
    (tmp_path / "vol_0000.nii.gz").write_bytes(b"")
    with pytest.raises(UserInputError, match="case 'vol' is missing channel"):
        group_cases(tmp_path, [".nii.gz"], 3)
