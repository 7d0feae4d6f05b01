"""``umamba-seg benchmark``: every architecture on the CNN's plan, measured side by side in one run.

Steps, each printed as it starts:

1. CNN plans and preprocessed data for the configuration (planned from the fingerprint and
   preprocessed first if missing, as ``train`` does);
2. per architecture (the CNN, each requested one and its ``_nossm`` ablation): the same-plan
   plans file (:mod:`same_plan`), parameters and activation memory, estimated by the memory
   model and measured in a real forward at the plan's patch and batch
   (:func:`umamba_seg.planning.calibrate.calibrate_configuration`, this device's AMP: bf16 on
   the CPU, fp16 on CUDA);
3. per fold: training with the budget (``train_fold`` on those plans, with the trainer class of
   ``--recipe``: ``nnunet``, nnU-Net's recipe for every network, or ``authors``, each network's
   authors' optimizer, schedule, loss, deep supervision and batch), sliding-window
   prediction of the evaluation cases (``predict_folder``) and evaluation (``evaluate_folders``),
   which give the Dice;
4. the timing, in interleaved rounds (``--rounds``): every round times each network once, one
   after another (A, B, C, A, B, C, ...): a training step of its trainer on a fixed batch and the
   sliding-window prediction of the first evaluation case with its first fold
   (:mod:`timed_steps`), after one untimed warm-up of each. A network's ratio to the CNN is
   taken within each round and the median over the rounds is reported, so a load change on a
   shared machine hits the CNN and the network alike; rounds that still disagree by more than
   20% are flagged (:mod:`ratios`);
5. the table, CSV, JSON and plot (:mod:`report`) in ``<results>/DatasetXXX/benchmark_<config>_<recipe>/``,
   with the inference-time target check and the timing warnings, printed as well.

Evaluation cases are the dataset's held-out ``imagesTs`` with ``labelsTs`` when both exist,
otherwise the fold's validation cases (linked from ``imagesTr``/``labelsTr``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from umamba_seg.architectures import registry
from umamba_seg.benchmark.ratios import round_ratios
from umamba_seg.benchmark.report import BenchmarkRow, markdown_table, spread_warnings, target_checks, write_reports
from umamba_seg.benchmark.same_plan import benchmark_archs, write_same_plans
from umamba_seg.benchmark.timing import interleaved_rounds, median
from umamba_seg.errors import UserInputError
from umamba_seg.planning.naming import CNN_ARCH
from umamba_seg.training.recipes import DEFAULT_RECIPE, NNUNET_TRAINER, check_recipe, trainer_name
from umamba_seg.workspace import Workspace

logger = logging.getLogger(__name__)

_CHANNEL_SUFFIX_LEN = len("_0000")


@dataclass(frozen=True)
class BenchmarkSettings:
    """The budget and measurement settings of one benchmark run."""

    epochs: int = 1
    iters_per_epoch: int = 250
    val_iters: int | None = None
    folds: tuple[str, ...] = ("0",)
    device: str = "auto"
    tta: bool = True
    step_size: float = 0.5
    seed: int = 0
    num_processes: int = 2
    rounds: int = 5
    recipe: str = DEFAULT_RECIPE


@dataclass(frozen=True)
class EvaluationCases:
    """Images to predict and their reference labels."""

    images: Path
    labels: Path
    source: str
    count: int


def benchmark_folder(ws: Workspace, dataset_name: str, configuration: str, recipe: str = DEFAULT_RECIPE) -> Path:
    """``<results>/DatasetXXX_Name/benchmark_<config>_<recipe>``: one per recipe, side by side."""
    return ws.results_dataset(dataset_name) / f"benchmark_{configuration}_{recipe}"


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:  # file systems without symlinks
        shutil.copy2(src, dst)


def evaluation_cases(ws: Workspace, dataset_name: str, fold: str, bench_dir: Path) -> EvaluationCases:
    """Held-out ``imagesTs``/``labelsTs`` if the raw dataset has both, else fold ``fold``'s
    validation cases linked into ``bench_dir/cases/fold_<fold>``."""
    raw = ws.raw_dataset(dataset_name)
    ds = load_json(str(ws.preprocessed_dataset(dataset_name) / "dataset.json"))
    ending = ds["file_ending"]
    held_out = sorted((raw / "labelsTs").glob(f"*{ending}")) if (raw / "labelsTs").is_dir() else []
    if held_out and (raw / "imagesTs").is_dir():
        return EvaluationCases(raw / "imagesTs", raw / "labelsTs", "held-out imagesTs/labelsTs", len(held_out))
    if fold == "all":
        raise UserInputError(
            "fold 'all' has no validation cases and the dataset has no imagesTs/labelsTs",
            raw,
            "add held-out cases with labels (imagesTs + labelsTs) or benchmark a fold 0..4",
        )
    splits_file = ws.preprocessed_dataset(dataset_name) / "splits_final.json"
    if not splits_file.is_file():
        raise UserInputError(
            "no cross-validation splits to take validation cases from",
            splits_file,
            "train a fold first (the trainer writes the splits) or add imagesTs/labelsTs",
        )
    keys = json.loads(splits_file.read_text())[int(fold)]["val"]
    dest = bench_dir / "cases" / f"fold_{fold}"
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for key in keys:
        images = [
            p
            for p in (raw / "imagesTr").glob(f"{key}_*{ending}")
            if p.name[len(key) + 1 : len(key) + _CHANNEL_SUFFIX_LEN].isdigit()
            and len(p.name) == len(key) + _CHANNEL_SUFFIX_LEN + len(ending)
        ]
        label = raw / "labelsTr" / f"{key}{ending}"
        if not images or not label.is_file():
            raise UserInputError(
                f"validation case '{key}' is missing from the raw dataset",
                label,
                "restore the raw dataset (benchmark predicts from raw images)",
            )
        for p in images:
            _link(p.resolve(), dest / "images" / p.name)
        _link(label.resolve(), dest / "labels" / label.name)
    return EvaluationCases(dest / "images", dest / "labels", f"fold {fold} validation cases", len(keys))


def _class_names(dataset_json: dict) -> dict[str, str]:
    """summary key (``"1"``, ``"(1, 2)"``) -> label name from ``dataset.json``."""
    names = {}
    for name, value in dataset_json["labels"].items():
        key = (
            str(tuple(value))
            if isinstance(value, (list, tuple)) and len(value) > 1
            else str(value[0] if isinstance(value, (list, tuple)) else value)
        )
        names[key] = name
    return names


class _Steps:
    """Logs ``[k/N] what`` for each step."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def __call__(self, what: str) -> None:
        self.done += 1
        logger.info("\n[benchmark %d/%d] %s", self.done, self.total, what)


