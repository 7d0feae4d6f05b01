"""What ``benchmark`` times of each trained network: one training step and one sliding window.

Both are closures built before the timing starts, so that a timing round (:mod:`timing`) times
the work itself and nothing else:

* :func:`training_step_fn`: one ``train_step`` (forward, loss, backward, optimizer step) of the
  trainer class the network was trained with (so the recipe's optimizer, loss and deep
  supervision), on one batch that trainer's own data loader drew and augmented in this process
  beforehand (loading is not timed, as during training). The step updates this trainer's own
  copy of the network; the trained checkpoint is not touched.
* :func:`sliding_window_step_fn`: the sliding-window prediction of one preprocessed case with the
  trained fold, through the predictor ``predict`` uses (tiling, Gaussian weighting, mirroring).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from umamba_seg.benchmark.networks import sliding_window_fn
from umamba_seg.inference.inputs import group_cases
from umamba_seg.inference.model import load_predictor

_DA_PROCESSES = "nnUNet_n_proc_DA"


@contextlib.contextmanager
def _no_augmentation_workers():
    """nnunetv2's loaders built while this is active draw batches in this process (no workers)."""
    saved = os.environ.get(_DA_PROCESSES)
    os.environ[_DA_PROCESSES] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_DA_PROCESSES, None)
        else:
            os.environ[_DA_PROCESSES] = saved


@dataclass(frozen=True)
class TrainingStep:
    """One training step to time, and the batch the trainer trains with."""

    run: Callable[[], object]
    batch_size: int


def training_step_fn(
    trainer_class: type, plans: dict, configuration: str, fold: int | str, dataset_json: dict, device: torch.device
) -> TrainingStep:
    """One ``trainer_class.train_step`` on a fixed batch of its own loader, for fold ``fold``'s
    split. The trainer's log lines go to its log file in the fold folder, not to the console."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = trainer_class(
            plans={**plans, "continue_training": False},
            configuration=configuration,
            fold=fold,
            dataset_json=dataset_json,
            device=device,
        )
        trainer.initialize()
        with _no_augmentation_workers():
            loader, _ = trainer.get_dataloaders()
        batch = next(loader)
    trainer.network.train()

    def run() -> object:
        return trainer.train_step(batch)

    return TrainingStep(run, int(trainer.batch_size))


def first_case_files(images: Path, dataset_json: dict) -> list[Path]:
    """The channel files of the first case (by name) in ``images``."""
    n_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    cases = group_cases(Path(images), [dataset_json["file_ending"]], n_channels)
    return list(cases[min(cases)].files)


def sliding_window_step_fn(
    model_dir: Path, fold: str, case_files: list[Path], device: torch.device, step_size: float = 0.5, tta: bool = True
) -> Callable[[], None]:
    """Sliding-window prediction of the case ``case_files`` (preprocessed once, here) with fold
    ``fold`` of the trained model in ``model_dir``."""
    predictor = load_predictor(Path(model_dir), [str(fold)], "checkpoint_final.pth", device, step_size, tta)
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case(
        [str(f) for f in case_files],
        None,
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.dataset_json,
    )
    return sliding_window_fn(predictor, torch.from_numpy(data))
