"""Group a prediction input folder into cases: ``<case>_XXXX<ending>`` files per channel.

Any file ending the model's image reader supports is accepted (a model trained on NIfTI
also predicts MHA/NRRD), and each case's output keeps its input's ending. Single-channel
datasets may omit the ``_0000`` suffix (a plain ``<case><ending>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from umamba_seg.case_files import CHANNEL_NAME, allowed_file_counts
from umamba_seg.errors import UserInputError


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[Path, ...]  # one per channel, in channel order
    ending: str


def _match_ending(name: str, endings: Sequence[str]) -> str | None:
    for e in sorted(endings, key=len, reverse=True):
        if name.lower().endswith(e.lower()):
            return name[len(name) - len(e) :]
    return None


def group_cases(folder: Path, endings: Sequence[str], num_channels: int) -> dict[str, Case]:
    """``{case: Case}`` for every readable file in ``folder``, validated against ``num_channels``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError("input folder not found", folder, "pass an existing folder with -i")
    found: list[tuple[Path, str]] = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            e = _match_ending(p.name, endings)
            if e is not None:
                found.append((p, e))
    if not found:
        others = sorted({"".join(p.suffixes) for p in folder.iterdir() if p.is_file()} - {""})
        raise UserInputError(
            "no image files to predict" + (f" (found only {', '.join(others)})" if others else " (folder is empty)"),
            folder,
            f"put images named <case>_0000<ending> there, ending one of {', '.join(endings)}",
        )
    chans: dict[str, dict[int, Path]] = {}
    case_ending: dict[str, str] = {}
    plain: list[tuple[Path, str]] = []
    for p, e in found:
        m = CHANNEL_NAME.match(p.name[: -len(e)])
        if m:
            case = m.group("case")
            chans.setdefault(case, {})[int(m.group("ch"))] = p
            if case_ending.setdefault(case, e) != e:
                raise UserInputError(
                    f"case '{case}' mixes file endings {case_ending[case]} and {e}",
                    p,
                    "give all channels of a case the same format",
                )
        else:
            plain.append((p, e))
    if plain:
        if num_channels != 1:
            raise UserInputError(
                f"file without a channel suffix but the model expects {num_channels} channels",
                plain[0][0],
                f"name channel files <case>_0000{plain[0][1]} ... <case>_{num_channels - 1:04d}{plain[0][1]}",
            )
        for p, e in plain:
            case = p.name[: -len(e)]
            if case in chans:
                raise UserInputError("case given both with and without _0000", p, "keep only one of the two files")
            chans[case] = {0: p}
            case_ending[case] = e
    out: dict[str, Case] = {}
    files_per_case = allowed_file_counts(num_channels, endings)
    for case, ch in sorted(chans.items()):
        e = case_ending[case]
        n = max(ch) + 1
        missing = sorted(set(range(n)) - set(ch))
        if not missing and n not in files_per_case:
            if n < max(files_per_case):
                missing = list(range(n, max(files_per_case)))
            else:
                extra = [c for c in ch if c >= max(files_per_case)]
                raise UserInputError(
                    f"case '{case}' has extra channel(s) {', '.join(f'{c:04d}' for c in extra)}",
                    ch[extra[0]],
                    f"the model expects {num_channels} channel(s): remove or rename the file",
                )
        if missing:
            raise UserInputError(
                f"case '{case}' is missing channel(s) {', '.join(f'{c:04d}' for c in missing)}",
                folder / f"{case}_{missing[0]:04d}{e}",
                f"the model expects {num_channels} channel(s) per case: add the file",
            )
        out[case] = Case(case, tuple(ch[c] for c in range(n)), e)
    return out
