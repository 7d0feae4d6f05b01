"""Plans are data, not code: every name a plans file makes Python look up is allow-listed.

nnunetv2 turns a plans ``architecture`` block into a network with ``pydoc.locate``: the
``network_class_name`` and every ``arch_kwargs`` value named in ``_kw_requires_import`` are
imported by whatever dotted path the file states, and the network is then called with the
file's keyword arguments. A model folder from elsewhere could therefore import any module and
call any function (``nonlin = "os.system"`` with ``nonlin_kwargs = {"command": ...}``). Our
networks also resolve ``conv_op``/``norm_op``/``dropout_op``/``nonlin`` strings themselves.

Here, before any of that happens:

- ``network_class_name`` must be a registered architecture's class or one of nnunetv2's own
  U-Nets from ``dynamic_network_architectures``;
- every dotted path in ``arch_kwargs`` (and every value of the op keys or of a key named in
  ``_kw_requires_import``) must be one of the torch building blocks below, in the short
  ``torch.nn.X`` or the long ``torch.nn.modules.<file>.X`` spelling, or null;
- the names nnunetv2 looks up by class name inside its own packages (reader-writer, label
  manager, preprocessor, normalization schemes, resampling functions) come from fixed lists:
  those lookups return any attribute of any module there, helpers such as ``save_pickle``
  included; ``data_identifier`` becomes a folder name, so it must be a plain name.

Anything else: :class:`UserInputError` naming the key and the file (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from umamba_seg.errors import UserInputError
from umamba_seg.safe_paths import check_name

NNUNET_NETWORKS: tuple[str, ...] = (
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
)
BUILDING_BLOCKS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.LeakyReLU,
    nn.ReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Identity,
)
# arch_kwargs keys that nnunetv2's networks and ours turn into classes
OP_KEYS: tuple[str, ...] = ("conv_op", "norm_op", "dropout_op", "nonlin")

READER_WRITERS: tuple[str, ...] = (
    "SimpleITKIO",
    "SimpleITKIOWithReorient",
    "NibabelIO",
    "NibabelIOWithReorient",
    "NaturalImage2DIO",
    "Tiff3DIO",
)
LABEL_MANAGERS: tuple[str, ...] = ("LabelManager",)
PREPROCESSORS: tuple[str, ...] = ("DefaultPreprocessor",)
NORMALIZATIONS: tuple[str, ...] = (
    "ZScoreNormalization",
    "CTNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)
RESAMPLING_FNS: tuple[str, ...] = (
    "resample_data_or_seg_to_shape",
    "resample_torch_fornnunet",
    "resample_torch_simple",
    "no_resampling_hack",
)
RESAMPLING_KEYS: tuple[str, ...] = ("resampling_fn_data", "resampling_fn_seg", "resampling_fn_probabilities")

# a key earlier versions wrote into architecture blocks (a training setting stock nnU-Net ignored;
# the optimizer is now the trainer class's recipe)
RETIRED_ARCHITECTURE_KEYS: tuple[str, ...] = ("umamba_optimizer",)

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_FIX = "use plans written by umamba-seg or nnU-Net (see docs/security.md for what is allowed)"


def building_block_paths() -> frozenset[str]:
    """Both spellings of every allowed building block, from the installed torch's own classes."""
    paths = set()
    for cls in BUILDING_BLOCKS:
        paths.add(f"torch.nn.{cls.__name__}")
        paths.add(f"{cls.__module__}.{cls.__qualname__}")
    return frozenset(paths)


def network_class_names() -> frozenset[str]:
    """Registered architectures' classes plus nnunetv2's own U-Nets."""
    from umamba_seg.architectures import registry

    return frozenset({registry.get(n).network_class_name for n in registry.available()} | set(NNUNET_NETWORKS))


def _refuse(key: str, value: Any, where: str | os.PathLike | None, allowed: Iterable[str] | None = None) -> None:
    choices = f" (allowed: {', '.join(sorted(allowed))})" if allowed is not None and len(list(allowed)) <= 8 else ""
    raise UserInputError(f"plans key '{key}' = {value!r} is not an allowed name{choices}", where, _FIX)


