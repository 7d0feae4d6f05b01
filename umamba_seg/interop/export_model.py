"""``export-model``: one trained model folder as a single zip that ``install-model`` accepts.

nnunetv2's ``export_pretrained_model`` is not reused: it ships ``postprocessing.pkl`` (a
pickle the receiver would have to unpickle), writes no manifest and reads the results folder
from a global. Here the files are chosen by name (:mod:`.model_archive`), each is hashed into
the manifest, and the model is checked the way the receiver will check it (plans on the
allow-list, checkpoints loadable with ``weights_only=True``) so nothing unusable is shared.
The zip is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import umamba_seg
from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.atomic import atomic_path
from umamba_seg.errors import UserInputError
from umamba_seg.interop.model_archive import (
    CHECKPOINT_FILES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    allowed_model_file,
    sha256_file,
)
from umamba_seg.json_files import read_json
from umamba_seg.training.checkpoint_io import load_checkpoint_safe
from umamba_seg.training.model_folders import parse_model_folder, resolve_trained_model
from umamba_seg.training.recipes import DEFAULT_RECIPE, by_trainer
from umamba_seg.workspace import Workspace


@dataclass
class ExportResult:
    archive: Path
    model_dir: Path
    folds: list[str]
    files: int
    bytes: int
    seconds: float


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _folds(model_dir: Path, folds: Sequence[str] | None, checkpoint_names: list[str]) -> list[str]:
    first = checkpoint_names[0]
    found = sorted(p.parent.name.removeprefix("fold_") for p in model_dir.glob(f"fold_*/{first}"))
    if folds is None:
        if not found:
            raise UserInputError(
                f"no fold of the model has {first}",
                model_dir,
                "finish training a fold first (or pick --checkpoint best)",
            )
        folds = found
    for f in folds:
        for name in checkpoint_names:
            if not (model_dir / f"fold_{f}" / name).is_file():
                raise UserInputError(
                    f"fold {f} has no {name}",
                    model_dir / f"fold_{f}" / name,
                    f"train fold {f} first or choose folds among {found or 'none'}",
                )
    return [str(f) for f in folds]


def _model_files(model_dir: Path, folds: list[str], checkpoint_names: list[str]) -> list[str]:
    """Paths relative to ``model_dir`` that go into the archive."""
    files = ["plans.json", "dataset.json"]
    if (model_dir / "dataset_fingerprint.json").is_file():
        files.append("dataset_fingerprint.json")
    for f in folds:
        files += [f"fold_{f}/{name}" for name in checkpoint_names]
        if (model_dir / f"fold_{f}" / "validation" / "summary.json").is_file():
            files.append(f"fold_{f}/validation/summary.json")
    for folder in sorted(model_dir.glob("crossval_results_folds_*")):
        for name in ("summary.json", "postprocessing.json"):
            if (folder / name).is_file():
                files.append(f"{folder.name}/{name}")
    assert all(allowed_model_file(f) for f in files), files
    return files


def _check_model(model_dir: Path, folds: list[str], checkpoint_names: list[str]) -> dict:
    """What the receiver checks, checked here first; returns the first checkpoint's metadata."""
    fix = "restore the model folder's file (or train the model again)"
    plans = read_json(model_dir / "plans.json", fix)
    check_plans(plans, model_dir / "plans.json")
    check_dataset_json_names(read_json(model_dir / "dataset.json", fix), model_dir / "dataset.json")
    meta: dict = {}
    for f in folds:
        for name in checkpoint_names:
            path = model_dir / f"fold_{f}" / name
            try:
                ckpt = load_checkpoint_safe(path, trust=False)
            except UserInputError as e:
                raise UserInputError(
                    f"{e.what}; the receiver could not load it either",
                    path,
                    "export checkpoints written by `umamba-seg train` or `import-model`",
                ) from e
            if not meta:
                meta = {"trainer_name": ckpt.get("trainer_name"), "epochs_trained": ckpt.get("current_epoch")}
            del ckpt
    return meta


def export_model(
    ws: Workspace,
    dataset: str | int,
    arch: str,
    configuration: str,
    output: str | os.PathLike,
    folds: Sequence[str] | None = None,
    checkpoints: Sequence[str] = ("final",),
    recipe: str = DEFAULT_RECIPE,
    plan_source: str | None = None,
) -> ExportResult:
    """Write the model ``<results>/<dataset>/<Trainer>__<plans>__<configuration>`` that ``train -a
    arch --recipe recipe [--plan-source plan_source]`` wrote to ``output``."""
    t0 = time.perf_counter()
    name = ws.dataset_name(dataset)
    model_dir = resolve_trained_model(ws, name, arch, configuration, recipe, plan_source)
    folder = parse_model_folder(model_dir)
    for f in ("plans.json", "dataset.json"):
        if not (model_dir / f).is_file():
            raise UserInputError(f"model folder has no {f}", model_dir / f, "train a fold of this model first")
    checkpoint_names = [CHECKPOINT_FILES[c] for c in dict.fromkeys(checkpoints)]
    chosen = _folds(model_dir, folds, checkpoint_names)
    meta = _check_model(model_dir, chosen, checkpoint_names)
    files = _model_files(model_dir, chosen, checkpoint_names)
    prefix = f"{name}/{model_dir.name}"
    listed = {
        f"{prefix}/{f}": {"size": (model_dir / f).stat().st_size, "sha256": sha256_file(model_dir / f)} for f in files
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset_name": name,
        "model_folder": model_dir.name,
        "arch": arch,
        "plans_name": folder.plans,
        "plan_source": folder.plan_source,
        "configuration": configuration,
        "trainer_name": meta.get("trainer_name"),
        "recipe": getattr(by_trainer(folder.trainer), "name", None),
        "folds": chosen,
        "checkpoints": checkpoint_names,
        "epochs_trained": meta.get("epochs_trained"),
        "versions": {
            "umamba-seg": umamba_seg.__version__,
            "nnunetv2": package_version("nnunetv2"),
            "torch": torch.__version__,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": listed,
    }
    output = Path(output).expanduser().resolve()
    with atomic_path(output, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2), compress_type=zipfile.ZIP_DEFLATED)
            for f in files:  # checkpoints barely compress: stored, the JSON files deflated
                zf.write(
                    model_dir / f,
                    f"{prefix}/{f}",
                    compress_type=zipfile.ZIP_STORED if f.endswith(".pth") else zipfile.ZIP_DEFLATED,
                )
    return ExportResult(output, model_dir, chosen, len(files), output.stat().st_size, time.perf_counter() - t0)
