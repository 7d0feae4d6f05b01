"""``umamba-seg <command>``: argument parsing only; each command calls one function.

Contract: exit 0 on success; bad usage or bad input exits 2 with one
line ``error: <what>, <which file>, <what to do>`` on stderr and no traceback (``--debug``
shows it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from umamba_seg.errors import UserInputError
from umamba_seg.log import add_verbosity_flags, command_logging

log = logging.getLogger(__name__)
CONFIG_CHOICES = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one contract line (exit 2)."""

    def error(self, message: str):  # noqa: D401
        raise UserInputError(f"bad usage ({message})", self.prog, f"see `{self.prog} --help`")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder holding raw/, preprocessed/, results/ (default: nnUNet_* variables, else ./umamba_workdir)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_verbosity_flags(p)


def _model_args(p: argparse.ArgumentParser, required: bool) -> None:
    """``-d``/``-c``/``-a``: the dataset, configuration and architecture of a trained (or to be trained)
    model; ``required`` False leaves -d and -c out by default (a model folder may stand for them)."""
    p.add_argument("-d", "--dataset", required=required, default=None)
    p.add_argument("-c", "--configuration", required=required, default=None, choices=CONFIG_CHOICES)
    p.add_argument("-a", "--arch", default="cnn")


def _folder_args(p: argparse.ArgumentParser, input_nargs: str | None = None) -> None:
    """``-i`` the input folder (several with ``input_nargs="+"``), ``-o`` the output folder."""
    p.add_argument("-i", "--input", nargs=input_nargs, required=True, type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)


def _processes_arg(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("-np", "--num-processes", type=int, default=2, help=help_text)


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)


