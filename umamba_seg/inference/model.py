"""Load a trained model folder into nnunetv2's predictor, safely.

Replaces ``nnUNetPredictor.initialize_from_trained_model_folder`` (which unpickles with
``weights_only=False`` and needs the trainer class findable by name): checkpoints load with
``weights_only=True`` unless ``--trust-checkpoint``, and are checked to belong to the
model folder's dataset. The folder's plans.json and dataset.json are checked against the
allow-lists of :mod:`umamba_seg.architectures.plans_allowlist` (and its paths) before
nnunetv2 resolves any name in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.errors import UserInputError
from umamba_seg.json_files import read_json
from umamba_seg.safe_paths import check_file_ending
from umamba_seg.training.checkpoint_io import load_checkpoint_safe


def _fold_averaging_predictor_class():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class FoldAveragingPredictor(nnUNetPredictor):
        """Averages the folds' *probabilities* (nnunetv2 averages logits).

        So ``-f 0 1`` equals ``ensemble`` of the single-fold predictions. The mean probability
        is returned as logits that the export's softmax/sigmoid maps back to it exactly
        (log p for softmax, log-odds for sigmoid regions).
        """

        def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
            if len(self.list_of_parameters) == 1:
                return super().predict_logits_from_preprocessed_data(data)
            regions = self.plans_manager.get_label_manager(self.dataset_json).has_regions
            mean = None
            for params in self.list_of_parameters:
                getattr(self.network, "_orig_mod", self.network).load_state_dict(params)
                logits = self.predict_sliding_window_return_logits(data).to("cpu").float()
                prob = torch.sigmoid(logits) if regions else torch.softmax(logits, 0)
                mean = prob if mean is None else mean.add_(prob)
            mean /= len(self.list_of_parameters)
            eps = torch.finfo(mean.dtype).tiny
            if regions:
                return torch.log(mean.clamp_min(eps)) - torch.log1p(-mean.clamp_max(1 - 1e-7))
            return torch.log(mean.clamp_min(eps))

    return FoldAveragingPredictor


def available_folds(model_dir: Path, checkpoint_name: str) -> list[str]:
    return sorted(p.parent.name.removeprefix("fold_") for p in Path(model_dir).glob(f"fold_*/{checkpoint_name}"))


def load_predictor(
    model_dir: Path,
    folds: Sequence[str] | None,
    checkpoint_name: str = "checkpoint_final.pth",
    device: torch.device = torch.device("cpu"),
    step_size: float = 0.5,
    tta: bool = True,
    trust: bool = False,
    verbose: bool = False,
):
    """An initialised ``nnUNetPredictor`` for ``model_dir`` (a ``<Trainer>__<plans>__<config>`` folder)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_dir = Path(model_dir)
    for f in ("plans.json", "dataset.json"):
        if not (model_dir / f).is_file():
            raise UserInputError(
                f"model folder has no {f}",
                model_dir / f,
                "point -d/-c/-a at a trained model (run `umamba-seg train` first)",
            )
    if folds is None:
        folds = available_folds(model_dir, checkpoint_name)
        if not folds:
            raise UserInputError(
                f"model folder has no {checkpoint_name} in any fold_*",
                model_dir,
                "finish training (or pass --checkpoint checkpoint_latest.pth)",
            )
    plans = read_json(model_dir / "plans.json", "restore the model folder's file")
    dataset_json = read_json(model_dir / "dataset.json", "restore the model folder's file")
    check_plans(plans, model_dir / "plans.json")
    check_dataset_json_names(dataset_json, model_dir / "dataset.json")
    check_file_ending(dataset_json.get("file_ending"), model_dir / "dataset.json")
    pm = PlansManager(plans)
    params, trainer_name, mirror_axes, configuration = [], None, None, None
    for f in folds:
        path = model_dir / f"fold_{f}" / checkpoint_name
        if not path.is_file():
            raise UserInputError(
                f"fold {f} has no {checkpoint_name}",
                path,
                f"train fold {f} first or choose folds among {available_folds(model_dir, checkpoint_name) or 'none'}",
            )
        ckpt = load_checkpoint_safe(path, map_location="cpu", trust=trust)
        ds = ckpt.get("dataset_name") or ckpt.get("init_args", {}).get("plans", {}).get("dataset_name")
        if ds is not None and ds != pm.dataset_name:
            raise UserInputError(
                f"checkpoint belongs to {ds}, not {pm.dataset_name}",
                path,
                "copy the right checkpoint or predict with that dataset's model",
            )
        trainer_name = ckpt.get("trainer_name", "nnUNetTrainer")
        configuration = ckpt["init_args"]["configuration"]
        mirror_axes = ckpt.get("inference_allowed_mirroring_axes")
        params.append(ckpt["network_weights"])
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, enable_deep_supervision=False)
    try:
        network.load_state_dict(params[0])
    except RuntimeError as e:
        raise UserInputError(
            f"checkpoint does not fit the network in plans.json ({str(e).splitlines()[0]})",
            model_dir / f"fold_{folds[0]}" / checkpoint_name,
            "use the plans the model was trained with",
        ) from e
    return predictor_for_network(
        network, pm, cm, params, dataset_json, trainer_name, mirror_axes, device, step_size, tta, verbose
    )


def predictor_for_network(
    network: torch.nn.Module,
    plans_manager,
    configuration_manager,
    parameters: list[dict],
    dataset_json: dict,
    trainer_name: str,
    mirror_axes,
    device: torch.device,
    step_size: float = 0.5,
    tta: bool = True,
    verbose: bool = False,
):
    """nnunetv2's sliding-window predictor around an already built ``network`` (fold averaging
    over ``parameters``); what :func:`load_predictor` returns, also used by ``benchmark`` for
    untrained networks."""
    predictor = _fold_averaging_predictor_class()(
        tile_step_size=step_size,
        use_gaussian=True,
        use_mirroring=tta,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=verbose,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network, plans_manager, configuration_manager, parameters, dataset_json, trainer_name, mirror_axes
    )
    return predictor
