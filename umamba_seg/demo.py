"""``umamba-seg demo``: the whole product on two small built-in datasets, on the CPU, in minutes.

For a 2D dataset (RGB laparoscopy, instruments) and a 3D one (abdominal CT, liver and
kidneys) it runs exactly the commands a user would type, printing each one first:
``make-dataset``, ``plan-and-preprocess``, ``train`` (the nnU-Net CNN and, in 2D,
``umamba_bot`` with the same budget; ``-a`` chooses the networks for both datasets),
``predict`` on the held-out cases and ``evaluate`` against their labels. It ends with a Dice table, the time of every step and
where the outputs are, and fails (``RuntimeError``) if the CNN misses its Dice target, so
the demo doubles as an end-to-end check.

``demo --cells`` runs the cell-instance workflow instead, on generated fluorescence nuclei
(``microscopy2d``: interior/boundary labels plus instance maps): ``predict --instances`` and
``evaluate --instances`` against the instance maps, so the table shows instance F1 (IoU 0.5)
next to Dice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

RunCommand = Callable[[Sequence[str]], int]  # runs one ``umamba-seg`` command line, returns its exit code
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoTask:
    """One dataset of the demo and its training budget."""

    title: str
    kind: str
    size: str
    configuration: str
    num_train: int
    num_test: int
    epochs: int
    iters_per_epoch: int
    val_iters: int
    dice_target: float  # for the CNN
    with_ssm: bool = True  # train the SSM network next to the CNN when no -a is given
    instances: bool = False  # cells: predict and score instances too (instance F1 next to Dice)


def demo_tasks(fast: bool = False) -> list[DemoTask]:
    """The demo's datasets and budgets (``fast``: a smaller smoke run, same Dice targets)."""
    if fast:
        return [
            DemoTask("2D endoscopy (RGB PNG)", "endoscopy2d", "small", "2d", 15, 4, 3, 15, 1, 0.7),
            DemoTask("3D abdominal CT (NIfTI)", "ct3d", "small", "3d_fullres", 8, 3, 5, 10, 1, 0.5),
        ]
    return [
        DemoTask("2D endoscopy (RGB PNG)", "endoscopy2d", "small", "2d", 20, 6, 4, 15, 1, 0.7),
        # the CNN alone in 3D by default: a second 3D training (umamba_bot takes ~1.8x the
        # CNN's time on a CPU) would break the 5-minute budget; `demo -a cnn umamba_bot` runs it
        DemoTask("3D abdominal CT (NIfTI)", "ct3d", "small", "3d_fullres", 10, 3, 4, 12, 1, 0.5, with_ssm=False),
    ]


def cell_tasks(fast: bool = False) -> list[DemoTask]:
    """``demo --cells``: touching nuclei, instance F1 next to Dice (``fast``: a smaller smoke run)."""
    # Dice target 0.45: the fast run measured 0.559 (interior 0.906, boundary 0.213) with F1 0.422
    if fast:
        return [DemoTask("2D nuclei (TIFF)", "microscopy2d", "small", "2d", 15, 3, 3, 15, 1, 0.45, instances=True)]
    return [DemoTask("2D nuclei (TIFF)", "microscopy2d", "small", "2d", 20, 6, 4, 15, 1, 0.45, instances=True)]


def default_archs(task: DemoTask | None = None) -> list[str]:
    """The CNN, plus ``umamba_bot`` once its network is registered (unless ``task`` trains the CNN alone)."""
    from umamba_seg.architectures import registry

    ssm = (task is None or task.with_ssm) and "umamba_bot" in registry.available()
    return ["cnn"] + (["umamba_bot"] if ssm else [])


class _Runner:
    """Runs CLI commands in-process through ``run_command``, printing and timing each one."""

    def __init__(self, workdir: Path, total_steps: int, run_command: RunCommand):
        self.workdir = workdir
        self.run_command = run_command
        self.total = total_steps
        self.done = 0
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}  # user + system, this process and its workers
        self.commands: list[str] = []

    def __call__(self, label: str, *args: object) -> float:
        argv = [str(a) for a in args] + ["--workdir", str(self.workdir)]
        shown = "umamba-seg " + " ".join(_quote(a) for a in argv)
        self.done += 1
        log.info("\n[%d/%d] %s\n$ %s", self.done, self.total, label, shown)
        self.commands.append(shown)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        code = self.run_command(argv)
        seconds = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"demo step failed (exit {code}): {shown}")
        self.timings[label] = seconds
        self.cpu_timings[label] = _cpu_seconds() - c0
        return seconds


