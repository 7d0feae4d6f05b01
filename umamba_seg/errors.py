"""User-facing errors: one line, `error: <what>, <which file>, <what to do>`.

The CLI catches :class:`UserInputError` and prints it without a traceback (exit 2);
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from os import PathLike
from typing import TypeVar

T = TypeVar("T")


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


def require_all_in(
    items: Iterable[T],
    container: Container[T],
    what: Callable[[list[T]], str],
    where: str | PathLike | None = None,
    fix: str | None = None,
) -> None:
    """Check that every one of ``items`` is in ``container`` (required keys of a dict, names on an
    allow-list); else a :class:`UserInputError` saying ``what(absent)`` about the absent ones, in
    order, with ``where`` and ``fix``. The one place for the "list what is missing, refuse if
    anything is" check, so each caller only words its message."""
    absent = [item for item in items if item not in container]
    if absent:
        raise UserInputError(what(absent), where, fix)