def _dotted_strings(value: Any, key: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        if _DOTTED.match(value):
            yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _dotted_strings(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _dotted_strings(v, f"{key}[{i}]")


def check_network(
    network_class_name: Any,
    arch_kwargs: Any,
    requires_import: Any,
    where: str | os.PathLike | None,
    prefix: str = "architecture",
) -> None:
    """The pieces of one ``architecture`` block, as ``get_network_from_plans`` receives them."""
    if network_class_name not in network_class_names():
        _refuse(f"{prefix}.network_class_name", network_class_name, where)
    if not isinstance(arch_kwargs, dict):
        raise UserInputError(f"plans key '{prefix}.arch_kwargs' is not an object", where, _FIX)
    if not isinstance(requires_import, (list, tuple)) or not all(isinstance(k, str) for k in requires_import):
        raise UserInputError(f"plans key '{prefix}._kw_requires_import' is not a list of key names", where, _FIX)
    blocks = building_block_paths()
    for key in requires_import:
        if key not in arch_kwargs:
            raise UserInputError(
                f"plans key '{prefix}._kw_requires_import' names '{key}', which is not in arch_kwargs", where, _FIX
            )
    for key in set(requires_import) | {k for k in OP_KEYS if k in arch_kwargs}:
        value = arch_kwargs[key]
        if value is not None and value not in blocks:
            _refuse(f"{prefix}.arch_kwargs.{key}", value, where)
    for key, value in _dotted_strings(arch_kwargs, f"{prefix}.arch_kwargs"):
        if value not in blocks:
            _refuse(key, value, where)


def check_architecture(block: Any, where: str | os.PathLike | None, prefix: str = "architecture") -> None:
    """One plans ``architecture`` block (``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``)."""
    if not isinstance(block, dict):
        raise UserInputError(f"plans key '{prefix}' is not an object", where, _FIX)
    for key in RETIRED_ARCHITECTURE_KEYS:
        if key in block:
            raise UserInputError(
                f"plans key '{prefix}.{key}' is from an older umamba-seg (the optimizer is now "
                "chosen by `train --recipe`)",
                where,
                "plan again: umamba-seg plan-and-preprocess -d <dataset> -a <arch>",
            )
    check_network(
        block.get("network_class_name"), block.get("arch_kwargs"), block.get("_kw_requires_import", []), where, prefix
    )


def _check_choice(key: str, value: Any, allowed: tuple[str, ...], where) -> None:
    if value not in allowed:
        _refuse(key, value, where, allowed)


def check_configuration(configuration: Any, name: str, where: str | os.PathLike | None) -> None:
    """One entry of ``configurations`` (it may inherit from another, so every key is optional)."""
    prefix = f"configurations.{name}"
    if not isinstance(configuration, dict):
        raise UserInputError(f"plans key '{prefix}' is not an object", where, _FIX)
    if "architecture" in configuration:
        check_architecture(configuration["architecture"], where, f"{prefix}.architecture")
    if "data_identifier" in configuration:
        check_name(
            configuration["data_identifier"],
            f"plans key '{prefix}.data_identifier'",
            where,
            "data_identifier names a folder of the preprocessed dataset: use a plain name",
        )
    if "preprocessor_name" in configuration:
        _check_choice(f"{prefix}.preprocessor_name", configuration["preprocessor_name"], PREPROCESSORS, where)
    schemes = configuration.get("normalization_schemes", [])
    if not isinstance(schemes, list):
        raise UserInputError(f"plans key '{prefix}.normalization_schemes' is not a list", where, _FIX)
    for i, scheme in enumerate(schemes):
        _check_choice(f"{prefix}.normalization_schemes[{i}]", scheme, NORMALIZATIONS, where)
    for key in RESAMPLING_KEYS:
        if key in configuration:
            _check_choice(f"{prefix}.{key}", configuration[key], RESAMPLING_FNS, where)
    for key in ("inherits_from", "previous_stage"):
        if key in configuration and not isinstance(configuration[key], str):
            raise UserInputError(f"plans key '{prefix}.{key}' is not a configuration name", where, _FIX)


def check_plans(plans: Any, where: str | os.PathLike | None) -> None:
    """A whole plans file: every configuration, and the names nnunetv2 resolves at the top level."""
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise UserInputError("plans file lacks 'configurations'", where, _FIX)
    if "image_reader_writer" in plans:
        _check_choice("image_reader_writer", plans["image_reader_writer"], READER_WRITERS, where)
    if "label_manager" in plans:
        _check_choice("label_manager", plans["label_manager"], LABEL_MANAGERS, where)
    for key in ("dataset_name", "plans_name"):
        if key in plans:
            check_name(plans[key], f"plans key '{key}'", where, f"{key} names a folder or file: use a plain name")
    for name, configuration in plans["configurations"].items():
        check_configuration(configuration, name, where)


def check_dataset_json_names(dataset_json: Any, where: str | os.PathLike | None) -> None:
    """dataset.json's ``overwrite_image_reader_writer`` (nnunetv2 looks it up by name)."""
    if not isinstance(dataset_json, dict):
        raise UserInputError("dataset.json is not an object", where, "use an nnU-Net dataset.json")
    rw = dataset_json.get("overwrite_image_reader_writer")
    if rw is not None and rw != "None" and rw not in READER_WRITERS:
        raise UserInputError(
            f"dataset.json key 'overwrite_image_reader_writer' = {rw!r} is not an allowed name "
            f"(allowed: {', '.join(READER_WRITERS)})",
            where,
            "use one of nnU-Net's readers",
        )