def _cpu_seconds() -> float:
    """CPU time used so far by this process and its finished child processes."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or not arg) else arg


def _read_dice(summary_file: Path) -> dict:
    """Foreground-mean and per-class Dice from an ``evaluate`` summary.json."""
    summary = json.loads(summary_file.read_text())
    per_class = {str(k): float(v.get("Dice", math.nan)) for k, v in summary.get("mean", {}).items()}
    return {"mean": float(summary["foreground_mean"]["Dice"]), "per_class": per_class}


def _read_f1(summary_file: Path) -> float:
    """Mean per-case instance F1 from an ``evaluate --instances`` summary.json."""
    return float(json.loads(summary_file.read_text())["mean"]["F1"])


def _dice_table(results: list[dict]) -> str:
    with_f1 = any("f1" in r for r in results)
    f1_head = f" {'F1@0.5':>7}" if with_f1 else ""
    header = (
        f"{'dataset':<26} {'arch':<12} {'mean Dice':>9}{f1_head}  {'per class':<34} {'train s':>8} {'predict s':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        classes = ", ".join(f"{r['label_names'].get(k, k)} {v:.3f}" for k, v in r["dice"]["per_class"].items())
        f1 = (f" {r['f1']:>7.3f}" if "f1" in r else f" {'-':>7}") if with_f1 else ""
        lines.append(
            f"{r['title']:<26} {r['arch']:<12} {r['dice']['mean']:>9.3f}{f1}  {classes:<34} "
            f"{r['train_s']:>8.1f} {r['predict_s']:>9.1f}"
        )
    return "\n".join(lines)


def run_demo(
    workdir: Path, run_command: RunCommand, archs: list[str] | None = None, fast: bool = False, cells: bool = False
) -> dict:
    """Run the demo in ``workdir``; returns ``{"results", "timings", "cpu_timings", "total_s", "outputs", "commands"}``.

    Every step is a ``umamba-seg`` command line, printed and then run by ``run_command``
    (the CLI passes its own ``main``, so the demo runs exactly what a user would type; this
    module stays below the CLI and never imports it).

    ``results`` holds one row per (dataset, architecture): mean and per-class Dice on the
    held-out cases plus training/prediction seconds. ``archs`` (for every dataset) defaults
    to the CNN and ``umamba_bot`` in 2D and the CNN alone in 3D (only the CNN with
    ``fast``). Raises ``RuntimeError`` when the CNN
    misses its Dice target (0.7 in 2D, 0.5 in 3D). ``cells`` runs the nuclei instance task
    (:func:`cell_tasks`) instead, whose rows also hold the instance F1 (``f1``).
    """
    from umamba_seg.architectures import registry
    from umamba_seg.data import get_kind

    # On a small CPU box process start-up (each spawned worker imports torch and nnunetv2)
    # costs more than it saves: augment in the training process and export validation
    # results with one worker, unless the user chose otherwise.
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    workdir = Path(workdir).resolve()
    tasks = cell_tasks(fast) if cells else demo_tasks(fast)
    given = list(archs) if archs else None
    for a in given or []:
        registry.get(a)  # unknown names: one clear error before any work
    task_archs = [given or (["cnn"] if fast else default_archs(t)) for t in tasks]
    run = _Runner(workdir, sum(2 + (4 if t.instances else 3) * len(a) for t, a in zip(tasks, task_archs)), run_command)
    t_start = time.perf_counter()
    plan = "; ".join(f"{t.configuration}: {', '.join(a)}" for t, a in zip(tasks, task_archs))
    log.info("umamba-seg demo: %d datasets (%s) on the CPU, workdir %s", len(tasks), plan, workdir)

    results, outputs = [], {"workdir": str(workdir)}
    for task, archs in zip(tasks, task_archs):
        spec = get_kind(task.kind)
        ds_id = str(spec.default_id)
        tag = "2D" if task.configuration == "2d" else "3D"
        run(
            f"{tag} make-dataset",
            "make-dataset",
            "--kind",
            task.kind,
            "--size",
            task.size,
            "--num-train",
            task.num_train,
            "--num-test",
            task.num_test,
            "--seed",
            0,
        )
        raw = workdir / "raw" / f"Dataset{spec.default_id:03d}_{spec.name}"
        run(
            f"{tag} plan-and-preprocess",
            "plan-and-preprocess",
            "-d",
            ds_id,
            "-a",
            *archs,
            "-c",
            task.configuration,
            "-np",
            1,
        )
        label_names = {str(v): k for k, v in spec.labels.items()}
        for arch in archs:
            train_s = run(
                f"{tag} train {arch}",
                "train",
                "-d",
                ds_id,
                "-c",
                task.configuration,
                "-f",
                "0",
                "-a",
                arch,
                "--epochs",
                task.epochs,
                "--iters-per-epoch",
                task.iters_per_epoch,
                "--val-iters",
                task.val_iters,
                "--device",
                "cpu",
                "--seed",
                0,
            )
            pred = workdir / "demo_predictions" / raw.name / arch
            predict_s = run(
                f"{tag} predict {arch}",
                "predict",
                "-i",
                raw / "imagesTs",
                "-o",
                pred,
                "-d",
                ds_id,
                "-c",
                task.configuration,
                "-a",
                arch,
                "-f",
                "0",
                "--device",
                "cpu",
                *(["--instances"] if task.instances else []),
            )
            run(f"{tag} evaluate {arch}", "evaluate", "-r", raw / "labelsTs", "-p", pred, "-d", ds_id, "-np", 1)
            row = {
                "title": task.title,
                "dataset": raw.name,
                "configuration": task.configuration,
                "arch": arch,
                "dice": _read_dice(pred / "summary.json"),
                "label_names": label_names,
                "train_s": train_s,
                "predict_s": predict_s,
                "target": task.dice_target,
            }
            if task.instances:
                run(
                    f"{tag} evaluate instances {arch}",
                    "evaluate",
                    "-r",
                    raw / "instancesTs",
                    "-p",
                    pred / "instances",
                    "--instances",
                    "-np",
                    1,
                )
                row["f1"] = _read_f1(pred / "instances" / "summary.json")
            results.append(row)
            outputs[f"{raw.name} {arch} predictions"] = str(pred)
        outputs[f"{raw.name} models"] = str(workdir / "results" / raw.name)
    total = time.perf_counter() - t_start

    # the report below is the demo's result: printed, so --quiet keeps it
    print("\n" + "=" * 30 + " umamba-seg demo results " + "=" * 30)
    print(
        "Dice on the held-out test cases (never seen in training)"
        + ("; F1@0.5: instance F1 at IoU 0.5, mean over cases" if cells else "")
        + ":\n"
    )
    print(_dice_table(results))
    print("\nTime per step (wall clock; CPU time of all processes in brackets):")
    for label, seconds in run.timings.items():
        print(f"  {label:<32} {seconds:7.1f} s  ({run.cpu_timings[label]:6.1f} s CPU)")
    print(f"  {'total':<32} {total:7.1f} s  ({sum(run.cpu_timings.values()):6.1f} s CPU)")
    print("\nOutputs:")
    for what, where in outputs.items():
        print(f"  {what:<48} {where}")

    failed = [r for r in results if r["arch"] == "cnn" and not r["dice"]["mean"] >= r["target"]]
    if failed:
        msg = "; ".join(f"{r['title']}: CNN Dice {r['dice']['mean']:.3f} < {r['target']}" for r in failed)
        raise RuntimeError(f"demo Dice target missed: {msg}")
    print("\nDemo passed: the CNN reached its Dice targets.")
    return {
        "results": results,
        "timings": run.timings,
        "cpu_timings": run.cpu_timings,
        "total_s": total,
        "outputs": outputs,
        "commands": run.commands,
    }
