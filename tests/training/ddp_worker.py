"""Test harness for tests/training/test_ddp.py: one fold trained on a fixed batch, with or without torchrun.

``FixedBatchTrainer`` draws one global batch with a fixed numpy seed and no augmentation;
every rank keeps its rows of it (nnunetv2's split of the global batch), so a DDP run and a
single-process run see the same data and their first losses must agree. It records the
first-step loss, the initial weights and the final weights of each rank under
``--record DIR``, and can SIGKILL one rank at a given step (``--kill-rank``/``--kill-at``).

Run: ``torchrun --nproc-per-node 2 tests/training/ddp_worker.py --workdir W -d 903 -c 2d -a cnn --record R``
(or ``--single`` without torchrun for the single-process reference).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from umamba_seg.training.ddp import umambaTrainerDDP

BATCH_SEED = 1234


class FixedBatchTrainer(umambaTrainerDDP):  # noqa: N801
    record_dir: Path | None = None
    kill_rank: int = -1
    kill_at: int = -1

    def _rank_and_world(self) -> tuple[int, int]:
        if self.is_ddp:
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _my_rows(self) -> slice:
        rank, world = self._rank_and_world()
        sizes = [self.batch_size]
        if world > 1:
            sizes = [None] * world
            torch.distributed.all_gather_object(sizes, self.batch_size)
        lo = sum(sizes[:rank])
        return slice(lo, lo + sizes[rank])

    def get_dataloaders(self):
        from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        transforms = self.get_validation_transforms(
            self._get_deep_supervision_scales(), foreground_labels=self.label_manager.foreground_labels
        )
        dataset_tr, _ = self.get_tr_and_val_datasets()
        patch = self.configuration_manager.patch_size
        loader = nnUNetDataLoader(
            dataset_tr,
            self.configuration_manager.batch_size,
            patch,
            patch,
            self.label_manager,
            oversample_foreground_percent=0.33,
            transforms=transforms,
        )
        state = np.random.get_state()
        np.random.seed(BATCH_SEED)
        batch = loader.generate_train_batch()
        np.random.set_state(state)
        rows = self._my_rows()
        mine = {"data": batch["data"][rows], "target": [t[rows] for t in batch["target"]]}
        return itertools.repeat(mine), itertools.repeat(mine)

    def _module(self) -> torch.nn.Module:
        return self.network.module if self.is_ddp else self.network

    def _save_weights(self, name: str) -> None:
        if self.record_dir is None:
            return
        rank, _ = self._rank_and_world()
        state = {k: v.detach().cpu().clone() for k, v in self._module().state_dict().items()}
        torch.save(state, self.record_dir / f"{name}_rank{rank}.pt")

    def on_train_start(self) -> None:
        super().on_train_start()
        self._steps = 0
        self._save_weights("initial")

    def train_step(self, batch: dict) -> dict:
        rank, _ = self._rank_and_world()
        self._steps += 1
        if rank == self.kill_rank and self._steps == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        out = super().train_step(batch)
        if self._steps == 1 and self.record_dir is not None:
            rows = self._my_rows()
            (self.record_dir / f"first_loss_rank{rank}.json").write_text(
                json.dumps({"loss": float(out["loss"]), "rows": rows.stop - rows.start})
            )
            self._save_weights("step1")
        return out

    def on_train_end(self) -> None:
        super().on_train_end()
        self._save_weights("final")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("-a", "--arch", nargs="+", default=["cnn"], help="several only with --single")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--record", type=Path, required=True)
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--single", action="store_true", help="no torchrun: the single-process reference")
    args = p.parse_args(argv)

    from umamba_seg.workspace import Workspace

    args.record.mkdir(parents=True, exist_ok=True)
    FixedBatchTrainer.record_dir = args.record
    FixedBatchTrainer.kill_rank, FixedBatchTrainer.kill_at = args.kill_rank, args.kill_at
    ws = Workspace.resolve(args.workdir).activate()
    name = ws.dataset_name(args.dataset)
    schedule = dict(epochs=1, iters_per_epoch=args.iters, val_iters=1, device="cpu", seed=0)
    if args.single:
        for arch in args.arch:
            FixedBatchTrainer.record_dir = args.record / arch
            FixedBatchTrainer.record_dir.mkdir(exist_ok=True)
            train_single(ws, name, args.configuration, arch, **schedule)
    else:
        from umamba_seg.training.ddp import train_fold_ddp

        (arch,) = args.arch
        from umamba_seg.training.fold_run import FoldRun

        train_fold_ddp(ws, name, FoldRun(args.configuration, 0, arch, validate=False, **schedule), FixedBatchTrainer)
    return 0


def train_single(
    ws,
    dataset_name: str,
    configuration: str,
    arch: str,
    epochs: int,
    iters_per_epoch: int,
    val_iters: int,
    device: str,
    seed: int,
) -> None:
    """The same fixed-batch training in one plain process (no process group)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from umamba_seg.planning.pipeline import ensure_plans
    from umamba_seg.training.run import seed_everything

    pre = ws.preprocessed_dataset(dataset_name)
    plans = load_json(str(ensure_plans(ws, dataset_name, arch)))
    plans["continue_training"] = False
    seed_everything(seed)
    trainer = FixedBatchTrainer(
        plans=plans,
        configuration=configuration,
        fold=0,
        dataset_json=load_json(str(pre / "dataset.json")),
        device=torch.device(device),
    )
    trainer.configure_schedule(epochs, iters_per_epoch, val_iters)
    trainer.run_training()


if __name__ == "__main__":
    from umamba_seg.errors import UserInputError

    try:
        sys.exit(main())
    except UserInputError as e:  # as the CLI does: one line, exit 2
        print(e.line(), file=sys.stderr)
        sys.exit(2)