def _trust_arg(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("--trust-checkpoint", action="store_true", help=help_text)


def _plan_source_arg(p: argparse.ArgumentParser, help_text: str, default: str | None) -> None:
    from umamba_seg.planning.naming import PLAN_SOURCES

    p.add_argument("--plan-source", choices=PLAN_SOURCES, default=default, help=help_text)


def _recipe_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--recipe``: one of the training recipes (:mod:`umamba_seg.training.recipes`), nnU-Net's by default."""
    from umamba_seg.training.recipes import DEFAULT_RECIPE, RECIPES

    p.add_argument("--recipe", choices=RECIPES, default=DEFAULT_RECIPE, help=help_text)


def _model_selection_args(p: argparse.ArgumentParser) -> None:
    """``--recipe`` and ``--plan-source`` of the trained model that -d/-c/-a select (as ``train`` took them)."""
    from umamba_seg.training.recipes import DEFAULT_RECIPE

    _recipe_arg(p, f"the model trained with this recipe (default {DEFAULT_RECIPE})")
    _plan_source_arg(
        p,
        "the model trained on umambaPlans_<arch> (ssm) or umambaCNNPlans_<arch> (cnn) "
        "(default: the recipe's, as in train)",
        default=None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="umamba-seg", description="Self-configuring Mamba/xLSTM medical image segmentation on nnU-Net v2."
    )
    parser.add_argument("--version", action="version", version=f"umamba-seg {__import__('umamba_seg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan-and-preprocess", help="fingerprint, plan every architecture, preprocess")
    _common(p)
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("-a", "--arch", nargs="+", default=None, help="architectures (default: every registered one)")
    p.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        default=None,
        choices=CONFIG_CHOICES[:3],
        help="configurations to preprocess (default: all planned)",
    )
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="GPU memory target of the plans")
    p.add_argument("--verify", action="store_true", help="check the whole raw dataset first and report every problem")
    p.add_argument("--explain", action="store_true", help="print each plan and its memory estimate")
    p.add_argument("--no-preprocess", action="store_true", help="only plan")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint")
    _processes_arg(p)
    _plan_source_arg(
        p,
        "ssm: each network's own patch/batch/topology from the SSM-aware planner (umambaPlans_<arch>); "
        "cnn: nnU-Net's CNN plan unchanged with the network swapped, as U-Mamba and xLSTM-UNet were "
        "published (umambaCNNPlans_<arch>; a patch a network cannot take moves to the nearest it can, "
        "stated in the plans)",
        default="ssm",
    )
    p.add_argument(
        "--preset",
        default="default",
        metavar="SIZE",
        help="size of the networks' presets written into the plans: default (the authors' networks) or "
        "small (narrower, for CPUs and small GPUs); the CNN stays nnU-Net's plan",
    )

    p = sub.add_parser("train", help="train one fold")
    _common(p)
    _model_args(p, required=True)
    p.add_argument("-f", "--fold", required=True, help="0..4 or all")
    p.add_argument("--epochs", type=int, default=None, help="default: nnU-Net's 1000")
    p.add_argument("--iters-per-epoch", type=int, default=None, help="default: nnU-Net's 250")
    p.add_argument("--val-iters", type=int, default=None, help="validation iterations per epoch (default 50)")
    _device_arg(p)
    p.add_argument("--continue", dest="continue_", action="store_true", help="resume from the latest checkpoint")
    p.add_argument("--npz", action="store_true", help="save validation probabilities (ensembling, find-best)")
    p.add_argument("--seed", type=int, default=None)
    _trust_arg(p, "allow checkpoints that need full unpickling")
    _processes_arg(p, "processes for preprocessing on demand")
    p.add_argument(
        "--ddp",
        action="store_true",
        help="DistributedDataParallel under torchrun (NCCL on GPUs, gloo on CPU); see docs/scaling_out.md",
    )
    p.add_argument(
        "--pretrained-weights",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="start from the tensors of CHECKPOINT whose name and shape match (heads of another class "
        "count are skipped); vmunet also takes VMamba ImageNet checkpoints",
    )
    _plan_source_arg(
        p,
        "train on umambaPlans_<arch> (ssm) or umambaCNNPlans_<arch> (cnn), planned on demand "
        "(default: the recipe's: cnn for --recipe authors of U-Mamba and xLSTM-UNet, else ssm)",
        default=None,
    )
    _recipe_arg(
        p,
        "nnunet (default): nnU-Net's trainer for every network (SGD, poly, Dice+CE, deep supervision, "
        "1000 x 250), so networks compare under one recipe and stock nnU-Net trains the same; "
        "authors: each network as its authors trained it (README: Training recipes)",
    )

    p = sub.add_parser("predict", help="segment a folder of images")
    _common(p)
    _folder_args(p)
    _model_args(p, required=False)
    p.add_argument(
        "-m",
        "--model-dir",
        type=Path,
        default=None,
        help="a trained <Trainer>__<plans>__<config> folder (instead of -d/-c/-a)",
    )
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to average (default: all trained)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--step-size", type=float, default=0.5)
    p.add_argument("--no-tta", action="store_true", help="disable mirroring test-time augmentation")
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument("--continue", dest="continue_", action="store_true", help="skip finished cases")
    p.add_argument("--num-parts", type=int, default=1)
    p.add_argument("--part-id", type=int, default=0)
    _device_arg(p)
    _trust_arg(p)
    p.add_argument(
        "--instances",
        action="store_true",
        help="also write cell instances to OUT/instances/ (model of background 0, interior 1, boundary 2)",
    )
    p.add_argument(
        "--min-size", type=int, default=0, help="with --instances: drop instances of fewer pixels (default 0)"
    )
    _model_selection_args(p)

    p = sub.add_parser("ensemble", help="average saved probabilities of several prediction folders")
    _common(p)
    _folder_args(p, "+")
    p.add_argument("--save-probabilities", action="store_true")
    _processes_arg(p)
    _trust_arg(p, "fully unpickle the inputs' .pkl side files (only for folders you trust)")

    p = sub.add_parser("evaluate", help="Dice, IoU, HD95, NSD of predictions against references")
    _common(p)
    p.add_argument("-r", "--reference", required=True, type=Path)
    p.add_argument("-p", "--prediction", required=True, type=Path)
    p.add_argument("-d", "--dataset", default=None, help="labels/regions from this dataset's dataset.json")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: the prediction folder")
    p.add_argument("--nsd-tolerance", default="1.0", help="mm, or a JSON file {label: mm}")
    _processes_arg(p)
    p.add_argument(
        "--instances",
        action="store_true",
        help="REF and PRED hold instance label maps: F1, precision, recall, AP, matched IoU per cell",
    )
    p.add_argument("--iou", type=float, default=0.5, help="with --instances: IoU a matched cell needs (default 0.5)")
    p.add_argument(
        "--exclude-border",
        action="store_true",
        help="with --instances: ignore cells within 2 pixels of the image edge (NeurIPS CellSeg metric)",
    )

    p = sub.add_parser(
        "instances-to-semantic", help="instance label maps -> background 0, interior 1, boundary 2 (cells, nuclei)"
    )
    _common(p)
    p.add_argument("-i", "--input", required=True, type=Path, help="folder of instance label maps (any nnU-Net format)")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the semantic label maps")
    p.add_argument("--boundary-width", type=int, default=1, help="boundary thickness in pixels (default 1)")

    p = sub.add_parser("find-best", help="best model or pairwise ensemble from cross-validation, + postprocessing")
    _common(p)
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-a", "--arch", nargs="+", default=None, help="only these architectures (default: all trained)")
    p.add_argument("-c", "--configurations", nargs="+", default=None)
    p.add_argument("--no-ensembling", action="store_true")
    _processes_arg(p)
    _trust_arg(p, "fully unpickle the models' validation .pkl side files (only for results you trust)")

    p = sub.add_parser("postprocess", help="apply the postprocessing find-best determined")
    _common(p)
    _folder_args(p)
    p.add_argument("--pp-file", required=True, type=Path, help="postprocessing.json written by find-best")
    _processes_arg(p)

    p = sub.add_parser("benchmark", help="every architecture on the CNN's plan: parameters, memory, speed, Dice")
    _common(p)
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-c", "--configuration", required=True, choices=CONFIG_CHOICES[:3])
    p.add_argument(
        "-a",
        "--arch",
        nargs="+",
        default=None,
        help="architectures; each brings its _nossm ablation, the CNN always runs (default: every registered one)",
    )
    p.add_argument("--budget-epochs", type=int, default=1, help="training epochs per architecture")
    p.add_argument("--iters-per-epoch", type=int, default=250)
    p.add_argument("--val-iters", type=int, default=None, help="validation iterations per epoch (default 50)")
    p.add_argument("--folds", nargs="+", default=["0"], help="folds to train and evaluate (default 0)")
    _device_arg(p)
    p.add_argument("--no-tta", action="store_true", help="time and evaluate without mirroring")
    p.add_argument("--step-size", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    _processes_arg(p)
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved timing rounds; each times every network once, ratios to the CNN are taken "
        "within a round and their median reported (default 5)",
    )
    _recipe_arg(
        p,
        "how each network trains, on the CNN's plan either way: nnunet (default: nnU-Net's trainer for "
        "every network, so only the network differs) or authors (each network's authors' optimizer, "
        "schedule, loss, deep supervision and batch, as its trainer class umambaTrainer_*Authors)",
    )

    p = sub.add_parser("make-dataset", help="generate a built-in synthetic dataset in nnU-Net format")
    _common(p)
    p.add_argument("--kind", required=True, choices=("ct3d", "mri3d", "endoscopy2d", "microscopy2d"))
    p.add_argument("--id", type=int, default=None, help="dataset id (default per kind)")
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", help="default | small")

    p = sub.add_parser(
        "import-model",
        help="a model trained with the U-Mamba or xLSTM-UNet authors' code, "
        "into our results (then predict/ensemble/evaluate as usual)",
    )
    _common(p)
    p.add_argument(
        "--from", dest="source", required=True, choices=("u-mamba", "xlstm-unet"), help="whose nnunetv2 fork trained it"
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        help="the fork's <Trainer>__<Plans>__<config> folder (plans.json, dataset.json, fold_*/)",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name to import it as")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")

    p = sub.add_parser("export-model", help="a trained model as one zip (plans, checkpoints, manifest with sha256)")
    _common(p)
    _model_args(p, required=True)
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds to export (default: all trained)")
    p.add_argument(
        "--checkpoint",
        nargs="+",
        default=["final"],
        choices=("final", "best"),
        help="checkpoint_final.pth and/or checkpoint_best.pth (default: final)",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="the zip to write")
    _model_selection_args(p)

    p = sub.add_parser("install-model", help="a zip of export-model into this workdir's results, checked first")
    _common(p)
    p.add_argument("archive", type=Path, help="MODEL.zip written by umamba-seg export-model")
    p.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")

    p = sub.add_parser("demo", help="the whole chain on small built-in datasets, on CPU")
    _common(p)
    p.add_argument("-a", "--arch", nargs="+", default=None, help="architectures to train (default: cnn + umamba_bot)")
    p.add_argument("--fast", action="store_true", help="an even smaller run (smoke test)")
    p.add_argument(
        "--cells", action="store_true", help="the cell-instance workflow on generated nuclei: instance F1 next to Dice"
    )

    from umamba_seg.convert import CONVERTERS

    p = sub.add_parser("convert", help="a public dataset's download -> nnU-Net raw dataset (see datasets.md)")
    add_verbosity_flags(p)  # before NAME; after it they reach the converter, which takes them too
    p.add_argument("name", choices=CONVERTERS, help="the dataset's converter")
    p.add_argument(
        "converter_args",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="SRC_DIR [--out RAW_DIR | --workdir W] [--id N] [--verify] ... "
        "(`umamba-seg convert NAME --help` lists them)",
    )
    return parser


