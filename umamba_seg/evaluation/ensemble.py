"""Ensemble prediction folders by averaging their saved probabilities.

The merging follows nnunetv2's per-case step (``nnunetv2.ensembling.ensemble.merge_files``:
average the ``.npz`` probabilities with its ``average_probabilities``, convert with the
dataset's ``LabelManager``, write with the plans' reader-writer). What nnunetv2's
``ensemble_folders`` does not do and this module adds:

- the ``<case>.pkl`` image properties next to the probabilities are read with a data-only
  unpickler (:mod:`umamba_seg.safe_pickle`; nnunetv2 unpickles them fully, so a crafted file
  runs code), unless ``--trust-checkpoint``; the folders' plans.json and dataset.json pass
  the plans allow-list and the file-ending check before nnunetv2 resolves a name in them;

- checks that the folders can be ensembled, each failing with one clear line: every
  folder holds the ``dataset.json`` and ``plans.json`` that nnunetv2's predictor writes
  next to its predictions, all come from the same dataset with the same labels, regions,
  file ending and reader-writer, and all hold probabilities for the same cases
  (nnunetv2 takes the first folder's files on trust and asserts on the rest);
- atomic outputs: each case is merged into a hidden folder inside the output folder and
  then renamed into place, so an interrupted run never leaves half a file;
- one process without a pool when ``num_processes <= 1`` (nnunetv2 always spawns one).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import save_pickle
from nnunetv2.ensembling.ensemble import average_probabilities
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.atomic import write_json_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.json_files import read_json
from umamba_seg.log import show_progress
from umamba_seg.safe_paths import check_file_ending
from umamba_seg.safe_pickle import load_pickle_safe

DATASET_KEYS_THAT_MUST_MATCH: tuple[str, ...] = ("labels", "regions_class_order", "file_ending")
PLANS_KEYS_THAT_MUST_MATCH: tuple[str, ...] = ("dataset_name", "image_reader_writer", "label_manager")
_SAVE_HINT = "predict with --save-probabilities (nnU-Net's predictor writes dataset.json and plans.json there)"


def _load_json(path: Path) -> dict:
    return read_json(
        path, "re-run the prediction", missing=(f"{path.name} missing from a prediction folder", _SAVE_HINT)
    )


def _check_same(key: str, values: Sequence, files: Sequence[Path], what: str) -> None:
    for value, file in zip(values[1:], files[1:]):
        if value != values[0]:
            raise UserInputError(
                f"{what} '{key}' differs from the first folder's ({value!r} vs {values[0]!r})",
                file,
                "ensemble only predictions of the same dataset and label set",
            )


def _cases_per_folder(folders: Sequence[Path]) -> list[str]:
    """The probability files every folder holds; error naming the first gap."""
    per_folder = [{p.name for p in f.glob("*.npz") if not p.name.startswith(".")} for f in folders]
    for folder, names in zip(folders, per_folder):
        if not names:
            raise UserInputError("no probability files (.npz) in a prediction folder", folder, _SAVE_HINT)
    every = set().union(*per_folder)
    for folder, names in zip(folders, per_folder):
        lacking = sorted(every - names)
        if lacking:
            raise UserInputError(
                f"probabilities missing for case {lacking[0][:-4]} ({len(lacking)} of {len(every)} cases missing)",
                folder / lacking[0],
                "predict the same cases with --save-probabilities in every folder",
            )
    for name in sorted(every):
        pkl = folders[0] / (name[:-4] + ".pkl")
        if not pkl.is_file():
            raise UserInputError("image properties (.pkl) missing next to the probabilities", pkl, _SAVE_HINT)
    return sorted(every)


def check_ensemble_inputs(in_dirs: Sequence[Path]) -> tuple[dict, dict, list[str]]:
    """Validate the folders; return the first folder's dataset.json, plans.json and the case files."""
    folders = [Path(d) for d in in_dirs]
    if len(folders) < 2:
        raise UserInputError(
            f"ensembling needs at least two prediction folders, got {len(folders)}",
            None,
            "pass two or more folders with -i",
        )
    if len({f.resolve() for f in folders}) != len(folders):
        raise UserInputError("the same prediction folder is given twice", None, "pass each folder once")
    for folder in folders:
        if not folder.is_dir():
            raise UserInputError("prediction folder does not exist", folder, "pass existing folders")
    dataset_files = [f / "dataset.json" for f in folders]
    plans_files = [f / "plans.json" for f in folders]
    datasets = [_load_json(p) for p in dataset_files]
    plans = [_load_json(p) for p in plans_files]
    for d, p, d_file, p_file in zip(datasets, plans, dataset_files, plans_files):
        check_plans(p, p_file)
        check_dataset_json_names(d, d_file)
    for key in DATASET_KEYS_THAT_MUST_MATCH:
        _check_same(key, [d.get(key) for d in datasets], dataset_files, "dataset.json")
    for key in PLANS_KEYS_THAT_MUST_MATCH:
        _check_same(key, [p.get(key) for p in plans], plans_files, "plans.json")
    if "labels" not in datasets[0] or "file_ending" not in datasets[0]:
        raise UserInputError("dataset.json lacks 'labels' or 'file_ending'", dataset_files[0], "re-run the prediction")
    check_file_ending(datasets[0]["file_ending"], dataset_files[0])
    return datasets[0], plans[0], _cases_per_folder(folders)


