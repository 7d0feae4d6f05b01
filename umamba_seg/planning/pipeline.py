"""`plan-and-preprocess`: one fingerprint, per-configuration spacing, per-architecture plans.

Steps: (optional) verify the raw dataset -> fingerprint (nnunetv2, reused when present) ->
CNN plans (nnunetv2's planner) -> one plans file per requested architecture, from the
SSM-aware planner (``plan_source="ssm"``) or the CNN's plan unchanged (``"cnn"``) -> preprocess each
requested configuration once (resumable) -> copy ground truth for validation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from umamba_seg.errors import UserInputError, require_all_in
from umamba_seg.planning.arch_plans import plans_file, write_arch_plans
from umamba_seg.planning.naming import CNN_ARCH, DEFAULT_PLAN_SOURCE
from umamba_seg.workspace import Workspace

log = logging.getLogger(__name__)
ALL_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


@contextlib.contextmanager
def explain_failures(raw_dataset: Path):
    """If nnunetv2 crashes on the data, find the offending file with our checks and report that instead."""
    try:
        yield
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless our checks explain it
        from umamba_seg.verify import verify_raw_dataset

        try:
            verify_raw_dataset(raw_dataset, run_nnunet_check=False)
        except UserInputError as explained:
            raise explained from e
        raise


def extract_fingerprint(ws: Workspace, dataset_name: str, num_processes: int, clean: bool = False) -> Path:
    """Run nnunetv2's fingerprint extractor unless a fingerprint is already stored."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    out = ws.preprocessed_dataset(dataset_name) / "dataset_fingerprint.json"
    if out.is_file() and not clean:
        return out
    check_raw_files(ws.raw_dataset(dataset_name))
    fpe = DatasetFingerprintExtractor(dataset_name, num_processes, verbose=False)
    fpe.run(overwrite_existing=True)
    check_fingerprint(out, ws.raw_dataset(dataset_name))
    return out


