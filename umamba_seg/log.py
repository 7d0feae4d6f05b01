"""What the command line shows: the package logger ``umamba_seg``, set up once by the CLI.

Library modules only call ``logging.getLogger(__name__)`` and never configure logging, so a
program that imports the package keeps its own logging setup. The CLI runs each command
under :func:`command_logging` with the verbosity of ``--quiet`` / ``--verbose``:

- default (INFO): progress and status lines exactly as written, no level or logger prefix;
- ``--quiet`` (WARNING): warnings and errors only, and no progress bars (:func:`show_progress`);
- ``--verbose`` (DEBUG): details too, each line with its level and logger name.

Warnings and errors read ``warning: ...`` / ``error: ...`` on stderr; info and debug lines go
to stdout, where they always were. A command's result (a table, a report) is not a log line:
it is printed, so ``--quiet`` leaves the result alone. nnU-Net's own training log
(``training_log_*.txt``, written by its trainer) is written as always; ``--quiet`` only keeps
its lines off the console.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

PACKAGE = "umamba_seg"
QUIET, DEFAULT, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class _LineFormatter(logging.Formatter):
    """``message`` for info, ``warning: message`` / ``error: message`` above it; with
    ``names``, every line as ``level: logger: message``."""

    def __init__(self, names: bool):
        super().__init__()
        self.names = names

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.names:
            return f"{record.levelname.lower()}: {record.name}: {text}"
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


class _SplitStreamHandler(logging.Handler):
    """Info and debug to stdout, warnings and errors to stderr; the streams are looked up at
    every record, so a replaced ``sys.stdout`` (a test's capture, a redirect) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never stop the command
            self.handleError(record)


def configure(level: int = DEFAULT) -> logging.Logger:
    """Set the package logger to ``level`` with the CLI's one handler (calling it again replaces
    the handler, so a command run inside another, as the demo does, does not double its lines)."""
    logger = logging.getLogger(PACKAGE)
    for old in [h for h in logger.handlers if isinstance(h, _SplitStreamHandler)]:
        logger.removeHandler(old)
    handler = _SplitStreamHandler()
    handler.setFormatter(_LineFormatter(names=level <= logging.DEBUG))
    logger.addHandler(handler)
    logger.setLevel(level)  # records still reach the root logger's handlers (a test's capture)
    return logger


def level_from_flags(quiet: bool, verbose: bool) -> int:
    """The logger level for ``--quiet`` / ``--verbose`` (the parser keeps them exclusive)."""
    return QUIET if quiet else VERBOSE if verbose else DEFAULT


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose``, mutually exclusive, as every command takes them."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="show only warnings and errors (no progress bars)")
    group.add_argument("--verbose", action="store_true", help="show details too, with the logger's name")


@contextlib.contextmanager
def command_logging(quiet: bool = False, verbose: bool = False) -> Iterator[logging.Logger]:
    """The package logger set up for one command, and the previous setup back afterwards.

    Without either flag, a command run inside another (the demo runs each step through the
    CLI) keeps the outer command's verbosity; otherwise the level is the flags'.
    """
    logger = logging.getLogger(PACKAGE)
    level, handlers = logger.level, list(logger.handlers)
    nested = any(isinstance(h, _SplitStreamHandler) for h in handlers)
    if quiet or verbose or not nested:
        configure(level_from_flags(quiet, verbose))
    try:
        yield logger
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(level)


def show_progress() -> bool:
    """Whether progress bars should draw: not once ``--quiet`` raised the package logger above
    INFO. A program that imports the package without configuring it keeps its bars."""
    level = logging.getLogger(PACKAGE).level
    return level == logging.NOTSET or level <= logging.INFO
