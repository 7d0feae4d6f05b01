"""The U-Mamba and xLSTM-UNet forks' plans, as our plans for the matching architecture.

Both forks vendor nnunetv2 2.1.1, whose plans describe the network per configuration with
``UNet_class_name``, ``UNet_base_num_features``, ``unet_max_num_features``,
``n_conv_per_stage_encoder``, ``n_conv_per_stage_decoder``, ``pool_op_kernel_sizes`` and
``conv_kernel_sizes`` instead of today's ``architecture`` block. Their trainers
(``nnUNetTrainerUMambaBot`` ...) ignore ``UNet_class_name`` and build their network from
the other keys with the PlainConvUNet's operators (conv bias, affine InstanceNorm with eps
1e-5, LeakyReLU): that is the CNN plan nnunetv2's own old-plans conversion
(``ConfigurationManager``) reconstructs, so we let it, and turn the result into our
architecture's block with the registry, as our planners do. Preprocessing keys (spacing,
normalisation, resampling, intensity properties, transposes, reader) carry over unchanged;
every name nnunetv2 will look up in them must pass :mod:`umamba_seg.architectures.plans_allowlist`,
as in ``predict``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from umamba_seg.architectures import registry
from umamba_seg.architectures.plans_allowlist import check_plans
from umamba_seg.errors import UserInputError, require_all_in
from umamba_seg.planning.naming import plans_identifier

# --from value -> {trainer class name in the fork -> our architecture}
FORK_TRAINERS: dict[str, dict[str, str]] = {
    "u-mamba": {
        "nnUNetTrainerUMambaBot": "umamba_bot",
        "nnUNetTrainerUMambaEnc": "umamba_enc",
        "nnUNetTrainerUMambaEncNoAMP": "umamba_enc",
    },
    "xlstm-unet": {
        "nnUNetTrainerUxLSTMBot": "xlstm_bot",
        "nnUNetTrainerUxLSTMEnc": "xlstm_enc",
        "nnUNetTrainerUxLSTMEncNoAMP": "xlstm_enc",
    },
}
SOURCES = tuple(FORK_TRAINERS)

# keys of a 2.1.1 configuration that describe the network (replaced by our architecture block)
OLD_NETWORK_KEYS = (
    "UNet_class_name",
    "UNet_base_num_features",
    "unet_max_num_features",
    "n_conv_per_stage_encoder",
    "n_conv_per_stage_decoder",
    "num_pool_per_axis",
    "pool_op_kernel_sizes",
    "conv_kernel_sizes",
)
_REQUIRED_CONFIGURATION_KEYS = (
    "preprocessor_name",
    "batch_size",
    "patch_size",
    "spacing",
    "normalization_schemes",
    "use_mask_for_norm",
    "UNet_base_num_features",
    "unet_max_num_features",
    "n_conv_per_stage_encoder",
    "n_conv_per_stage_decoder",
    "pool_op_kernel_sizes",
    "conv_kernel_sizes",
    "resampling_fn_data",
    "resampling_fn_seg",
    "resampling_fn_data_kwargs",
    "resampling_fn_seg_kwargs",
    "resampling_fn_probabilities",
    "resampling_fn_probabilities_kwargs",
)
_REQUIRED_PLANS_KEYS = (
    "dataset_name",
    "configurations",
    "image_reader_writer",
    "transpose_forward",
    "transpose_backward",
    "foreground_intensity_properties_per_channel",
)
_CARRIED_PLANS_KEYS = _REQUIRED_PLANS_KEYS + (
    "original_median_spacing_after_transp",
    "original_median_shape_after_transp",
    "experiment_planner_used",
    "label_manager",
)


def arch_for_trainer(source: str, trainer_name: str, where: str | Path) -> str:
    """Our architecture for the fork's trainer class; a user error for any other trainer."""
    if source not in FORK_TRAINERS:
        raise UserInputError(f"unknown model source '{source}'", "--from", f"choose one of: {', '.join(SOURCES)}")
    trainers = FORK_TRAINERS[source]
    if trainer_name in trainers:
        return trainers[trainer_name]
    other = [s for s, t in FORK_TRAINERS.items() if trainer_name in t]
    fix = (
        f"this is a {other[0]} model: pass --from {other[0]}"
        if other
        else f"{source} trainers that can be imported: {', '.join(trainers)}"
    )
    raise UserInputError(f"unknown trainer '{trainer_name}' for --from {source}", where, fix)


