"""Read nnunetv2's ``.pkl`` side files without running code from them.

nnunetv2 stores image properties (spacing, crop box, the reader's geometry) next to saved
probabilities as ``<case>.pkl``, and its postprocessing choice as ``postprocessing.pkl``. A
plain ``pickle.load`` of such a file runs whatever its author put there. Here an unpickler
admits only data: Python containers and scalars, numpy arrays, scalars and dtypes, plus the
globals a caller names explicitly (e.g. nnunetv2's postprocessing function). Anything else is
refused with one line naming the file, unless the user passed ``--trust-checkpoint``.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from umamba_seg.errors import UserInputError

# (module, name) pairs a numpy array/scalar/dtype pickles to (numpy 1 and 2 spellings; protocol 5
# arrays come back through ``_frombuffer``)
NUMPY_GLOBALS: frozenset[tuple[str, str]] = (
    frozenset(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    )
    | frozenset((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric"))
    | frozenset({("numpy", "ndarray"), ("numpy", "dtype")})
)
# builtins that only build plain values (older pickle protocols name them as globals; protocol
# 0-2 spell bytes as ``_codecs.encode(text, "latin1")``)
BUILTIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for module in ("builtins", "__builtin__")
    for name in ("set", "frozenset", "complex", "slice", "bytearray", "tuple", "list", "dict")
) | frozenset({("_codecs", "encode")})
TRUST_HINT = "only if you trust whoever wrote it, pass --trust-checkpoint"


class _RefusedGlobal(pickle.UnpicklingError):
    """A global outside the allowed set; its message is ``module.name``."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset[tuple[str, str]]):
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


def load_pickle_safe(
    path: str | os.PathLike, trust: bool = False, extra_globals: Iterable[tuple[str, str]] = ()
) -> Any:
    """Unpickle ``path`` admitting only data (and ``extra_globals``); everything when ``trust``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError("pickle file not found", path, "re-run the step that writes it") from None
    if trust:
        try:
            return pickle.loads(raw)
        except Exception as e:  # noqa: BLE001 - any failure of a damaged file
            raise UserInputError(f"unreadable pickle ({type(e).__name__}: {e})", path, "re-create it") from None
    allowed = NUMPY_GLOBALS | BUILTIN_GLOBALS | frozenset(extra_globals)
    try:
        return _DataOnlyUnpickler(io.BytesIO(raw), allowed).load()
    except _RefusedGlobal as e:
        raise UserInputError(
            f"pickle would load '{e}', which is not plain data (refused: it could run code)", path, TRUST_HINT
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt payload
        raise UserInputError(f"unreadable pickle ({type(e).__name__}: {e})", path, "re-create it") from None