# ---- command implementations ------------------------------------------------------------


def _workspace(args):
    from umamba_seg.workspace import Workspace

    return Workspace.resolve(args.workdir).activate()


def cmd_plan_and_preprocess(args) -> int:
    from umamba_seg.architectures import registry
    from umamba_seg.planning.pipeline import plan_and_preprocess

    ws = _workspace(args)
    name = ws.dataset_name(args.dataset)
    archs = args.arch or registry.available()
    for a in archs:
        registry.get(a).at_size(args.preset)  # an unknown name or size stops here, before any work
    res = plan_and_preprocess(
        ws,
        name,
        archs,
        args.configurations,
        args.gpu_memory_gb,
        args.num_processes,
        verify=args.verify,
        clean=args.clean,
        preprocess=not args.no_preprocess,
        plan_source=args.plan_source,
        preset=args.preset,
    )
    if args.explain:
        from umamba_seg.planning.explain import explain_plans

        print(explain_plans(ws, name, archs, res["configurations"], args.gpu_memory_gb, args.plan_source))
    log.info(
        "Plans: %s in %s", ", ".join(sorted(Path(p).stem for p in res["plans"].values())), ws.preprocessed_dataset(name)
    )
    for c, d in res["preprocessed"].items():
        log.info(f"Preprocessed {c}: {d['preprocessed']} case(s) now, {d['skipped']} already done")
    return 0


