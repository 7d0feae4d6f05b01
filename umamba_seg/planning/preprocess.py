"""Resumable, atomic preprocessing on top of nnunetv2's DefaultPreprocessor.

nnunetv2 deletes the output folder and rewrites every case. Here a case is written into a
hidden scratch folder and its files are renamed into place, the ``.pkl`` last; a case counts
as done once its ``.pkl`` and both arrays exist. A rerun after a kill redoes only the cases
that are missing or half-written.
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
from umamba_seg.safe_paths import check_dataset_entries

SCRATCH = ".partial"
CASE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # renamed in this order; .pkl marks completion


def case_done(out_dir: Path, case: str) -> bool:
    return all((out_dir / f"{case}{s}").is_file() for s in CASE_SUFFIXES)


class ResumablePreprocessor(DefaultPreprocessor):
    """DefaultPreprocessor that skips finished cases and never leaves half-written ones."""

    def run_case_save_atomic(self, out_dir: str, case: str, image_files, seg_file, plans_manager,
                             configuration_manager, dataset_json) -> str:
        scratch = Path(out_dir) / SCRATCH / case
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        self.run_case_save(str(scratch / case), image_files, seg_file, plans_manager, configuration_manager,
                           dataset_json)
        for suffix in CASE_SUFFIXES:
            os.replace(scratch / f"{case}{suffix}", Path(out_dir) / f"{case}{suffix}")
        shutil.rmtree(scratch, ignore_errors=True)
        return case

    def run_resumable(self, dataset_name: str, configuration_name: str, plans_file: Path, raw_dataset: Path,
                      preprocessed_dataset: Path, num_processes: int) -> tuple[int, int]:
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
        args = [(str(out_dir), k, dataset[k]["images"], dataset[k]["label"], plans_manager, configuration_manager,
                 dataset_json) for k in todo]
        desc = f"Preprocessing {configuration_name}"
        if num_processes <= 1 or len(todo) < 10:  # spawning workers costs more than a few small cases
            for a in tqdm(args, desc=desc, disable=not todo):
                self.run_case_save_atomic(*a)
        else:
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(todo))) as pool:
                for _ in tqdm(pool.imap_unordered(_star_run, [(self, a) for a in args]), total=len(args), desc=desc):
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
