"""One backend resolver for every op that has several implementations (selective scan, mLSTM).

Each op registers its backends here by name (``"triton"``, ``"torch"``, ``"reference"``,
``"shape"``, ...) with a loader that imports the implementation on first use, and says which
of them ``"auto"`` may pick for a given input tensor. The op asks :func:`resolve_backend`
which backend to run and :func:`backend_implementation` for the object that runs it; the
interface of that object is the op's business (a module with ``forward``/``backward``, a
pair of kernels, ...), not this module's.

Which backend runs, first rule that applies:

1. inside :func:`use_backend` every op runs the backend named there, whatever the caller
   asked for (planning traces memory under ``use_backend("shape")``: no values computed);
2. a backend the caller names (``backend="torch"``);
3. for ``"auto"``: the backend named by the environment variable ``UMAMBA_SEG_OP_BACKEND``
   when it is set (e.g. ``torch`` to keep Triton out of a GPU run while debugging);
4. for ``"auto"``: the first registered backend whose ``auto`` rule accepts the input and
   whose implementation loads (Triton for CUDA tensors), else the op's default (``torch``).

A name no backend of the op has, or a backend that cannot load here, is a
:class:`~umamba_seg.errors.UserInputError` that lists the op's backends.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from umamba_seg.errors import UserInputError

__all__ = [
    "AUTO",
    "ENV_VAR",
    "Backend",
    "BackendUnavailableError",
    "UnknownBackendError",
    "available_backends",
    "backend_available",
    "backend_implementation",
    "backend_table",
    "forced_backend",
    "module_loader",
    "register_backend",
    "registered_ops",
    "resolve_backend",
    "use_backend",
]

AUTO = "auto"
ENV_VAR = "UMAMBA_SEG_OP_BACKEND"


class UnknownBackendError(UserInputError, ValueError):
    """A backend name the op does not have (also a ``ValueError``: a wrong argument value)."""


class BackendUnavailableError(UserInputError):
    """A registered backend whose implementation cannot be loaded here (e.g. Triton missing)."""


@dataclass
class Backend:
    """One implementation of an op.

    ``load`` returns the implementation object (it may import heavy modules: called once, on
    first use; an exception means the backend is unavailable here). ``auto(example)`` says
    whether ``"auto"`` may pick it for an input like ``example``; ``None``: never picked by
    ``"auto"``. ``computes``: False for backends that only produce shapes (never selectable
    through the environment variable, which would silently train on empty tensors).
    ``label`` names it in messages (``"Triton"``).
    """

    name: str
    load: Callable[[], Any]
    auto: Callable[[torch.Tensor], bool] | None = None
    computes: bool = True
    label: str = ""
    _impl: Any = field(default=None, init=False, repr=False)
    _error: str | None = field(default=None, init=False, repr=False)
    _loaded: bool = field(default=False, init=False, repr=False)

    def implementation(self) -> Any:
        """The loaded implementation, or None when it failed to load (see :attr:`error`)."""
        if not self._loaded:
            try:
                self._impl = self.load()
            except Exception as exc:  # noqa: BLE001 - missing module, missing triton, broken install
                self._error = f"{type(exc).__name__}: {exc}"
            self._loaded = True
        return self._impl

    @property
    def available(self) -> bool:
        return self.implementation() is not None

    @property
    def error(self) -> str | None:
        """Why the implementation did not load (None when it did, or before the first try)."""
        return self._error


@dataclass
class _OpBackends:
    op: str  # as it reads in messages: "selective-scan", "mLSTM"
    default: str
    backends: dict[str, Backend] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        return (AUTO, *self.backends)

    def get(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is None:
            raise UnknownBackendError(
                f"unknown {self.op} backend {name!r}", None, f"use one of {', '.join(self.names())}"
            )
        return backend

    def loaded(self, name: str) -> Backend:
        backend = self.get(name)
        if not backend.available:
            label = backend.label or backend.name
            raise BackendUnavailableError(
                f"the {label} {self.op} backend is unavailable ({backend.error})",
                None,
                f"install what it needs, or use one of {', '.join(n for n in self.names() if n != name)}",
            )
        return backend


_OPS: dict[str, _OpBackends] = {}
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar("umamba_seg_forced_backend", default=None)


def _op(op: str) -> _OpBackends:
    try:
        return _OPS[op]
    except KeyError:
        raise KeyError(f"no backends registered for op {op!r} (registered: {', '.join(_OPS) or 'none'})") from None


def register_backend(
    op: str,
    name: str,
    load: Callable[[], Any],
    auto: Callable[[torch.Tensor], bool] | None = None,
    computes: bool = True,
    label: str = "",
    default: bool = False,
) -> Backend:
    """Register (or replace) backend ``name`` of ``op``; registration order is ``"auto"``'s
    order of preference. ``default``: the backend ``"auto"`` falls back to (one per op)."""
    if name == AUTO:
        raise ValueError(f"{AUTO!r} is the resolver's own choice, not a backend name")
    entry = _OPS.get(op)
    if entry is None:
        entry = _OPS[op] = _OpBackends(op=op, default=name)
    backend = Backend(name=name, load=load, auto=auto, computes=computes, label=label)
    entry.backends[name] = backend
    if default:
        entry.default = name
    return backend


def module_loader(module: str) -> Callable[[], Any]:
    """A ``load`` that imports ``module`` (absolute dotted name) on first use."""
    return lambda: importlib.import_module(module)


def backend_table(op: str) -> dict[str, Backend]:
    """``op``'s registered backends by name, in ``"auto"``'s order of preference (the live
    mapping: tests swap entries in it with ``monkeypatch.setitem``)."""
    return _op(op).backends


def registered_ops() -> tuple[str, ...]:
    """Ops with at least one backend registered (those whose package has been imported)."""
    return tuple(_OPS)


def available_backends(op: str) -> tuple[str, ...]:
    """Every name ``op`` accepts: ``"auto"`` and its registered backends."""
    return _op(op).names()


def backend_available(op: str, name: str) -> bool:
    """True when backend ``name`` of ``op`` loads here (it is imported on the first call)."""
    return _op(op).get(name).available


def forced_backend() -> str | None:
    """The backend :func:`use_backend` imposes in this context, if any."""
    return _FORCED.get()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Inside the block, every op runs backend ``name`` (each op must have one by that name)."""
    known = {n for entry in _OPS.values() for n in entry.backends}
    if _OPS and name not in known:
        raise UnknownBackendError(f"no op has a backend {name!r}", None, f"use one of {', '.join(sorted(known))}")
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _auto(entry: _OpBackends, example: torch.Tensor) -> str:
    wanted = os.environ.get(ENV_VAR)
    if wanted:
        backend = entry.get(wanted)
        if not backend.computes:
            raise UserInputError(
                f"{ENV_VAR}={wanted} selects a backend that computes nothing",
                None,
                f"unset it or use one of {', '.join(n for n, b in entry.backends.items() if b.computes)}",
            )
        return entry.loaded(wanted).name
    for backend in entry.backends.values():
        if backend.auto is not None and backend.auto(example) and backend.available:
            return backend.name
    return entry.default


def resolve_backend(op: str, requested: str, example: torch.Tensor) -> str:
    """The concrete backend ``op`` runs when the caller asks for ``requested`` on inputs like
    ``example`` (see the module docstring for the rules); its implementation is loaded."""
    entry = _op(op)
    forced = _FORCED.get()
    if forced is not None:
        return entry.loaded(forced).name
    if requested == AUTO:
        return _auto(entry, example)
    return entry.loaded(requested).name


def backend_implementation(op: str, name: str) -> Any:
    """The implementation object of a concrete backend (as :func:`resolve_backend` returned it)."""
    return _op(op).loaded(name).implementation()
