"""json_files.read_json: JSON others wrote, read or refused with one line naming the file."""

from __future__ import annotations

import pytest

from umamba_seg.errors import UserInputError
from umamba_seg.json_files import read_json


def test_reads_valid_json(tmp_path):
    f = tmp_path / "splits_final.json"
    f.write_text('[{"train": ["a"], "val": ["b"]}]')
    assert read_json(f, "fix it") == [{"train": ["a"], "val": ["b"]}]


@pytest.mark.parametrize(
    "content, what",
    [
        (
            b'{"labels": {"background": 0,}}',
            "is not valid JSON (Expecting property name enclosed in double quotes, line 1)",
        ),
        (b'{\n "a": 1\n "b": 2}', "is not valid JSON (Expecting ',' delimiter, line 3)"),
        (b"\xff\xfe{}", "is not valid JSON (not UTF-8 text"),
    ],
)
def test_bad_content_is_one_line_naming_the_file_and_the_fix(tmp_path, content, what):
    f = tmp_path / "dataset.json"
    f.write_bytes(content)
    with pytest.raises(UserInputError) as err:
        read_json(f, "fix the file")
    text = str(err.value)
    assert f"dataset.json {what}" in text and str(f) in text and "fix the file" in text


def test_missing_file_says_so_with_its_own_advice(tmp_path):
    f = tmp_path / "tolerances.json"
    with pytest.raises(UserInputError, match="tolerances.json not found.*fix it"):
        read_json(f, "fix it")
    with pytest.raises(UserInputError, match="NSD tolerance file not found.*pass an existing JSON file"):
        read_json(f, "fix it", missing=("NSD tolerance file not found", "pass an existing JSON file"))
