"""Read a JSON file a user or another tool wrote, or say in one line what is wrong with it.

Every command reads JSON it did not write itself (dataset.json, splits, plans, manifests,
tolerance files); each failure becomes a :class:`~umamba_seg.errors.UserInputError` naming the
file, what is wrong (missing, not UTF-8, not JSON and where) and the fix the caller knows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from umamba_seg.errors import UserInputError


def read_json(path: str | os.PathLike, fix: str, missing: tuple[str, str] | None = None) -> Any:
    """The parsed content of ``path``. ``fix`` is the advice for a file that is not valid JSON;
    ``missing`` is ``(what, fix)`` for a file that does not exist (default: the same advice)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        what, advice = missing or (f"{path.name} not found", fix)
        raise UserInputError(what, path, advice) from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path.name} is not valid JSON (not UTF-8 text: {e.reason})", path, fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path.name} is not valid JSON ({e.msg}, line {e.lineno})", path, fix) from None
