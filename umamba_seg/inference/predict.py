"""``predict``: a folder of images in, a folder of segmentations out, with exact geometry.

nnunetv2 does the preprocessing, sliding-window inference, fold averaging, TTA and export
(which restores the input's spacing, origin and direction). This module adds what it lacks:
cases grouped without the ``_0000`` suffix for single-channel data, atomic per-case output
(a scratch folder then rename, the segmentation last), ``--continue`` that redoes
half-written cases, sharding across machines, and a progress bar. The sliding-window time of
every case is returned (``benchmark`` reports its median; ``warmup`` runs the first case once
untimed first, so one-off costs do not land on it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.inference.inputs import group_cases
from umamba_seg.inference.model import load_predictor

SCRATCH = ".partial"


def case_outputs(out_dir: Path, case: str, file_ending: str, save_probabilities: bool) -> list[Path]:
    """Files that make a finished case; the segmentation (last renamed) comes last."""
    files = [out_dir / f"{case}.npz", out_dir / f"{case}.pkl"] if save_probabilities else []
    return files + [out_dir / f"{case}{file_ending}"]


def shard(cases: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """Cases of part ``part_id`` out of ``num_parts`` (every case in exactly one part)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise UserInputError(f"--part-id {part_id} is not in 0..{num_parts - 1}", "--num-parts/--part-id",
                             "use 0 <= part-id < num-parts")
    return list(cases)[part_id::num_parts]


def predict_folder(model_dir: Path, input_dir: Path, output_dir: Path, folds: Sequence[str] | None = None,
                   step_size: float = 0.5, tta: bool = True, save_probabilities: bool = False,
                   continue_: bool = False, num_parts: int = 1, part_id: int = 0, device: torch.device | None = None,
                   checkpoint_name: str = "checkpoint_final.pth", trust: bool = False, warmup: bool = False) -> dict:
    """Predict every case in ``input_dir``; returns counts, the total seconds and, per predicted
    case, the seconds of its sliding-window prediction (``sliding_window_seconds``)."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    device = device or torch.device("cpu")
    if not 0 < step_size <= 1:
        raise UserInputError(f"--step-size {step_size} is not in (0, 1]", "--step-size", "use e.g. 0.5")
    predictor = load_predictor(Path(model_dir), folds, checkpoint_name, device, step_size, tta, trust)
    ds = predictor.dataset_json
    n_channels = len(ds.get("channel_names", ds.get("modality", {})))
    rw_class = predictor.plans_manager.image_reader_writer_class
    endings = list(dict.fromkeys([ds["file_ending"], *getattr(rw_class, "supported_file_endings", [])]))
    cases = group_cases(Path(input_dir), endings, n_channels)
    mine = shard(sorted(cases), num_parts, part_id)
    output_dir = Path(output_dir)
    if output_dir.resolve() == Path(input_dir).resolve():
        raise UserInputError("output folder is the input folder", output_dir, "pass a different -o")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ds, output_dir / "dataset.json")
    write_json_atomic(predictor.plans_manager.plans, output_dir / "plans.json")
    write_json_atomic({"model_dir": str(model_dir), "folds": list(folds) if folds else None, "step_size": step_size,
                       "tta": tta, "save_probabilities": save_probabilities, "checkpoint": checkpoint_name},
                      output_dir / f"predict_args_part{part_id}.json")
    todo = [c for c in mine if not (continue_ and all(p.is_file() for p in case_outputs(
        output_dir, c, cases[c].ending, save_probabilities)))]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    scratch_root = output_dir / SCRATCH / f"part{part_id}"

    def preprocess(case: str):
        files = [str(p) for p in cases[case].files]
        data, _, props = preprocessor.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                               ds)
        if data.shape[0] != n_channels:
            raise UserInputError(f"case '{case}' has {data.shape[0]} channel(s) but the model expects {n_channels}",
                                 files[0], "give each case the channels listed in the model's dataset.json")
        return torch.from_numpy(data), props

    t0 = time.perf_counter()
    if warmup and todo:
        predictor.predict_logits_from_preprocessed_data(preprocess(todo[0])[0]).cpu()
    window_seconds: dict[str, float] = {}
    for case in tqdm(todo, desc="Predicting", unit="case"):
        data, props = preprocess(case)
        case_ds = {**ds, "file_ending": cases[case].ending}  # write in the input's format
        t_case = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(data).cpu()
        window_seconds[case] = time.perf_counter() - t_case
        scratch = scratch_root / case
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        export_prediction_from_logits(logits, props, predictor.configuration_manager, predictor.plans_manager, case_ds,
                                      str(scratch / case), save_probabilities,
                                      num_threads_torch=max(1, min(4, os.cpu_count() or 1)))
        for final in case_outputs(output_dir, case, cases[case].ending, save_probabilities):
            os.replace(scratch / final.name, final)
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(scratch_root, ignore_errors=True)
    with_scratch = output_dir / SCRATCH
    if with_scratch.is_dir() and not any(with_scratch.iterdir()):
        with_scratch.rmdir()
    return {"predicted": len(todo), "skipped": len(mine) - len(todo), "cases_in_part": len(mine),
            "seconds": time.perf_counter() - t0, "sliding_window_seconds": window_seconds}
