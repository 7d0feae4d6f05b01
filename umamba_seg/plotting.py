"""Plots drawn under matplotlib's default style, whatever the process set before.

nnunetv2's ``progress.png`` code switches the whole process to seaborn with
``font_scale=2.5``; a report plotted later in the same process (``demo``, ``benchmark``,
``evaluate`` after ``train``) would inherit those huge fonts. Our plotting functions run
inside :func:`default_style`, which restores every setting afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def default_style(fn: F) -> F:
    """Decorate ``fn`` so that it draws under ``matplotlib.style.context("default")``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from matplotlib import style

        with style.context("default"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
