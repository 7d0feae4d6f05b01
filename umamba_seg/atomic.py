"""Atomic writes: write to a temporary name in the same folder, then rename.

A kill -9 at any moment leaves either the old file or the new one, never half of one. The
file gets the mode a plain ``open()`` would give it (0666 less the umask), not the 0600 of a
temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """Mode of a newly created regular file under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success.

    ``suffix`` defaults to the final file's own ending (writers such as SimpleITK and
    numpy pick the format from it).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        name = final.name
        suffix = name[name.index(".") :] if "." in name else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, new_file_mode())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _numpy_to_builtin(obj: Any) -> Any:
    """JSON fallback for numpy scalars and arrays (nnunetv2 hands us both, e.g. in plans and
    postprocessing kwargs); anything else is still a TypeError."""
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(obj: Any, final: str | os.PathLike, indent: int = 2) -> None:
    """Dump ``obj`` as JSON to ``final`` atomically (numpy scalars/arrays become numbers/lists)."""
    with atomic_path(final) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=False, default=_numpy_to_builtin)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(text: str, final: str | os.PathLike) -> None:
    """Write ``text`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
