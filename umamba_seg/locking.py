"""One writer per output folder: an exclusive lock file that a killed holder cannot leave stuck.

``train`` locks its fold folder and ``predict`` its output folder (one lock per ``--part-id``,
so shards may share a folder). The lock is a ``flock`` on a hidden file in the folder: the
kernel drops it when its holder dies, even by ``kill -9``, so a lock file left behind by a
dead run is simply taken over. The file records who holds it (pid, host, command, start
time) so a refused second run can say whose lock it met. Where the file system offers no
``flock`` (some network mounts), a recorded pid that no longer runs on this host counts as
stale instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from umamba_seg.errors import UserInputError

try:
    import fcntl
except ImportError:  # Windows: no flock, the pid record decides
    fcntl = None


def _holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def read_holder(lock_file: Path) -> dict:
    """What the lock file says about its holder (empty if unreadable)."""
    try:
        data = json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


def _refuse(lock_file: Path, what: str, holder: dict) -> UserInputError:
    return UserInputError(
        f"{what} is in use by {_describe(holder)}",
        lock_file.parent,
        f"wait for that run to finish (or stop it), or use another folder; a lock left by a "
        f"killed run is taken over automatically ({lock_file.name})",
    )


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: held by someone else; None: this file system has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, name: str, what: str) -> Iterator[Path]:
    """Hold ``folder/name`` exclusively for the ``with`` block, else raise :class:`UserInputError`
    naming the holder (``what`` says what is locked, e.g. "fold folder"). The folder must exist."""
    lock_file = Path(folder) / name
    for _ in range(5):  # retried only when the file was replaced under us
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserInputError(
                f"cannot create the lock file ({e.strerror})",
                lock_file,
                "make the folder writable or choose another one",
            ) from e
        try:
            got = _try_flock(fd)
            if got is False:
                raise _refuse(lock_file, what, read_holder(lock_file))
            if got is None:
                holder = read_holder(lock_file)
                pid = holder.get("pid")
                if (
                    isinstance(pid, int)
                    and pid != os.getpid()
                    and holder.get("host") == socket.gethostname()
                    and _pid_alive(pid)
                ):
                    raise _refuse(lock_file, what, holder)
            if not _same_file(fd, lock_file):  # released and removed by its holder meanwhile
                os.close(fd)
                continue
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        break
    else:
        raise UserInputError(f"{what} lock keeps changing", lock_file, "another run is starting; retry")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_record()).encode(), 0)
        yield lock_file
    finally:
        if _same_file(fd, lock_file):
            with contextlib.suppress(OSError):
                lock_file.unlink()  # while still holding it, so a waiter never locks a removed file
        os.close(fd)