def cmd_train(args) -> int:
    from umamba_seg.architectures import registry
    from umamba_seg.training.fold_run import FoldRun

    registry.get(args.arch)
    ws = _workspace(args)
    name = ws.dataset_name(args.dataset)
    run = FoldRun(
        configuration=args.configuration,
        fold=args.fold,
        arch=args.arch,
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        val_iters=args.val_iters,
        device=args.device,
        continue_training=args.continue_,
        npz=args.npz,
        seed=args.seed,
        trust_checkpoint=args.trust_checkpoint,
        num_processes=args.num_processes,
        plan_source=args.plan_source,
        recipe=args.recipe,
    )
    if args.ddp:
        if args.pretrained_weights is not None:
            raise UserInputError(
                "--pretrained-weights is not supported with --ddp yet",
                str(args.pretrained_weights),
                "fine-tune without --ddp",
            )
        from umamba_seg.training.ddp import train_fold_ddp

        out = train_fold_ddp(ws, name, run)
    else:
        from umamba_seg.training.run import train_fold

        out = train_fold(ws, name, run, pretrained_weights=args.pretrained_weights)
    log.info(f"Trained: {out}")
    return 0


def _model_dir(ws, args) -> Path:
    from umamba_seg.training.model_folders import resolve_trained_model

    if args.model_dir is not None:
        return args.model_dir
    if args.dataset is None or args.configuration is None:
        raise UserInputError("predict needs -d and -c (or -m MODEL_DIR)", "predict", "add -d ID -c CONFIG")
    name = ws.dataset_name(args.dataset)
    return resolve_trained_model(ws, name, args.arch, args.configuration, args.recipe, args.plan_source)


def cmd_predict(args) -> int:
    from umamba_seg.devices import resolve_device
    from umamba_seg.inference.predict import predict_folder

    ws = _workspace(args)
    model_dir = _model_dir(ws, args)
    if not model_dir.is_dir():  # -m (with -d/-c/-a a missing model already stopped, naming those that exist)
        raise UserInputError("no trained model", model_dir, "pass a trained <Trainer>__<plans>__<config> folder to -m")
    res = predict_folder(
        model_dir,
        args.input,
        args.output,
        args.folds,
        args.step_size,
        not args.no_tta,
        args.save_probabilities,
        args.continue_,
        args.num_parts,
        args.part_id,
        resolve_device(args.device),
        args.checkpoint,
        args.trust_checkpoint,
        instances=args.instances,
        min_size=args.min_size,
    )
    log.info(
        f"Predicted {res['predicted']} case(s) ({res['skipped']} already done) into {args.output} "
        f"in {res['seconds']:.1f} s"
    )
    return 0


