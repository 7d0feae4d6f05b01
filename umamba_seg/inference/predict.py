"""``predict``: a folder of images in, a folder of segmentations out, with exact geometry.

nnunetv2 does the preprocessing, sliding-window inference, fold averaging, TTA and export
(which restores the input's spacing, origin and direction). This module adds what it lacks:
cases grouped without the ``_0000`` suffix for single-channel data, every input file checked
whole before any output is written (a truncated NIfTI is an error, not half zeros), atomic
per-case output (a scratch folder then rename, the segmentation last), ``--continue`` that
redoes half-written cases, sharding across machines, and a progress bar. One run writes one
part of a folder at a time (a lock per ``--part-id``; a second run gets one line naming the
holder), and the folder's ``predict_args_part<K>.json`` files record which model, folds and
settings wrote it: ``--continue`` (and any other part) with a different model is refused. The sliding-window time of
every case is returned (``benchmark`` reports its median; ``warmup`` runs the first case once
untimed first, so one-off costs do not land on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.image_files import check_image_file
from umamba_seg.inference.inputs import group_cases
from umamba_seg.inference.instances import check_instance_labels, export_with_instances, instance_file
from umamba_seg.inference.model import available_folds, load_predictor
from umamba_seg.locking import exclusive_lock
from umamba_seg.log import show_progress

SCRATCH = ".partial"
PROVENANCE = "predict_args_part{part}.json"
LOCK = ".umamba_predict_part{part}.lock"
# what makes two runs' outputs interchangeable: the same model, folds, checkpoint and sliding-window settings
PROVENANCE_KEYS = ("model_dir", "folds", "checkpoint", "step_size", "tta", "min_size")


def case_outputs(out_dir: Path, case: str, file_ending: str, save_probabilities: bool) -> list[Path]:
    """Files that make a finished case; the segmentation (last renamed) comes last."""
    files = [out_dir / f"{case}.npz", out_dir / f"{case}.pkl"] if save_probabilities else []
    return files + [out_dir / f"{case}{file_ending}"]


def shard(cases: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """Cases of part ``part_id`` out of ``num_parts`` (every case in exactly one part)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise UserInputError(
            f"--part-id {part_id} is not in 0..{num_parts - 1}", "--num-parts/--part-id", "use 0 <= part-id < num-parts"
        )
    return list(cases)[part_id::num_parts]


