"""User-facing errors: one line, `error: <what>, <which file>, <what to do>`.

The CLI catches :class:`UserInputError` and prints it without a traceback (exit 2);
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class UserInputError(Exception):
    """Bad usage or bad input that the user can fix."""

    def __init__(self, what: str, where: str | PathLike | None = None, fix: str | None = None):
        self.what = what
        self.where = None if where is None else str(where)
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(self.where)
        if self.fix:
            parts.append(self.fix)
        return "error: " + ", ".join(parts)
