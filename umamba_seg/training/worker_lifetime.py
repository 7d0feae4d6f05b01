"""Data-augmentation workers die with the training process, even when it is killed with -9.

nnunetv2's ``NonDetMultiThreadedAugmenter`` forks worker processes that loop forever
filling a queue; when their parent is killed without a chance to stop them they stay
alive (orphans) for minutes. Processes forked inside :func:`workers_die_with_parent` ask
the kernel to kill them when their parent dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``);
elsewhere a daemon thread in each of them exits the process once its parent is gone.
The hook is ``os.register_at_fork``, so it covers the ``fork`` start method that nnunetv2's
augmenters use on Linux; it is active only inside the ``with`` block, in the thread that
forks (the kernel's death signal follows the forking thread, which is nnunetv2's main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1
_state = threading.local()
_registered = False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """In a child process: arrange to be killed as soon as ``parent`` (its parent) is gone."""
    done = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            done = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            done = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not done:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _after_fork_in_child() -> None:
    parent = getattr(_state, "parent", None)
    if parent is not None:
        _state.parent = None
        die_with_parent(parent)


@contextlib.contextmanager
def workers_die_with_parent() -> Iterator[None]:
    """Processes forked by this thread inside the block die when this process dies."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _registered = True
    previous = getattr(_state, "parent", None)
    _state.parent = os.getpid()
    try:
        yield
    finally:
        _state.parent = previous