@dataclass
class _Trained:
    """What the training and evaluation of one architecture left for its row and its timing."""

    plans: dict
    note: str
    memory: dict
    model_dir: Path
    dice_mean: float
    dice_per_class: dict[str, float]


def run_benchmark(
    ws: Workspace,
    dataset_name: str,
    configuration: str,
    archs: Sequence[str] | None = None,
    settings: BenchmarkSettings = BenchmarkSettings(),
) -> dict:
    """Benchmark ``archs`` (with their ablations and the CNN) on the CNN's plan; returns
    ``{"rows": [BenchmarkRow], "meta": {...}, "paths": {kind: Path}, "checks": [TargetCheck]}``."""
    from umamba_seg.devices import resolve_device
    from umamba_seg.evaluation.evaluate import evaluate_folders
    from umamba_seg.inference.predict import predict_folder
    from umamba_seg.planning.calibrate import calibrate_configuration
    from umamba_seg.planning.pipeline import ensure_plans
    from umamba_seg.training.fold_run import FoldRun
    from umamba_seg.training.run import ensure_preprocessed, train_fold

    if settings.rounds < 1:
        raise UserInputError(f"--rounds {settings.rounds} is less than 1", "--rounds", "pass e.g. --rounds 5")
    check_recipe(settings.recipe)
    names = benchmark_archs(archs)
    trainers = {arch: trainer_name(arch, settings.recipe) for arch in names}  # an arch without the recipe stops here
    folds = [str(f) for f in settings.folds]
    device = resolve_device(settings.device)
    step = _Steps(2 + len(names) * (1 + 2 * len(folds)))
    logger.info(
        f"Benchmark of {', '.join(names)} on {dataset_name} {configuration}, every one on the CNN's plan "
        f"({settings.recipe} recipe, {settings.epochs} epoch(s) x {settings.iters_per_epoch} iterations, "
        f"fold(s) {', '.join(folds)}, {settings.rounds} timing rounds, {device})"
    )
    step("CNN plans and preprocessed data")
    ensure_plans(ws, dataset_name, CNN_ARCH, num_processes=settings.num_processes)
    ensure_preprocessed(ws, dataset_name, configuration, settings.num_processes)
    pre = ws.preprocessed_dataset(dataset_name)
    dataset_json = load_json(str(pre / "dataset.json"))
    class_names = _class_names(dataset_json)
    bench_dir = benchmark_folder(ws, dataset_name, configuration, settings.recipe)
    memory_device = "cuda" if device.type == "cuda" else "cpu"

    trained: dict[str, _Trained] = {}
    cases_used: dict[str, EvaluationCases] = {}
    for arch in names:
        step(f"{arch}: same-plan plans, parameters, activation memory (estimated vs measured)")
        same = write_same_plans(pre, arch)
        conf = PlansManager(same.plans).get_configuration(configuration)
        mem = calibrate_configuration(same.plans, configuration, dataset_json, device=memory_device)
        logger.info(
            f"  plans {same.plans_name}.json: patch {conf.patch_size}, batch {conf.batch_size}, "
            f"spacing {conf.spacing}" + (f" ({same.notes[configuration]})" if same.notes[configuration] else "")
        )
        logger.info(
            f"  {mem['params_m']:.2f} M parameters; activations {mem['estimated_gb']:.3f} GB estimated, "
            f"{mem['measured_gb']:.3f} GB measured (ratio {mem['ratio']:.2f})"
        )
        fold_dice: list[dict] = []
        model_dir = None
        for fold in folds:
            step(f"{arch}: train fold {fold} ({trainers[arch]})")
            fold_dir = train_fold(
                ws,
                dataset_name,
                FoldRun(
                    configuration,
                    fold,
                    arch,
                    epochs=settings.epochs,
                    iters_per_epoch=settings.iters_per_epoch,
                    val_iters=settings.val_iters,
                    device=settings.device,
                    seed=settings.seed,
                    num_processes=settings.num_processes,
                    validate=False,
                    recipe=settings.recipe,
                ),
                plans_name=same.plans_name,
            )
            model_dir = model_dir or fold_dir.parent
            if fold not in cases_used:
                cases_used[fold] = evaluation_cases(ws, dataset_name, fold, bench_dir)
            cases = cases_used[fold]
            step(f"{arch}: sliding-window prediction of {cases.count} {cases.source} and evaluation, fold {fold}")
            pred_dir = bench_dir / "predictions" / arch / f"fold_{fold}"
            if pred_dir.exists():
                shutil.rmtree(pred_dir)
            predict_folder(
                fold_dir.parent, cases.images, pred_dir, [fold], settings.step_size, settings.tta, device=device
            )
            fold_dice.append(
                evaluate_folders(
                    cases.labels,
                    pred_dir,
                    dataset_json=pre / "dataset.json",
                    num_processes=settings.num_processes,
                    verbose=False,
                )
            )
        per_class = {}
        for key in fold_dice[0]["mean"]:
            values = [s["mean"][key]["Dice"] for s in fold_dice]
            per_class[class_names.get(str(key), str(key))] = float(sum(values) / len(values))
        dice_mean = float(sum(s["foreground_mean"]["Dice"] for s in fold_dice) / len(fold_dice))
        trained[arch] = _Trained(same.plans, same.notes[configuration], mem, model_dir, dice_mean, per_class)
        logger.info("  %s: Dice %.3f", arch, dice_mean)

    step(
        f"timing: {settings.rounds} interleaved round(s) of every network's training step and sliding-window "
        f"prediction (fold {folds[0]})"
    )
    train_rounds, infer_rounds, batches = _timing_rounds(
        trained, trainers, configuration, folds[0], cases_used[folds[0]], dataset_json, device, settings
    )
    train_ratios, infer_ratios = round_ratios(train_rounds), round_ratios(infer_rounds)
    rows: list[BenchmarkRow] = []
    for arch, t in trained.items():
        conf = PlansManager(t.plans).get_configuration(configuration)
        rows.append(
            BenchmarkRow(
                arch=arch,
                has_ssm=registry.get(arch).has_ssm,
                configuration=configuration,
                spacing=[float(s) for s in conf.spacing],
                patch=[int(p) for p in conf.patch_size],
                batch=batches[arch],
                params=round(t.memory["params_m"] * 1e6),
                estimated_activation_gb=float(t.memory["estimated_gb"]),
                measured_activation_gb=float(t.memory["measured_gb"]),
                train_s_per_iter=median([r[arch] for r in train_rounds]),
                train_ratios=list(train_ratios[arch].per_round),
                infer_s_per_case=median([r[arch] for r in infer_rounds]),
                infer_ratios=list(infer_ratios[arch].per_round),
                dice_mean=t.dice_mean,
                dice_per_class=t.dice_per_class,
                note=_row_note(t.note, trainers[arch], batches[arch], int(conf.batch_size)),
            )
        )

    meta = {
        "dataset": dataset_name,
        "configuration": configuration,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "epochs": settings.epochs,
        "iters_per_epoch": settings.iters_per_epoch,
        "folds": ",".join(folds),
        "evaluation_cases": "; ".join(f"fold {f}: {c.count} {c.source}" for f, c in cases_used.items()),
        "tta": settings.tta,
        "step_size": settings.step_size,
        "seed": settings.seed,
        "recipe": settings.recipe,
        "timing_rounds": settings.rounds,
        "train_timing": "one training step (forward, loss, backward, optimizer) of the network's trainer on a fixed "
        "batch per round, median over the rounds after one warm-up step",
        "inference_timing": f"sliding-window prediction of the first evaluation case with fold {folds[0]} per round, "
        "median over the rounds after one warm-up prediction",
        "memory": f"bytes saved for backward at the plan's patch and batch, {memory_device} autocast "
        f"({'bf16' if memory_device == 'cpu' else 'fp16'})",
    }
    paths = write_reports(rows, meta, bench_dir)
    print("\n" + markdown_table(rows, meta))  # the command's result, not a log line
    logger.info("Wrote %s", ", ".join(str(p) for p in paths.values()))
    for line in spread_warnings(rows):
        logger.warning(line)
    return {"rows": rows, "meta": meta, "paths": paths, "checks": target_checks(rows)}