def resolved_configuration(plans: dict, configuration: str, plans_file: str | Path) -> dict:
    """``plans['configurations'][configuration]`` with ``inherits_from`` applied (as nnunetv2
    resolves it), checked to hold every key the forks' networks and preprocessing read."""
    confs = plans.get("configurations")
    if not isinstance(confs, dict) or configuration not in confs:
        raise UserInputError(
            f"configuration '{configuration}' is not in the plans",
            plans_file,
            "import the model folder of a configuration its plans.json lists",
        )
    seen, chain, name = set(), [], configuration
    while name is not None:
        if name in seen or name not in confs:
            raise UserInputError(
                f"configuration '{configuration}' inherits from a missing or circular '{name}'",
                plans_file,
                "restore the plans.json the model was trained with",
            )
        seen.add(name)
        chain.append(confs[name])
        name = confs[name].get("inherits_from")
    conf: dict = {}
    for part in reversed(chain):
        conf.update(copy.deepcopy(part))
    conf.pop("inherits_from", None)
    if conf.get("previous_stage"):
        raise UserInputError(
            f"configuration '{configuration}' is a cascade stage (needs '{conf['previous_stage']}' predictions)",
            plans_file,
            "import a 2d, 3d_fullres or 3d_lowres model",
        )
    require_all_in(
        _REQUIRED_CONFIGURATION_KEYS,
        conf,
        lambda missing: f"configuration '{configuration}' lacks the key '{missing[0]}'",
        plans_file,
        "this is not a plans.json of nnunetv2 2.1 (the forks' version); use the model's own",
    )
    _check_topology(conf, configuration, plans_file)
    return conf


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_topology(conf: dict, configuration: str, plans_file: str | Path) -> None:
    kinds = {
        "patch_size": "a list of sizes",
        "n_conv_per_stage_encoder": "a list of counts",
        "n_conv_per_stage_decoder": "a list of counts",
        "conv_kernel_sizes": "a list of kernel sizes",
        "pool_op_kernel_sizes": "a list of strides",
    }
    for key, what in kinds.items():
        value = conf[key]
        nested = key in ("conv_kernel_sizes", "pool_op_kernel_sizes")
        ok = isinstance(value, list) and all(
            (isinstance(v, list) and all(_is_int(i) for i in v)) if nested else _is_int(v) for v in value
        )
        if not ok:
            raise UserInputError(
                f"configuration '{configuration}': '{key}' is not {what}",
                plans_file,
                "restore the plans.json the model was trained with",
            )
    for key in ("UNet_base_num_features", "unet_max_num_features"):
        if not _is_int(conf[key]):
            raise UserInputError(
                f"configuration '{configuration}': '{key}' is not a positive number",
                plans_file,
                "restore the plans.json the model was trained with",
            )
    dim = len(conf["patch_size"])
    n = len(conf["conv_kernel_sizes"])
    problems = []
    if dim not in (2, 3):
        problems.append(("patch_size", f"has {dim} axes"))
    for key, length in (
        ("pool_op_kernel_sizes", n),
        ("n_conv_per_stage_encoder", n),
        ("n_conv_per_stage_decoder", n - 1),
    ):
        if len(conf[key]) != length:
            problems.append((key, f"has {len(conf[key])} entries, conv_kernel_sizes has {n} stages"))
    for key in ("conv_kernel_sizes", "pool_op_kernel_sizes"):
        if any(len(k) != dim for k in conf[key]):
            problems.append((key, f"has entries that are not {dim}D like the patch"))
    if problems:
        key, what = problems[0]
        raise UserInputError(
            f"configuration '{configuration}': '{key}' {what}",
            plans_file,
            "restore the plans.json the model was trained with",
        )


def cnn_architecture(conf: dict) -> dict:
    """The nnU-Net v2 ``architecture`` block of the CNN plan the forks' networks are built from."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    old = {k: copy.deepcopy(conf[k]) for k in (*OLD_NETWORK_KEYS, "patch_size") if k in conf}
    old["UNet_class_name"] = "PlainConvUNet"  # the forks' trainers ignore it; see the module docstring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnunetv2's "old plans format" notice
        return ConfigurationManager(old).configuration["architecture"]


def our_plans(
    fork_plans: dict,
    configuration: str,
    arch: str,
    dataset_name: str,
    plans_file: str | Path,
    imported_from: dict | None = None,
) -> dict:
    """Our plans (``umambaPlans_<arch>``, the one imported configuration) for a fork's plans."""
    if not isinstance(fork_plans, dict):
        raise UserInputError("plans.json is not a JSON object", plans_file, "use the model folder's own plans.json")
    require_all_in(
        _REQUIRED_PLANS_KEYS,
        fork_plans,
        lambda missing: f"plans lack the key '{missing[0]}'",
        plans_file,
        "use the plans.json the model was trained with",
    )
    check_plans(fork_plans, plans_file)  # every name nnunetv2 will look up is one it ships
    conf = resolved_configuration(fork_plans, configuration, plans_file)
    cnn_block = cnn_architecture(conf)
    patch = [int(p) for p in conf["patch_size"]]
    ours = {k: copy.deepcopy(v) for k, v in conf.items() if k not in OLD_NETWORK_KEYS}
    ours["patch_size"] = patch
    ours.setdefault("batch_dice", True)
    ours["architecture"] = registry.get(arch).architecture_block(cnn_block, patch)
    plans = {k: copy.deepcopy(fork_plans[k]) for k in _CARRIED_PLANS_KEYS if k in fork_plans}
    plans.update(
        dataset_name=dataset_name,
        plans_name=plans_identifier(arch),
        configurations={configuration: ours},
        umamba_arch=arch,
    )
    plans.setdefault("label_manager", "LabelManager")
    if imported_from:
        plans["umamba_imported_from"] = imported_from
    check_plans(plans, plans_file)
    return plans
