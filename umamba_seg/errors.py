"""User-facing errors: one line, `error: <what>, <which file>, <what to do>`.

The CLI catches :class:`UserInputError` and prints it without a traceback (exit 2);
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike


class UserInputError(Exception):
    """Bad usage or bad input that the user can fix."""

    def __init__(self, what: str, where: str | PathLike | None = None, fix: str | None = None):
        self.what = what
        self.where = None if where is None else str(where)
        self.fix = fix
        super().__init__(self.line())

    def __reduce__(self):  # survive pickling across worker processes unchanged
        return (type(self), (self.what, self.where, self.fix))

    def line(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(self.where)
        if self.fix:
            parts.append(self.fix)
        return "error: " + ", ".join(parts)


class UserInputErrors(UserInputError):
    """Several problems found at once (``--verify`` reports every one); one line each."""

    def __init__(self, problems: Sequence[UserInputError]):
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(first.what, first.where, first.fix)

    def __reduce__(self):
        return (type(self), (self.problems,))

    def line(self) -> str:
        lines = [p.line() for p in self.problems]
        if len(lines) > 1:
            lines.append(f"error: {len(lines)} problems found, the dataset, fix each file named above")
        return "\n".join(lines)
