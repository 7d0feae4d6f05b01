"""Resumable, atomic preprocessing on top of nnunetv2's DefaultPreprocessor.

nnunetv2 deletes the output folder and rewrites every case. Here a case is written into a
hidden scratch folder and its files are renamed into place, the ``.pkl`` last; a case counts
as done once its ``.pkl`` and both arrays exist. A rerun after a kill redoes only the cases
that are missing or half-written. Each case's files are checked whole first (a truncated NIfTI
is an error, not zeros), and a case whose preprocessed intensities are not finite or whose
label map holds values missing from dataset.json stops with one line naming the file. Plans
and case identifiers are checked first (allow-list, paths inside their folders), since both
become file and folder names here.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from umamba_seg.architectures.plans_allowlist import check_plans
from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError
from umamba_seg.image_files import check_image_file
from umamba_seg.log import show_progress
from umamba_seg.safe_paths import check_dataset_entries

SCRATCH = ".partial"
CASE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # renamed in this order; .pkl marks completion


def case_done(out_dir: Path, case: str) -> bool:
    return all((out_dir / f"{case}{s}").is_file() for s in CASE_SUFFIXES)


def _label_values(dataset_json: dict) -> set[int]:
    values: set[int] = set()
    for v in dataset_json["labels"].values():
        values.update(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    return values


class ResumablePreprocessor(DefaultPreprocessor):
    """DefaultPreprocessor that skips finished cases and never leaves half-written ones."""

    def run_case(self, image_files, seg_file, plans_manager, configuration_manager, dataset_json):
        """nnunetv2's ``run_case`` on files checked whole, with its result checked (finite
        intensities, declared label values; -1 is nnunetv2's outside-the-body marker)."""
        import numpy as np

        for f in [*image_files, *([seg_file] if seg_file is not None else [])]:
            check_image_file(f)
        data, seg, properties = super().run_case(
            image_files, seg_file, plans_manager, configuration_manager, dataset_json
        )
        if not np.all(np.isfinite(data)):
            raise UserInputError(
                "preprocessing turned this case into NaN/Inf (non-finite or out-of-range intensities)",
                image_files[0],
                "find the bad image with `umamba-seg plan-and-preprocess --verify` and fix it",
            )
        if seg is not None:
            ds = load_json(dataset_json) if isinstance(dataset_json, str) else dataset_json
            allowed = _label_values(ds)
            extra = sorted(int(v) for v in np.unique(seg) if int(v) not in allowed and int(v) != -1)
            if extra:
                raise UserInputError(
                    f"label value(s) {extra} not in dataset.json labels {sorted(allowed)}",
                    seg_file,
                    "add them to 'labels' in dataset.json or fix the label map",
                )
        return data, seg, properties

    def run_case_save_atomic(
        self, out_dir: str, case: str, image_files, seg_file, plans_manager, configuration_manager, dataset_json
    ) -> str:
        scratch = Path(out_dir) / SCRATCH / case
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        self.run_case_save(
            str(scratch / case), image_files, seg_file, plans_manager, configuration_manager, dataset_json
        )
        for suffix in CASE_SUFFIXES:
            os.replace(scratch / f"{case}{suffix}", Path(out_dir) / f"{case}{suffix}")
        shutil.rmtree(scratch, ignore_errors=True)
        return case

    def run_resumable(
        self,
        dataset_name: str,
        configuration_name: str,
        plans_file: Path,
        raw_dataset: Path,
        preprocessed_dataset: Path,
        num_processes: int,
    ) -> tuple[int, int]:
        """Preprocess every missing case; returns (done now, skipped as already finished)."""
        plans = load_json(str(plans_file))
        check_plans(plans, plans_file)  # data_identifier and the looked-up names, before they are used
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(configuration_name)
        dataset_json = load_json(str(preprocessed_dataset / "dataset.json"))
        check_dataset_entries(dataset_json, raw_dataset, preprocessed_dataset / "dataset.json")
        out_dir = preprocessed_dataset / configuration_manager.data_identifier
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out_dir / SCRATCH, ignore_errors=True)

        dataset = get_filenames_of_train_images_and_targets(str(raw_dataset), dataset_json)
        todo = [k for k in dataset if not case_done(out_dir, k)]
        skipped = len(dataset) - len(todo)
        args = [
            (
                str(out_dir),
                k,
                dataset[k]["images"],
                dataset[k]["label"],
                plans_manager,
                configuration_manager,
                dataset_json,
            )
            for k in todo
        ]
        desc = f"Preprocessing {configuration_name}"
        if num_processes <= 1 or len(todo) < 10:  # spawning workers costs more than a few small cases
            for a in tqdm(args, desc=desc, disable=not todo or not show_progress()):
                self.run_case_save_atomic(*a)
        else:
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(todo))) as pool:
                for _ in tqdm(
                    pool.imap_unordered(_star_run, [(self, a) for a in args]),
                    total=len(args),
                    desc=desc,
                    disable=not show_progress(),
                ):
                    pass
        shutil.rmtree(out_dir / SCRATCH, ignore_errors=True)
        return len(todo), skipped


def _star_run(item):
    pre, a = item
    return pre.run_case_save_atomic(*a)


def copy_gt_segmentations(raw_dataset: Path, preprocessed_dataset: Path) -> None:
    """Copy training labels to ``gt_segmentations`` (nnU-Net validates against them), atomically."""
    dataset_json = load_json(str(raw_dataset / "dataset.json"))
    check_dataset_entries(dataset_json, raw_dataset, raw_dataset / "dataset.json")
    dataset = get_filenames_of_train_images_and_targets(str(raw_dataset), dataset_json)
    target = preprocessed_dataset / "gt_segmentations"
    target.mkdir(parents=True, exist_ok=True)
    for k, v in dataset.items():
        dst = target / f"{k}{dataset_json['file_ending']}"
        src = Path(v["label"])
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