def _timing_rounds(
    trained: dict[str, _Trained],
    trainers: dict[str, str],
    configuration: str,
    fold: str,
    cases: EvaluationCases,
    dataset_json: dict,
    device: torch.device,
    settings: BenchmarkSettings,
) -> tuple[list[dict[str, float]], list[dict[str, float]], dict[str, int]]:
    """Seconds per round and architecture (training steps, sliding windows), and each trainer's batch."""
    from umamba_seg.benchmark.timed_steps import first_case_files, sliding_window_step_fn, training_step_fn
    from umamba_seg.training.recipe_trainers import trainer_class

    case_files = first_case_files(cases.images, dataset_json)
    fns, batches = {}, {}
    for arch, t in trained.items():
        train = training_step_fn(
            trainer_class(trainers[arch]),
            t.plans,
            configuration,
            int(fold) if fold.isdigit() else fold,
            dataset_json,
            device,
        )
        fns[(arch, "train")], batches[arch] = train.run, train.batch_size
        fns[(arch, "infer")] = sliding_window_step_fn(
            t.model_dir, fold, case_files, device, settings.step_size, settings.tta
        )
    timed = interleaved_rounds(
        fns,
        settings.rounds,
        warmup=1,
        device=device,
        on_round=lambda r: logger.info(f"  timing round {r + 1}/{settings.rounds} done"),
    )
    return (
        [{a: r[(a, "train")] for a in trained} for r in timed],
        [{a: r[(a, "infer")] for a in trained} for r in timed],
        batches,
    )


def _row_note(patch_note: str, trainer: str, batch: int, plan_batch: int) -> str:
    """The patch note, the trainer class where it is not nnU-Net's recipe, and a batch that is
    the recipe's rather than the plan's."""
    notes = [
        patch_note,
        "" if trainer == NNUNET_TRAINER else trainer,
        "" if batch == plan_batch else f"batch {batch} is the recipe's (plan: {plan_batch})",
    ]
    return "; ".join(n for n in notes if n)