def check_raw_files(raw_dataset: Path) -> None:
    """Every training image and label is whole and what its name says, before nnunetv2 reads any
    (it reads a truncated NIfTI as zeros, and prints tracebacks for empty files)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from umamba_seg.errors import UserInputErrors
    from umamba_seg.image_files import check_image_file

    dataset = get_filenames_of_train_images_and_targets(str(raw_dataset), load_json(str(raw_dataset / "dataset.json")))
    problems = []
    for entry in dataset.values():
        for f in [*entry["images"], entry["label"]]:
            try:
                check_image_file(f)
            except UserInputError as e:
                problems.append(e)
    if problems:
        raise UserInputErrors(problems)


def check_fingerprint(fingerprint: Path, raw_dataset: Path) -> None:
    """Refuse (and remove) a fingerprint whose intensity statistics are not finite or beyond
    ``MAX_ABS_INTENSITY``: normalising with them turns every case into NaN. The raw dataset's
    checks then name the offending image."""
    import json
    import math

    from umamba_seg.verify import MAX_ABS_INTENSITY, verify_raw_dataset

    props = json.loads(fingerprint.read_text()).get("foreground_intensity_properties_per_channel", {})
    bad = [
        (ch, k, v)
        for ch, stats in props.items()
        for k, v in stats.items()
        if isinstance(v, (int, float)) and not (math.isfinite(v) and abs(v) <= MAX_ABS_INTENSITY)
    ]
    if not bad:
        return
    fingerprint.unlink()
    verify_raw_dataset(raw_dataset, run_nnunet_check=False)  # raises, naming the image, if it can
    ch, key, value = bad[0]
    raise UserInputError(
        f"the dataset's intensities of channel {ch} have {key} = {value} (not finite or beyond "
        f"+-{MAX_ABS_INTENSITY:.0e})",
        raw_dataset / "imagesTr",
        "rescale or fix the images (run plan-and-preprocess --verify to find them)",
    )


def plan_cnn(ws: Workspace, dataset_name: str, gpu_memory_gb: float) -> Path:
    import os

    from umamba_seg.planning.cnn_planner import UMambaCNNPlanner

    # nnunetv2's VRAM estimate sets torch threads from nnUNet_n_proc_DA, which may be 0 on CPU
    saved = os.environ.get("nnUNet_n_proc_DA")
    if saved is not None and int(saved) < 1:
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        planner = UMambaCNNPlanner(dataset_name, gpu_memory_target_in_gb=gpu_memory_gb)
        planner.plan_experiment()
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved
    return plans_file(ws.preprocessed_dataset(dataset_name), CNN_ARCH)


def ensure_plans(
    ws: Workspace,
    dataset_name: str,
    arch: str,
    gpu_memory_gb: float = 8.0,
    num_processes: int = 2,
    plan_source: str = DEFAULT_PLAN_SOURCE,
) -> Path:
    """Plans for ``arch`` from ``plan_source``; plan it from the stored fingerprint if missing (and say so)."""
    pre = ws.preprocessed_dataset(dataset_name)
    out = plans_file(pre, arch, plan_source)
    if out.is_file():
        return out
    if not plans_file(pre, CNN_ARCH).is_file():
        if not (ws.raw_dataset(dataset_name) / "dataset.json").is_file():
            raise UserInputError(
                f"no plans for '{arch}' and no raw dataset to plan from",
                ws.raw_dataset(dataset_name),
                f"run `umamba-seg plan-and-preprocess -d {dataset_name}` first",
            )
        log.info("No plans for '%s' yet: planning %s from its fingerprint first.", arch, dataset_name)
        from umamba_seg.verify import load_dataset_json

        load_dataset_json(ws.raw_dataset(dataset_name))
        with explain_failures(ws.raw_dataset(dataset_name)):
            extract_fingerprint(ws, dataset_name, num_processes)
        plan_cnn(ws, dataset_name, gpu_memory_gb)
    if arch != CNN_ARCH:
        log.info("No plans for '%s' yet: deriving %s from the stored CNN plans.", arch, out.name)
        write_arch_plans(pre, arch, gpu_memory_gb, plan_source)
    return out


def plan_and_preprocess(
    ws: Workspace,
    dataset_name: str,
    archs: Sequence[str],
    configurations: Sequence[str] | None = None,
    gpu_memory_gb: float = 8.0,
    num_processes: int = 2,
    verify: bool = False,
    clean: bool = False,
    preprocess: bool = True,
    plan_source: str = DEFAULT_PLAN_SOURCE,
    preset: str = "default",
) -> dict:
    """Run the whole planning step, ``archs`` planned from ``plan_source`` with their families'
    presets at size ``preset``; returns timings and what was written."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw = ws.raw_dataset(dataset_name)
    pre = ws.preprocessed_dataset(dataset_name)
    if not (raw / "dataset.json").is_file():
        raise UserInputError(
            "dataset.json not found", raw / "dataset.json", "create it (nnU-Net format) or check --workdir / nnUNet_raw"
        )
    from umamba_seg.verify import load_dataset_json

    load_dataset_json(raw)  # its names and paths are checked before nnunetv2 reads any file it names
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if verify:
        from umamba_seg.verify import verify_raw_dataset

        verify_raw_dataset(raw, num_processes=num_processes)
        timings["verify"] = time.perf_counter() - t0
    pre.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with explain_failures(raw):
        extract_fingerprint(ws, dataset_name, num_processes, clean=clean)
    timings["fingerprint"] = time.perf_counter() - t
    t = time.perf_counter()
    cnn_plans = plan_cnn(ws, dataset_name, gpu_memory_gb)
    written = {CNN_ARCH: cnn_plans}
    for arch in archs:
        if arch != CNN_ARCH:
            written[arch] = write_arch_plans(pre, arch, gpu_memory_gb, plan_source, preset)
    timings["plan"] = time.perf_counter() - t

    planned = PlansManager(str(cnn_plans)).available_configurations
    available = [c for c in ALL_CONFIGURATIONS if c in planned]
    if configurations is None:
        configurations = available
    require_all_in(
        configurations,
        planned,
        lambda missing: f"configuration(s) {', '.join(missing)} not planned for this dataset",
        cnn_plans,
        f"choose from {', '.join(available)} (2D data has only 2d; 3d_lowres only exists for large images)",
    )
    done = {}
    if preprocess:
        from umamba_seg.planning.preprocess import ResumablePreprocessor, copy_gt_segmentations

        for c in configurations:
            t = time.perf_counter()
            pp = ResumablePreprocessor(verbose=False)
            with explain_failures(raw):
                n_new, n_skip = pp.run_resumable(dataset_name, c, cnn_plans, raw, pre, num_processes)
            done[c] = {"preprocessed": n_new, "skipped": n_skip}
            timings[f"preprocess_{c}"] = time.perf_counter() - t
        copy_gt_segmentations(raw, pre)
    return {
        "plans": {k: str(v) for k, v in written.items()},
        "configurations": list(configurations),
        "preprocessed": done,
        "timings": timings,
    }