def cmd_ensemble(args) -> int:
    from umamba_seg.evaluation.ensemble import ensemble_folders

    ensemble_folders(
        list(args.input),
        args.output,
        num_processes=args.num_processes,
        save_probabilities=args.save_probabilities,
        trust=args.trust_checkpoint,
    )
    log.info(f"Ensembled {len(args.input)} folders into {args.output}")
    return 0


def cmd_evaluate(args) -> int:
    from umamba_seg.evaluation.evaluate import evaluate_folders

    if args.instances:
        from umamba_seg.evaluation.evaluate_instances import evaluate_instance_folders

        evaluate_instance_folders(
            args.reference, args.prediction, args.output, args.iou, args.exclude_border, args.num_processes
        )
        return 0
    dataset_json = None
    if args.dataset is not None:
        ws = _workspace(args)
        name = ws.dataset_name(args.dataset)
        for base in (ws.raw_dataset(name), ws.preprocessed_dataset(name)):
            if (base / "dataset.json").is_file():
                dataset_json = base / "dataset.json"
                break
        if dataset_json is None:
            raise UserInputError("dataset.json not found", ws.raw_dataset(name), "check -d and --workdir")
    tol: float | Path
    try:
        tol = float(args.nsd_tolerance)
    except ValueError:
        tol = Path(args.nsd_tolerance)
        if not tol.is_file():
            raise UserInputError(
                "--nsd-tolerance is neither a number nor a JSON file",
                tol,
                "pass mm (e.g. 1.0) or a JSON file {label: mm}",
            ) from None
    evaluate_folders(args.reference, args.prediction, args.output, dataset_json, tol, args.num_processes)
    return 0


def cmd_instances_to_semantic(args) -> int:
    from umamba_seg.instance_labels import convert_instance_folder

    written = convert_instance_folder(args.input, args.output, args.boundary_width)
    log.info(
        f"Converted {len(written)} instance map(s) into {args.output} "
        "(dataset.json labels: background 0, interior 1, boundary 2)"
    )
    return 0


def cmd_find_best(args) -> int:
    from umamba_seg.evaluation.find_best import find_best

    ws = _workspace(args)
    name = ws.dataset_name(args.dataset)
    find_best(
        ws,
        name,
        args.arch,
        args.configurations,
        not args.no_ensembling,
        args.num_processes,
        trust=args.trust_checkpoint,
    )
    log.info(f"Instructions written to {ws.results_dataset(name) / 'inference_instructions.txt'}")
    return 0


def cmd_postprocess(args) -> int:
    from umamba_seg.evaluation.postprocess import postprocess_folder

    postprocess_folder(args.input, args.output, args.pp_file, args.num_processes)
    log.info(f"Postprocessed {args.input} into {args.output}")
    return 0


def cmd_benchmark(args) -> int:
    from umamba_seg.benchmark.runner import BenchmarkSettings, run_benchmark
    from umamba_seg.benchmark.same_plan import benchmark_archs

    benchmark_archs(args.arch)  # unknown names: one clear error before any work
    if args.budget_epochs < 1 or args.iters_per_epoch < 1:
        raise UserInputError(
            "--budget-epochs and --iters-per-epoch must be at least 1",
            "benchmark",
            "pass e.g. --budget-epochs 1 --iters-per-epoch 250",
        )
    for f in args.folds:
        if f != "all" and not f.isdigit():
            raise UserInputError(f"fold '{f}' is not a number or 'all'", "--folds", "pass e.g. --folds 0 1")
    ws = _workspace(args)
    name = ws.dataset_name(args.dataset)
    settings = BenchmarkSettings(
        epochs=args.budget_epochs,
        iters_per_epoch=args.iters_per_epoch,
        val_iters=args.val_iters,
        folds=tuple(args.folds),
        device=args.device,
        tta=not args.no_tta,
        step_size=args.step_size,
        seed=args.seed,
        num_processes=args.num_processes,
        rounds=args.rounds,
        recipe=args.recipe,
    )
    run_benchmark(ws, name, args.configuration, args.arch, settings)
    return 0


def cmd_make_dataset(args) -> int:
    from umamba_seg.data import make_dataset

    ws = _workspace(args)
    out = make_dataset(
        args.kind,
        ws.raw,
        dataset_id=args.id,
        seed=args.seed,
        num_train=args.num_train,
        num_test=args.num_test,
        size=args.size,
    )
    log.info(f"Dataset written to {out}")
    return 0


