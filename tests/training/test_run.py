"""training.run: the checks made before a fold trains (configurations read through nnunetv2's PlansManager)."""

from __future__ import annotations

import pytest

from umamba_seg.errors import UserInputError
from umamba_seg.training.run import ensure_preprocessed
from umamba_seg.workspace import Workspace


def test_a_configuration_the_plans_lack_is_one_line_naming_the_plans(trained_2d_workdir):
    ws = Workspace.from_workdir(trained_2d_workdir)
    name = ws.dataset_name("903")
    before = sorted(p.name for p in ws.preprocessed_dataset(name).iterdir())
    with pytest.raises(UserInputError) as err:
        ensure_preprocessed(ws, name, "3d_fullres")
    text = str(err.value)
    assert "configuration '3d_fullres' is not in the plans" in text
    assert "umambaPlans_cnn.json" in text and "choose one of 2d" in text
    assert sorted(p.name for p in ws.preprocessed_dataset(name).iterdir()) == before  # nothing written


def test_a_planned_and_preprocessed_configuration_needs_no_work(trained_2d_workdir):
    ws = Workspace.from_workdir(trained_2d_workdir)
    name = ws.dataset_name("903")
    data = ws.preprocessed_dataset(name) / "umambaPlans_2d"
    stamps = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    ensure_preprocessed(ws, name, "2d")  # finds every case done through the plans' data identifier
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == stamps


def test_trusting_one_folds_checkpoints_leaves_the_trainer_class_untrusted(tmp_path):
    """``--trust-checkpoint`` is one training's choice: it must not stay on the trainer class for the
    next training in the same process (a benchmark, a test session, a notebook)."""
    import torch

    from umamba_seg.training.fold_run import FoldRun
    from umamba_seg.training.run import fold_trainer

    class RecordingTrainer:
        trust_checkpoints = False

        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def configure_schedule(self, *schedule):
            self.schedule = schedule

    ws = Workspace.from_workdir(tmp_path)
    ws.preprocessed_dataset("Dataset001_X").mkdir(parents=True)
    (ws.preprocessed_dataset("Dataset001_X") / "dataset.json").write_text("{}")
    run = FoldRun("2d", 0, epochs=2, trust_checkpoint=True)
    trainer = fold_trainer(RecordingTrainer, {}, ws, "Dataset001_X", run, torch.device("cpu"))
    assert trainer.trust_checkpoints is True and RecordingTrainer.trust_checkpoints is False
    assert trainer.kwargs["fold"] == 0 and trainer.schedule == (2, None, None)
    untrusted = fold_trainer(RecordingTrainer, {}, ws, "Dataset001_X", FoldRun("2d", 0), torch.device("cpu"))
    assert untrusted.trust_checkpoints is False
