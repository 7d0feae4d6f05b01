"""``make_dataset``: render a synthetic kind into ``<raw_dir>/DatasetXXX_<Name>``.

Deterministic: case ``i`` of a split is drawn from ``numpy.random.default_rng([seed,
split, i])``, so the same seed gives byte-identical images and the test cases do not
change when the number of training cases does. Re-running with the same arguments
returns the existing dataset at once; different arguments regenerate it (only when the
folder was written by this generator: somebody's real dataset is never overwritten).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from umamba_seg.data.kind import DatasetKind
from umamba_seg.data.writer import INSTANCE_SUBFOLDERS, SUBFOLDERS, write_case, write_dataset_json
from umamba_seg.errors import UserInputError
from umamba_seg.log import show_progress

GENERATOR_VERSION = 2  # 2: microscopy2d writes instance maps (instancesTr/Ts)
_SPLIT_CODES = {"Tr": 0, "Ts": 1}


def _kinds() -> dict[str, DatasetKind]:
    from umamba_seg.data import ct3d, endoscopy2d, microscopy2d, mri3d

    return {k.KIND.kind: k.KIND for k in (ct3d, mri3d, endoscopy2d, microscopy2d)}


def get_kind(kind: str) -> DatasetKind:
    """The declaration of ``kind``; a clear error naming the choices otherwise."""
    kinds = _kinds()
    if kind not in kinds:
        raise UserInputError(f"unknown dataset kind '{kind}'", "--kind", f"choose one of: {', '.join(kinds)}")
    return kinds[kind]


def case_ids(kind: DatasetKind, num_train: int, num_test: int) -> tuple[list[str], list[str]]:
    """Identifiers of the training and held-out test cases."""
    train = [f"{kind.case_prefix}_{i:03d}" for i in range(num_train)]
    test = [f"{kind.case_prefix}_test_{i:03d}" for i in range(num_test)]
    return train, test


def _check_arguments(
    kind: DatasetKind, dataset_id: int, size: str, num_train: int, num_test: int, seed: int = 0
) -> None:
    if size not in kind.sizes:
        raise UserInputError(
            f"unknown size '{size}' for {kind.kind}", "--size", f"choose one of: {', '.join(kind.sizes)}"
        )
    if not 1 <= dataset_id <= 999:
        raise UserInputError(
            f"dataset id {dataset_id} is outside 1..999", "--dataset-id", "nnU-Net ids have at most three digits"
        )
    if num_train < 1:
        raise UserInputError(
            f"--num-train must be at least 1 (got {num_train})",
            "--num-train",
            "use 5 or more for nnU-Net's 5-fold cross-validation",
        )
    if seed < 0:
        raise UserInputError(f"--seed must not be negative (got {seed})", "--seed", "use 0 or a positive integer")
    if num_test < 0:
        raise UserInputError(f"--num-test must not be negative (got {num_test})", "--num-test", "use 0 or more")


def _prepare_folder(raw_dir: Path, folder_name: str, dataset_id: int, generator: dict) -> bool:
    """Check for id clashes; return True if an identical dataset already exists."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for other in raw_dir.glob(f"Dataset{dataset_id:03d}_*"):
        if other.name != folder_name:
            raise UserInputError(
                f"dataset id {dataset_id} is already used by {other.name}",
                other,
                "pass another --dataset-id or remove that folder",
            )
    dataset_dir = raw_dir / folder_name
    if not dataset_dir.exists():
        return False
    json_file = dataset_dir / "dataset.json"
    if json_file.is_file():
        import json

        try:
            existing = json.loads(json_file.read_text())
        except (OSError, ValueError):
            existing = {}
        record = existing.get("umamba_seg_generator")
        if record == generator:
            return True
        if record is None:
            raise UserInputError(
                f"{folder_name} exists and was not made by umamba-seg",
                dataset_dir,
                "pass another --dataset-id or move that folder away",
            )
    # ours with other settings, or interrupted before dataset.json: start clean
    for sub in SUBFOLDERS + INSTANCE_SUBFOLDERS:
        shutil.rmtree(dataset_dir / sub, ignore_errors=True)
    (dataset_dir / "dataset.json").unlink(missing_ok=True)
    return False


def make_dataset(
    kind: str,
    raw_dir: Path,
    dataset_id: int | None = None,
    seed: int = 0,
    num_train: int | None = None,
    num_test: int | None = None,
    size: str = "default",
    progress: bool = True,
) -> Path:
    """Generate (or reuse) a synthetic nnU-Net raw dataset and return its folder.

    ``kind`` is one of :data:`umamba_seg.data.KINDS`; ``size`` one of ``tiny`` (tests),
    ``small`` (the demo) or ``default``; case counts default to the size's preset.
    """
    spec = get_kind(kind)
    dataset_id = spec.default_id if dataset_id is None else int(dataset_id)
    if size not in spec.sizes:
        _check_arguments(spec, dataset_id, size, 1, 0)
    preset = spec.sizes[size]
    num_train = preset.num_train if num_train is None else int(num_train)
    num_test = preset.num_test if num_test is None else int(num_test)
    _check_arguments(spec, dataset_id, size, num_train, num_test, int(seed))

    raw_dir = Path(raw_dir)
    folder_name = f"Dataset{dataset_id:03d}_{spec.name}"
    dataset_dir = raw_dir / folder_name
    generator = {
        "kind": spec.kind,
        "seed": int(seed),
        "size": size,
        "num_train": num_train,
        "num_test": num_test,
        "version": GENERATOR_VERSION,
    }
    if _prepare_folder(raw_dir, folder_name, dataset_id, generator):
        return dataset_dir
    for sub in SUBFOLDERS:
        (dataset_dir / sub).mkdir(parents=True, exist_ok=True)

    train_ids, test_ids = case_ids(spec, num_train, num_test)
    jobs = [("Tr", i, cid) for i, cid in enumerate(train_ids)] + [("Ts", i, cid) for i, cid in enumerate(test_ids)]
    for split, index, case_id in tqdm(
        jobs, desc=f"make-dataset {spec.kind}", unit="case", disable=not progress or not show_progress()
    ):
        rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], index])
        write_case(spec, dataset_dir, split, case_id, spec.render(rng, preset))
    write_dataset_json(spec, dataset_dir, num_train, num_test, generator)
    return dataset_dir
