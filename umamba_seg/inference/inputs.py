"""Group a prediction input folder into cases: ``<case>_XXXX<ending>`` files per channel.

Single-channel datasets may omit the ``_0000`` suffix (a plain ``<case><ending>``).
"""

from __future__ import annotations

import re
from pathlib import Path

from umamba_seg.errors import UserInputError


def group_cases(folder: Path, file_ending: str, num_channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files in order]}``, validated against ``num_channels``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError("input folder not found", folder, "pass an existing folder with -i")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(file_ending)
                   and not p.name.startswith("."))
    if not files:
        others = sorted({"".join(p.suffixes) for p in folder.iterdir() if p.is_file()})
        raise UserInputError(
            f"no '{file_ending}' files to predict" + (f" (found {', '.join(others)})" if others else ""),
            folder, f"put images named <case>_0000{file_ending} there (the model's file_ending)",
        )
    chan_re = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
    cases: dict[str, dict[int, Path]] = {}
    plain: list[Path] = []
    for p in files:
        stem = p.name[: -len(file_ending)]
        m = chan_re.match(stem)
        if m:
            cases.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
        else:
            plain.append(p)
    if plain:
        if num_channels != 1:
            raise UserInputError(
                f"file without a channel suffix but the model expects {num_channels} channels", plain[0],
                f"name channel files <case>_0000{file_ending} ... <case>_{num_channels - 1:04d}{file_ending}",
            )
        for p in plain:
            case = p.name[: -len(file_ending)]
            if case in cases:
                raise UserInputError("case given both with and without _0000", p, "keep only one of the two files")
            cases[case] = {0: p}
    out: dict[str, list[Path]] = {}
    for case, chans in sorted(cases.items()):
        expected = set(range(num_channels))
        if set(chans) != expected:
            missing = sorted(expected - set(chans))
            extra = sorted(set(chans) - expected)
            if missing:
                raise UserInputError(
                    f"case '{case}' is missing channel(s) {', '.join(f'{c:04d}' for c in missing)}",
                    folder / f"{case}_{missing[0]:04d}{file_ending}",
                    f"the model expects {num_channels} channel(s) per case: add the file",
                )
            raise UserInputError(
                f"case '{case}' has extra channel(s) {', '.join(f'{c:04d}' for c in extra)}",
                chans[extra[0]], f"the model expects {num_channels} channel(s): remove or rename the file",
            )
        out[case] = [chans[c] for c in range(num_channels)]
    return out
