"""Architecture presets: per-family defaults (d_state, expand, dims, depths, ...) in YAML.

A preset file ``configs/<family>.yaml`` maps a size name to a dict of settings; every
size inherits the ``default`` entry and overrides what it names, so a file only spells
out what differs. ``build_kwargs`` functions of the registry read presets here, so a
user can change a family's defaults without touching code.

Files are looked up in ``configs/`` next to the package (a source checkout) and then in
the package-data copy ``umamba_seg/configs/`` (an installed wheel).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

from umamba_seg.errors import UserInputError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def preset_dirs() -> list[Path]:
    """Folders searched for ``<family>.yaml``, first match wins."""
    return [_PACKAGE_DIR.parent / "configs", _PACKAGE_DIR / "configs"]


def preset_file(family: str) -> Path:
    """The YAML file holding ``family``'s presets."""
    for folder in preset_dirs():
        candidate = folder / f"{family}.yaml"
        if candidate.is_file():
            return candidate
    raise UserInputError(
        f"no preset file for architecture family '{family}'",
        " or ".join(str(d / f"{family}.yaml") for d in preset_dirs()),
        "reinstall umamba-seg or restore the configs/ folder",
    )


@lru_cache(maxsize=None)
def _read(path: str) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserInputError(
            "a preset file must map size names to settings", path, "fix the YAML (see configs/umamba.yaml)"
        )
    return data


def load_preset(family: str, size: str = "default") -> dict:
    """Settings of ``family`` at ``size``: the ``default`` entry updated with the size's own."""
    path = preset_file(family)
    data = _read(str(path))
    if size not in data:
        raise UserInputError(
            f"unknown preset size '{size}' for '{family}'", path, f"choose one of: {', '.join(data)}"
        )
    settings = copy.deepcopy(data.get("default", {}))
    settings.update(copy.deepcopy(data[size]))
    return settings