def _make_scratch(folder: Path) -> None:
    """Create a case's scratch folder; another part may remove the shared empty parent meanwhile."""
    for attempt in range(3):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def prepare_output_folder(output_dir: Path, input_dir: Path) -> None:
    """Create ``output_dir`` (a folder, not the input, writable) or raise one clear error."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserInputError("the output path is a file, not a folder", output_dir, "pass a folder with -o")
    if output_dir.resolve() == Path(input_dir).resolve():
        raise UserInputError("output folder is the input folder", output_dir, "pass a different -o")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(
            f"cannot create the output folder ({e.strerror})", output_dir, "pass a folder you can write to with -o"
        ) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise UserInputError("the output folder is not writable", output_dir, "pass a folder you can write to with -o")


def check_provenance(output_dir: Path, run: dict, part_id: int, continue_: bool) -> None:
    """Refuse to add to a folder written by another model, folds or settings.

    Every ``predict_args_part*.json`` in the folder must agree with ``run`` on
    :data:`PROVENANCE_KEYS`, except this part's own file when not continuing (this run
    redoes the whole part)."""
    own = PROVENANCE.format(part=part_id)
    for f in sorted(output_dir.glob(PROVENANCE.format(part="*"))):
        if f.name == own and not continue_:
            continue
        try:
            old = json.loads(f.read_text())
        except (OSError, ValueError):
            old = {}
        differ = [k for k in PROVENANCE_KEYS if not isinstance(old, dict) or old.get(k) != run[k]]
        if differ:
            was = ", ".join(f"{k}={old.get(k)!r}" if isinstance(old, dict) else k for k in differ)
            raise UserInputError(
                f"the output folder holds predictions of another run ({was}; this run: "
                + ", ".join(f"{k}={run[k]!r}" for k in differ)
                + ")",
                f,
                "predict into a new -o, or --continue with the same model, folds and settings",
            )


def predict_folder(
    model_dir: Path,
    input_dir: Path,
    output_dir: Path,
    folds: Sequence[str] | None = None,
    step_size: float = 0.5,
    tta: bool = True,
    save_probabilities: bool = False,
    continue_: bool = False,
    num_parts: int = 1,
    part_id: int = 0,
    device: torch.device | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    trust: bool = False,
    warmup: bool = False,
    instances: bool = False,
    min_size: int = 0,
) -> dict:
    """Predict every case in ``input_dir``; returns counts, the total seconds and, per predicted
    case, the seconds of its sliding-window prediction (``sliding_window_seconds``). With
    ``instances`` (a background/interior/boundary model) each case's cell instances also go to
    ``output_dir/instances/<case><ending>`` (:mod:`umamba_seg.inference.instances`)."""
    device = device or torch.device("cpu")
    if not 0 < step_size <= 1:
        raise UserInputError(f"--step-size {step_size} is not in (0, 1]", "--step-size", "use e.g. 0.5")
    predictor = load_predictor(Path(model_dir), folds, checkpoint_name, device, step_size, tta, trust)
    ds = predictor.dataset_json
    if instances:
        if min_size < 0:
            raise UserInputError(f"--min-size {min_size} is negative", "--min-size", "use 0 (keep all) or more")
        check_instance_labels(ds, Path(model_dir) / "dataset.json")
    n_channels = len(ds.get("channel_names", ds.get("modality", {})))
    rw_class = predictor.plans_manager.image_reader_writer_class
    endings = list(dict.fromkeys([ds["file_ending"], *getattr(rw_class, "supported_file_endings", [])]))
    cases = group_cases(Path(input_dir), endings, n_channels)
    mine = shard(sorted(cases), num_parts, part_id)
    for case in mine:
        for f in cases[case].files:
            check_image_file(f)
    output_dir = Path(output_dir)
    prepare_output_folder(output_dir, Path(input_dir))
    run = {
        "model_dir": str(Path(model_dir).resolve()),
        "folds": [str(f) for f in (folds or available_folds(Path(model_dir), checkpoint_name))],
        "checkpoint": checkpoint_name,
        "step_size": step_size,
        "tta": tta,
        "save_probabilities": save_probabilities,
        "instances": instances,
        "min_size": min_size,
    }
    with exclusive_lock(output_dir, LOCK.format(part=part_id), "the output folder"):
        check_provenance(output_dir, run, part_id, continue_)
        try:
            return _predict_cases(predictor, cases, mine, output_dir, run, part_id, continue_, warmup)
        except OSError as e:
            where = e.filename or output_dir
            raise UserInputError(
                f"cannot write the prediction ({e.strerror or e})",
                where,
                "check the output folder's free space and permissions",
            ) from None


def _predict_cases(
    predictor, cases: dict, mine: list[str], output_dir: Path, run: dict, part_id: int, continue_: bool, warmup: bool
) -> dict:
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    ds = predictor.dataset_json
    n_channels = len(ds.get("channel_names", ds.get("modality", {})))
    save_probabilities = run["save_probabilities"]
    write_json_atomic(ds, output_dir / "dataset.json")
    write_json_atomic(predictor.plans_manager.plans, output_dir / "plans.json")
    write_json_atomic(run, output_dir / PROVENANCE.format(part=part_id))
    todo = [
        c
        for c in mine
        if not (
            continue_
            and all(p.is_file() for p in case_outputs(output_dir, c, cases[c].ending, save_probabilities))
            and (not run.get("instances") or instance_file(output_dir, c, cases[c].ending).is_file())
        )
    ]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    scratch_root = output_dir / SCRATCH / f"part{part_id}"

    def preprocess(case: str):
        files = [str(p) for p in cases[case].files]
        try:
            data, _, props = preprocessor.run_case(
                files, None, predictor.plans_manager, predictor.configuration_manager, ds
            )
        except Exception as e:  # noqa: BLE001 - a reader failing on one of the case's files
            msg = " ".join(str(e).split())[-150:] or type(e).__name__
            raise UserInputError(
                f"cannot read case '{case}' ({type(e).__name__}: {msg})",
                files[0],
                "re-export the case's files in the model's format",
            ) from None
        if data.shape[0] != n_channels:
            raise UserInputError(
                f"case '{case}' has {data.shape[0]} channel(s) but the model expects {n_channels}",
                files[0],
                "give each case the channels listed in the model's dataset.json",
            )
        return torch.from_numpy(data), props

    t0 = time.perf_counter()
    if warmup and todo:
        predictor.predict_logits_from_preprocessed_data(preprocess(todo[0])[0]).cpu()
    window_seconds: dict[str, float] = {}
    for case in tqdm(todo, desc="Predicting", unit="case", disable=not show_progress()):
        data, props = preprocess(case)
        case_ds = {**ds, "file_ending": cases[case].ending}  # write in the input's format
        t_case = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(data).cpu()
        window_seconds[case] = time.perf_counter() - t_case
        scratch = scratch_root / case
        if scratch.exists():
            shutil.rmtree(scratch)
        _make_scratch(scratch)
        if run.get("instances"):  # the instance map lands first, the segmentation (done marker) last
            export_with_instances(
                logits,
                props,
                predictor,
                case_ds,
                str(scratch / case),
                save_probabilities,
                instance_file(output_dir, case, cases[case].ending),
                run["min_size"],
                num_threads_torch=max(1, min(4, os.cpu_count() or 1)),
            )
        else:
            export_prediction_from_logits(
                logits,
                props,
                predictor.configuration_manager,
                predictor.plans_manager,
                case_ds,
                str(scratch / case),
                save_probabilities,
                num_threads_torch=max(1, min(4, os.cpu_count() or 1)),
            )
        for final in case_outputs(output_dir, case, cases[case].ending, save_probabilities):
            os.replace(scratch / final.name, final)
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(scratch_root, ignore_errors=True)
    with contextlib.suppress(OSError):  # other parts may still use it (then it is not empty) or removed it
        (output_dir / SCRATCH).rmdir()
    return {
        "predicted": len(todo),
        "skipped": len(mine) - len(todo),
        "cases_in_part": len(mine),
        "seconds": time.perf_counter() - t0,
        "sliding_window_seconds": window_seconds,
    }
