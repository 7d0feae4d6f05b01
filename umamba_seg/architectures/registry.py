"""Short architecture names (``-a NAME``) -> how to build that network from a plan.

Every architecture is planned from the CNN's plan of the same configuration: the
registry entry turns the CNN's ``architecture`` block (``network_class_name``,
``arch_kwargs``, ``_kw_requires_import``) plus the configuration's patch size into the
block for this architecture. The result is written to ``umambaPlans_<name>.json`` and
resolved by nnunetv2's ``get_network_from_plans`` with ``pydoc.locate``, so stock
``nnUNetv2_train``/``nnUNetv2_predict`` can run our plans too.

Network modules register themselves on import; :func:`load_all` imports them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from umamba_seg.architectures import presets
from umamba_seg.errors import UserInputError

# (cnn_arch_kwargs, patch_size, conv_op_dim) -> this architecture's arch_kwargs
ArchKwargsBuilder = Callable[[dict, Sequence[int]], dict]


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture."""

    name: str
    network_class_name: str  # import path resolved by pydoc.locate
    build_kwargs: ArchKwargsBuilder
    kw_requires_import: tuple[str, ...] = ("conv_op", "norm_op", "dropout_op", "nonlin")
    family: str = "cnn"
    description: str = ""
    has_ssm: bool = False
    # patch sizes the network accepts: returns the nearest accepted patch (None = any
    # patch divisible by the plan's total downsampling)
    adjust_patch: Callable[[Sequence[int]], list[int]] | None = None
    extra: dict = field(default_factory=dict)
    # the optimizer of the network's authors ("sgd" or "adamw"): the planner's memory budget counts
    # its state (the larger of the recipes' states; the recipes themselves are trainer classes)
    authors_optimizer: str = "sgd"
    # the family preset's size the kwargs are built at (``presets``; the CNN has none)
    preset_size: str = "default"

    def architecture_block(self, cnn_architecture: dict, patch_size: Sequence[int]) -> dict:
        """The plans' ``architecture`` entry for this network."""
        kwargs = self.build_kwargs(dict(cnn_architecture["arch_kwargs"]), list(patch_size))
        req = [k for k in self.kw_requires_import if k in kwargs and kwargs[k] is not None]
        block = {
            "network_class_name": self.network_class_name,
            "arch_kwargs": kwargs,
            "_kw_requires_import": req,
        }
        return block

    def ablation(self, description: str) -> ArchSpec:
        """``<name>_nossm``: this network built with ``use_ssm=False`` (its builder takes that keyword)."""
        build = partial(self.build_kwargs, use_ssm=False)
        return dataclasses.replace(
            self, name=f"{self.name}_nossm", build_kwargs=build, description=description, has_ssm=False
        )

    def at_size(self, size: str) -> ArchSpec:
        """This architecture with its family's preset at ``size`` (``default``: itself).

        ``build_kwargs`` and ``adjust_patch`` take a ``size`` keyword; the CNN, which has no
        preset, stays nnU-Net's plan. An unknown size is a :class:`UserInputError`.
        """
        if size == self.preset_size:
            return self
        known = presets.sizes(self.family) if self.family in presets.PRESETS else presets.all_sizes()
        if size not in known:
            raise UserInputError(
                f"unknown preset size '{size}' for {self.name}", "--preset", f"choose one of: {', '.join(known)}"
            )
        if self.family not in presets.PRESETS:
            return self
        adjust = None if self.adjust_patch is None else partial(self.adjust_patch, size=size)
        return dataclasses.replace(
            self, build_kwargs=partial(self.build_kwargs, size=size), adjust_patch=adjust, preset_size=size
        )


_REGISTRY: dict[str, ArchSpec] = {}

# modules that register architectures when imported (each may be missing while the
# network issue that adds it has not landed)
_ARCH_MODULES = (
    "umamba_seg.architectures.cnn",
    "umamba_seg.architectures.umamba",
    "umamba_seg.architectures.segmamba",
    "umamba_seg.architectures.vmunet",
    "umamba_seg.architectures.xlstm_unet",
)
_loaded = False


def register(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


def class_path(cls: type) -> str:
    """The dotted path that ``pydoc.locate`` resolves to ``cls``: a plan's ``network_class_name``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_with_ablation(
    network: type, family: str, build_kwargs: ArchKwargsBuilder, description: str, ablation: str, **fields: Any
) -> ArchSpec:
    """Register ``network`` of ``family`` (named as the family unless ``fields`` give a ``name``)
    and its ``_nossm`` ablation (:meth:`ArchSpec.ablation`: ``build_kwargs`` with ``use_ssm=False``,
    described by ``ablation``); ``fields`` are further :class:`ArchSpec` fields."""
    spec = ArchSpec(family, class_path(network), build_kwargs, family=family, description=description, has_ssm=True)
    spec = register(dataclasses.replace(spec, **fields))
    register(spec.ablation(ablation))
    return spec


def load_all() -> None:
    """Import every architecture module so that it registers itself."""
    global _loaded
    if _loaded:
        return
    for mod in _ARCH_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a network issue not landed yet
            if e.name != mod:
                raise
    _loaded = True


def available() -> list[str]:
    """Registered names, CNN first, ablations after their parent."""
    load_all()
    names = sorted(_REGISTRY, key=lambda n: (n != "cnn", n.removesuffix("_nossm"), n.endswith("_nossm")))
    return names


def get(name: str) -> ArchSpec:
    """The spec for ``name``; a clear error naming the choices otherwise."""
    load_all()
    if name not in _REGISTRY:
        raise UserInputError(
            f"unknown architecture '{name}'",
            "-a/--arch",
            f"choose one of: {', '.join(available())}",
        )
    return _REGISTRY[name]
