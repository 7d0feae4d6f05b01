"""Trained model folders: ``<results>/DatasetXXX/<Trainer>__<plans>__<configuration>``.

A model is named by its trainer class (the recipe it trained with, :mod:`.recipes`), its plans
(``umambaPlans_<arch>`` from the SSM-aware planner, ``umambaCNNPlans_<arch>`` on the CNN's
plan; :mod:`umamba_seg.planning.naming`) and its configuration. Every command that finds a
trained model by architecture and configuration (predict, export-model, find-best, the
instructions of install-model) goes through :func:`resolve_trained_model` /
:func:`resolve_model_folder`, :func:`list_model_folders` and :func:`selecting_options`, so a
model trained with either plans source and any recipe is found the same way. Folders of other plans (the benchmark's ``umambaBenchPlans_<arch>``) and
hidden scratch folders (a leading dot) are never models here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import DEFAULT_PLAN_SOURCE, parse_plans_identifier, plans_identifier
from umamba_seg.training.recipes import DEFAULT_RECIPE, by_trainer, check_recipe, recipe_for, trainer_name
from umamba_seg.workspace import Workspace

SEPARATOR = "__"


@dataclass(frozen=True)
class ModelFolder:
    """One trained model folder and what its name says."""

    path: Path
    trainer: str
    plans: str
    arch: str
    plan_source: str
    configuration: str

    @property
    def name(self) -> str:
        return self.path.name


def model_folder_name(trainer: str, arch: str, configuration: str, plan_source: str = DEFAULT_PLAN_SOURCE) -> str:
    """``<trainer>__<plans>__<configuration>`` (nnunetv2's results layout)."""
    return SEPARATOR.join((trainer, plans_identifier(arch, plan_source), configuration))


def parse_model_folder(path: str | Path) -> ModelFolder | None:
    """What the folder's name says, or None if it is not one of our model folders."""
    path = Path(path)
    parts = path.name.split(SEPARATOR)
    if len(parts) != 3 or path.name.startswith(".") or not all(parts):
        return None
    trainer, plans, configuration = parts
    parsed = parse_plans_identifier(plans)
    if parsed is None:
        return None
    arch, plan_source = parsed
    return ModelFolder(path, trainer, plans, arch, plan_source, configuration)


def list_model_folders(ws: Workspace, dataset_name: str) -> list[ModelFolder]:
    """Every model folder of the dataset's results, sorted by name (folds not checked)."""
    results = ws.results_dataset(dataset_name)
    if not results.is_dir():
        return []
    found = (parse_model_folder(d) for d in sorted(results.iterdir()) if d.is_dir())
    return [m for m in found if m is not None]


def resolve_model_folder(
    ws: Workspace,
    dataset_name: str,
    arch: str,
    configuration: str,
    trainer: str,
    plan_source: str = DEFAULT_PLAN_SOURCE,
    train_hint: str = "",
) -> Path:
    """The model folder of (``trainer``, ``arch``'s plans of ``plan_source``, configuration); if it
    does not exist, one line naming the model folders the dataset does have. ``train_hint``: the
    train option that picks ``trainer`` (e.g. ``--recipe authors``), for the line's fix."""
    folder = ws.results_dataset(dataset_name) / model_folder_name(trainer, arch, configuration, plan_source)
    if folder.is_dir():
        return folder
    existing = [m.name for m in list_model_folders(ws, dataset_name)]
    have = (
        f"trained models of {dataset_name}: {', '.join(existing)}"
        if existing
        else f"{dataset_name} has no trained model yet"
    )
    options = [train_hint] if train_hint else []
    if plan_source != DEFAULT_PLAN_SOURCE:
        options.append(f"--plan-source {plan_source}")
    train = " ".join([f"umamba-seg train -d {dataset_name} -c {configuration} -f 0 -a {arch}", *options])
    raise UserInputError(
        f"no trained model {folder.name} ({have})",
        folder,
        f"pick one of those (-a, --plan-source, --recipe) or train it first: {train}",
    )


def resolve_trained_model(
    ws: Workspace,
    dataset_name: str,
    arch: str,
    configuration: str,
    recipe: str = DEFAULT_RECIPE,
    plan_source: str | None = None,
) -> Path:
    """The model folder ``train -a arch -c configuration --recipe recipe [--plan-source ...]``
    writes (``plan_source`` None: the recipe's, as in ``train``); one line naming the dataset's
    models if it does not exist."""
    trainer = trainer_name(arch, check_recipe(recipe))
    source = plan_source or recipe_for(arch, recipe).plan_source
    hint = "" if recipe == DEFAULT_RECIPE else f"--recipe {recipe}"
    return resolve_model_folder(ws, dataset_name, arch, configuration, trainer, source, hint)


def selecting_options(folder: ModelFolder) -> str | None:
    """The options besides ``-d -c -a`` that make predict or export-model pick ``folder``
    (``""``: the defaults do); None when no recipe's trainer class trained it (then ``-m FOLDER``)."""
    recipe = by_trainer(folder.trainer)
    if recipe is None:
        return None
    try:
        chosen = recipe_for(folder.arch, recipe.name)
    except UserInputError:  # an architecture this version does not know
        return None
    if chosen.trainer != folder.trainer:
        return None
    options = [] if recipe.name == DEFAULT_RECIPE else [f"--recipe {recipe.name}"]
    if folder.plan_source != chosen.plan_source:
        options.append(f"--plan-source {folder.plan_source}")
    return " ".join(options)