def cmd_import_model(args) -> int:
    from umamba_seg.interop.import_model import import_model

    ws = _workspace(args)
    res = import_model(ws, args.source, args.input, args.dataset, overwrite=args.overwrite)
    log.info(
        f"Imported {res.trainer_name} ({res.configuration}, fold(s) {' '.join(res.folds)}) as {res.arch}, "
        f"{res.n_parameters:,} parameters, into {res.destination}"
    )
    if res.dropped:
        log.info(
            f"Dropped {len(res.dropped)} unused weight(s) of the authors' ViL wrapper LayerNorm, which its "
            f"forward never calls: {', '.join(res.dropped)}"
        )
    log.info(
        f"Predict with: umamba-seg predict -d {res.dataset_name} -c {res.configuration} -a {res.arch} -i IN -o OUT"
        + (f" --workdir {args.workdir}" if args.workdir else "")
    )
    return 0


def cmd_export_model(args) -> int:
    from umamba_seg.interop.export_model import export_model

    res = export_model(
        _workspace(args),
        args.dataset,
        args.arch,
        args.configuration,
        args.output,
        args.folds,
        args.checkpoint,
        recipe=args.recipe,
        plan_source=args.plan_source,
    )
    log.info(
        f"Exported {res.model_dir.name} (fold(s) {' '.join(res.folds)}, {res.files} files) to {res.archive} "
        f"({res.bytes / 1e6:.1f} MB)"
    )
    log.info(f"Install elsewhere with: umamba-seg install-model {res.archive.name} --workdir DIR")
    return 0


def _model_options(model_dir: Path) -> str:
    """The predict options besides -d/-c/-a that select ``model_dir`` (its recipe and plans source)."""
    from umamba_seg.training.model_folders import parse_model_folder, selecting_options

    folder = parse_model_folder(model_dir)
    options = None if folder is None else selecting_options(folder)
    return f" {options}" if options else ""


def cmd_install_model(args) -> int:
    from umamba_seg.interop.install_model import install_model

    ws = _workspace(args)
    res = install_model(ws, args.archive, overwrite=args.overwrite)
    m = res.manifest
    log.info(
        f"Installed {m['dataset_name']}/{m['model_folder']} (arch {m.get('arch')}, fold(s) "
        f"{' '.join(map(str, m.get('folds', [])))}, {res.files} files checked) into {res.destination}"
    )
    ckpt = "" if "checkpoint_final.pth" in m.get("checkpoints", []) else " --checkpoint checkpoint_best.pth"
    ckpt += _model_options(res.destination)
    log.info(
        f"Predict with: umamba-seg predict -d {m['dataset_name']} -c {m['configuration']} -a {m.get('arch')} "
        f"-i IN -o OUT{ckpt}" + (f" --workdir {args.workdir}" if args.workdir else "")
    )
    return 0


def cmd_demo(args) -> int:
    from umamba_seg.demo import run_demo

    workdir = args.workdir or (Path.cwd() / "umamba_demo")
    run_demo(Path(workdir), main, archs=args.arch, fast=args.fast, cells=args.cells)
    return 0


def cmd_convert(args) -> int:
    import importlib

    return importlib.import_module(f"umamba_seg.convert.{args.name}").main(args.converter_args)


COMMANDS = {
    "plan-and-preprocess": cmd_plan_and_preprocess,
    "train": cmd_train,
    "predict": cmd_predict,
    "ensemble": cmd_ensemble,
    "evaluate": cmd_evaluate,
    "instances-to-semantic": cmd_instances_to_semantic,
    "find-best": cmd_find_best,
    "postprocess": cmd_postprocess,
    "benchmark": cmd_benchmark,
    "make-dataset": cmd_make_dataset,
    "import-model": cmd_import_model,
    "export-model": cmd_export_model,
    "install-model": cmd_install_model,
    "demo": cmd_demo,
    "convert": cmd_convert,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with command_logging(args.quiet, args.verbose):
            t0 = time.perf_counter()
            code = COMMANDS[args.command](args)
            if args.command not in ("demo",) and code == 0:
                log.info("[%s] done in %.1f s", args.command, time.perf_counter() - t0)
        return code
    except UserInputError as e:
        if debug:
            raise
        print(e.line(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
