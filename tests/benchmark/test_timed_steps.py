"""The benchmark's training-step batch is drawn in this process, whatever nnUNet_n_proc_DA says."""

from __future__ import annotations

import os

import pytest
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from umamba_seg.benchmark.runner import _row_note
from umamba_seg.benchmark.timed_steps import _no_augmentation_workers


@pytest.mark.parametrize("before", ["3", None])
def test_no_augmentation_workers_while_the_batch_is_drawn(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    else:
        monkeypatch.setenv("nnUNet_n_proc_DA", before)
    with _no_augmentation_workers():
        assert get_allowed_n_proc_DA() == 0  # nnunetv2's loaders then use its SingleThreadedAugmenter
    assert os.environ.get("nnUNet_n_proc_DA") == before  # restored (or absent again)


def test_row_note_names_a_recipe_trainer_and_its_own_batch():
    assert _row_note("", "umambaTrainer", 2, 2) == ""
    assert _row_note("patch 64x80 -> 64x64, the nearest vmunet accepts", "umambaTrainer_VMUNetAuthors", 32, 2) == (
        "patch 64x80 -> 64x64, the nearest vmunet accepts; umambaTrainer_VMUNetAuthors; batch 32 is the recipe's "
        "(plan: 2)"
    )
    assert _row_note("", "umambaTrainer_UMambaAuthors", 2, 2) == "umambaTrainer_UMambaAuthors"