def load_properties(pkl: Path, trust: bool = False) -> dict:
    """The image properties nnunetv2 saved next to a case's probabilities, read as data only
    (any pickled object when ``trust``)."""
    properties = load_pickle_safe(pkl, trust=trust)
    if not isinstance(properties, dict):
        raise UserInputError("image properties (.pkl) are not a dict", pkl, _SAVE_HINT)
    return properties


def merge_case(
    files: Sequence[str], properties: dict, output_truncated: str, file_ending: str, rw, lm, save_probabilities: bool
) -> None:
    """nnunetv2's ``merge_files`` with the first folder's properties already loaded."""
    probabilities = average_probabilities(list(files))
    segmentation = lm.convert_probabilities_to_segmentation(probabilities)
    rw.write_seg(segmentation, output_truncated + file_ending, properties)
    if save_probabilities:
        np.savez_compressed(output_truncated + ".npz", probabilities=probabilities)
        save_pickle(properties, output_truncated + ".pkl")


def _npz_readable(path: str) -> bool:
    try:
        with np.load(path) as z:
            z["probabilities"]
        return True
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
        return False


def _merge_case(args: tuple) -> dict:
    """Merge one case into the hidden folder, then rename its files into place."""
    files, properties, tmp_truncated, final_truncated, file_ending, rw, lm, save_probabilities = args
    try:
        merge_case(files, properties, tmp_truncated, file_ending, rw, lm, save_probabilities)
    except (ValueError, AssertionError, KeyError) as e:  # shapes, channel counts or properties that do not fit
        return {
            "error": (
                f"the probabilities of this case do not fit together ({e})",
                files[-1],
                "ensemble predictions of the same cases, labels and geometry",
            )
        }
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a truncated or corrupt .npz, or a write
        bad = next((f for f in files if not _npz_readable(f)), None)
        if bad is None:
            raise
        return {
            "error": (
                f"cannot read the probabilities ({type(e).__name__}: {e})",
                bad,
                "re-run that folder's prediction with --save-probabilities",
            )
        }
    endings = [file_ending] + ([".npz", ".pkl"] if save_probabilities else [])
    for ending in endings:
        os.replace(tmp_truncated + ending, final_truncated + ending)
    return {"written": final_truncated + file_ending}


def _collect(results: Iterable[dict], progress: dict) -> list[str]:
    written = []
    for r in tqdm(results, **progress):
        if "error" in r:
            raise UserInputError(*r["error"])
        written.append(r["written"])
    return written


def ensemble_folders(
    in_dirs: list[Path],
    out_dir: Path,
    num_processes: int = 2,
    save_probabilities: bool = False,
    verbose: bool = True,
    trust: bool = False,
) -> list[Path]:
    """Average the probabilities of ``in_dirs`` case by case into segmentations in ``out_dir``.

    Also writes the first folder's ``dataset.json`` and ``plans.json`` to ``out_dir`` (so
    the result can be evaluated with its labels, or ensembled again with
    ``save_probabilities``). ``trust`` unpickles the ``.pkl`` side files fully
    (``--trust-checkpoint``). Returns the written segmentation files.
    """
    folders = [Path(d) for d in in_dirs]
    out_dir = Path(out_dir)
    dataset, plans, cases = check_ensemble_inputs(folders)
    if out_dir.resolve() in {f.resolve() for f in folders}:
        raise UserInputError("the output folder is one of the input folders", out_dir, "choose a new output folder")
    try:
        plans_manager = PlansManager(plans)
        rw = plans_manager.image_reader_writer_class()
        lm = plans_manager.get_label_manager(dataset)
    except (AssertionError, RuntimeError, KeyError) as e:
        raise UserInputError(
            f"cannot use these plans and labels ({type(e).__name__}: {e})",
            folders[0] / "plans.json",
            "re-run the prediction with valid plans",
        ) from None

    properties = {case: load_properties(folders[0] / (case[:-4] + ".pkl"), trust) for case in cases}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".ensemble.", dir=out_dir))
    try:
        jobs = [
            (
                [str(f / case) for f in folders],
                properties[case],
                str(tmp_dir / case[:-4]),
                str(out_dir / case[:-4]),
                dataset["file_ending"],
                rw,
                lm,
                save_probabilities,
            )
            for case in cases
        ]
        progress = dict(total=len(jobs), desc="ensemble", unit="case", disable=not verbose or not show_progress())
        if num_processes <= 1 or len(jobs) == 1:
            written = _collect(map(_merge_case, jobs), progress)
        else:
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
                written = _collect(pool.imap(_merge_case, jobs), progress)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    write_json_atomic(dataset, out_dir / "dataset.json")
    write_json_atomic(plans, out_dir / "plans.json")
    return [Path(w) for w in written]
