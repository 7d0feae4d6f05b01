"""``find-best``: the best single model or pairwise ensemble from cross-validation, by nnU-Net's rule.

Discovers every trained ``<Trainer>__<plans>__<config>`` of a dataset (any trainer, plans of either
source: ``umambaPlans_<arch>``, ``umambaCNNPlans_<arch>``; :mod:`umamba_seg.training.model_folders`), uses the
folds all of them have, and runs nnunetv2's ``find_best_configuration`` (accumulate the
cross-validation predictions, ensemble every pair from their ``--npz`` probabilities, pick the
highest foreground Dice, determine connected-component postprocessing). The inference
instructions are then rewritten as ``umamba-seg`` commands, and the postprocessing is stored
as JSON so applying it never unpickles code.

nnunetv2 unpickles the models' ``validation/<case>.pkl`` files when it ensembles them and the
``postprocessing.pkl`` it writes; before it does, the models' plans.json and dataset.json pass
the plans allow-list and every one of those pickles is read with the data-only unpickler
(:mod:`umamba_seg.safe_pickle`), so a crafted file stops the run with exit 2 instead of running
code (``--trust-checkpoint`` skips the pickle check).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.atomic import write_json_atomic, write_text_atomic
from umamba_seg.errors import UserInputError
from umamba_seg.evaluation.postprocess import ALLOWED_FUNCTIONS, ALLOWED_MODULE
from umamba_seg.safe_paths import check_file_ending
from umamba_seg.safe_pickle import load_pickle_safe
from umamba_seg.training.model_folders import list_model_folders, selecting_options
from umamba_seg.workspace import Workspace

log = logging.getLogger(__name__)


def discover_models(
    ws: Workspace, dataset_name: str, archs: Sequence[str] | None = None, configurations: Sequence[str] | None = None
) -> list[dict]:
    """Trained model folders with their folds (those with a finished checkpoint and validation)."""
    models = []
    for m in list_model_folders(ws, dataset_name):
        if archs and m.arch not in archs or configurations and m.configuration not in configurations:
            continue
        d = m.path
        folds = sorted(
            int(f.name[5:])
            for f in d.glob("fold_[0-9]*")
            if (f / "checkpoint_final.pth").is_file() and (f / "validation").is_dir()
        )
        npz = all(any((d / f"fold_{f}" / "validation").glob("*.npz")) for f in folds)
        if folds:
            models.append(
                {
                    "trainer": m.trainer,
                    "plans": m.plans,
                    "arch": m.arch,
                    "plan_source": m.plan_source,
                    "configuration": m.configuration,
                    "folds": folds,
                    "npz": npz,
                    "dir": d,
                    "options": selecting_options(m),
                }
            )
    return models


def _predict_cmd(ds_id: int, m: dict, folds: Sequence[int], out: str, workdir: str, probs: bool) -> str:
    options = m.get("options", "")
    model = (
        f"-m {m['dir']}"
        if options is None  # a trainer of no recipe: the folder itself
        else f"-d {ds_id} -c {m['configuration']} -a {m['arch']}" + (f" {options}" if options else "")
    )
    cmd = f"umamba-seg predict -i INPUT_FOLDER -o {out} {model} -f {' '.join(map(str, folds))} --workdir {workdir}"
    return cmd + (" --save-probabilities" if probs else "")


def check_model_files(models: Sequence[dict], folds: Sequence[int], trust: bool = False) -> None:
    """The models' plans.json/dataset.json (allow-list) and the validation pickles nnunetv2 will
    unpickle (data only unless ``trust``), each failing with one line naming the file."""
    import json

    for m in models:
        d = Path(m["dir"])
        for name in ("plans.json", "dataset.json"):
            try:
                content = json.loads((d / name).read_text())
            except (OSError, ValueError) as e:
                raise UserInputError(
                    f"{name} of a trained model is unreadable ({type(e).__name__})",
                    d / name,
                    "restore it from the preprocessed dataset",
                ) from None
            if name == "plans.json":
                check_plans(content, d / name)
            else:
                check_dataset_json_names(content, d / name)
                check_file_ending(content.get("file_ending"), d / name)
        if not trust:
            for f in folds:
                for pkl in sorted((d / f"fold_{f}" / "validation").glob("*.pkl")):
                    load_pickle_safe(pkl)


def write_postprocessing_json(pkl: Path) -> Path:
    """Store nnunetv2's postprocessing.pkl (functions + kwargs) as JSON next to it; the pickle
    may name only the allowed postprocessing functions besides plain data."""
    fns, kwargs = load_pickle_safe(pkl, extra_globals=[(ALLOWED_MODULE, fn) for fn in ALLOWED_FUNCTIONS])
    out = pkl.with_suffix(".json")
    write_json_atomic({"functions": [f"{fn.__module__}.{fn.__name__}" for fn in fns], "kwargs": kwargs}, out)
    return out


def find_best(
    ws: Workspace,
    dataset_name: str,
    archs: Sequence[str] | None = None,
    configurations: Sequence[str] | None = None,
    allow_ensembling: bool = True,
    num_processes: int = 2,
    trust: bool = False,
) -> dict:
    """Run the selection; returns nnunetv2's result dict plus our instructions. ``trust``: the
    models' validation pickles are unpickled without the data-only check."""
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    models = discover_models(ws, dataset_name, archs, configurations)
    where = ws.results_dataset(dataset_name)
    if not models:
        raise UserInputError(
            "no trained models with finished folds",
            where,
            f"train some first: umamba-seg train -d {dataset_name} -c CONFIG -f 0 --npz",
        )
    folds = sorted(set.intersection(*(set(m["folds"]) for m in models)))
    if not folds:
        raise UserInputError(
            "the trained models share no finished fold",
            where,
            "train the same folds (e.g. -f 0 and -f 1) for every architecture",
        )
    if allow_ensembling and len(models) > 1 and not all(m["npz"] for m in models):
        missing = [m["dir"].name for m in models if not m["npz"]]
        log.warning("Ensembling disabled: no validation probabilities in %s (train with --npz).", ", ".join(missing))
        allow_ensembling = False
    check_model_files(models, folds, trust)
    log.info("Comparing %d model(s) on folds %s: %s", len(models), folds, ", ".join(m["dir"].name for m in models))
    res = find_best_configuration(
        dataset_name,
        tuple({"trainer": m["trainer"], "plans": m["plans"], "configuration": m["configuration"]} for m in models),
        allow_ensembling=allow_ensembling and len(models) > 1,
        num_processes=num_processes,
        overwrite=True,
        folds=tuple(folds),
    )
    best = res["best_model_or_ensemble"]
    pp_json = write_postprocessing_json(Path(best["postprocessing_file"]))
    chosen = [
        next(
            m
            for m in models
            if m["plans"] == s["plans_identifier"]
            and m["configuration"] == s["configuration"]
            and m["trainer"] == s["trainer"]
        )
        for s in best["selected_model_or_models"]
    ]
    ds_id = ws.dataset_id(dataset_name)
    workdir = str(ws.raw.parent)
    lines = [
        f"Best for {dataset_name} on cross-validation folds {folds}: "
        + (" + ".join(f"{m['arch']} {m['configuration']}" for m in chosen))
        + f" (foreground Dice {best['result_on_crossval_pre_pp']:.4f}, "
        f"{best['result_on_crossval_post_pp']:.4f} after postprocessing)",
        "",
        "All candidates (foreground Dice):",
    ]
    lines += [f"  {k}: {v:.4f}" for k, v in res["all_results"].items()]
    lines += ["", "Run on new data:"]
    if len(chosen) == 1:
        lines.append(_predict_cmd(ds_id, chosen[0], folds, "OUTPUT_FOLDER", workdir, False))
    else:
        for i, m in enumerate(chosen, 1):
            lines.append(_predict_cmd(ds_id, m, folds, f"OUTPUT_FOLDER_MODEL_{i}", workdir, True))
        lines.append(
            "umamba-seg ensemble -i "
            + " ".join(f"OUTPUT_FOLDER_MODEL_{i}" for i in range(1, len(chosen) + 1))
            + " -o OUTPUT_FOLDER"
        )
    lines += [
        "",
        "Then apply the postprocessing:",
        f"umamba-seg postprocess -i OUTPUT_FOLDER -o OUTPUT_FOLDER_PP --pp-file {pp_json}",
        "",
    ]
    text = "\n".join(lines)
    write_text_atomic(text, where / "inference_instructions.txt")
    print(text)  # the command's result, not a log line
    res["umamba_instructions"] = text
    res["postprocessing_json"] = str(pp_json)
    return res
