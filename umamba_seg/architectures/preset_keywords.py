"""Network constructors whose settings are their family preset's fields, written once: in the preset.

SegMamba and VM-UNet take every field of their preset (:mod:`~umamba_seg.architectures.presets`)
as a keyword argument, which is how the plans' ``arch_kwargs`` name them, defaulting to the
preset's value. Instead of repeating the fields in each constructor, the constructor takes
``**settings`` and :func:`preset_from_keywords` makes them the preset (a key the preset does not
have, or a value of the wrong type, is a :class:`~umamba_seg.errors.UserInputError` naming the
key); :func:`takes_preset_keywords` gives the class the spread signature, so ``inspect.signature``
and ``help()`` show every keyword with its default, as a written-out signature would.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from umamba_seg.architectures.presets import Preset

P = TypeVar("P", bound=Preset)
T = TypeVar("T", bound=type)


def preset_from_keywords(preset_class: type[P], settings: Mapping[str, Any], network: str) -> P:
    """The preset that a network's keyword ``settings`` describe: its defaults with them applied."""
    return typing.cast(P, preset_class().override(settings, f"the arch_kwargs of {network}"))


def takes_preset_keywords(preset_class: type[Preset]) -> Callable[[T], T]:
    """Class decorator: the class's signature is its ``__init__``'s, with ``**settings`` replaced by
    the fields of ``preset_class`` as keyword-only parameters (their defaults, their types)."""

    def decorate(cls: T) -> T:
        own = inspect.signature(cls.__init__)
        hints = typing.get_type_hints(preset_class)
        defaults = preset_class()
        params = [p for p in list(own.parameters.values())[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD]
        params += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f.name), annotation=hints[f.name]
            )
            for f in dataclasses.fields(defaults)
        ]
        cls.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        return cls

    return decorate
