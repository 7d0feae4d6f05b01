"""``--verify``: check a raw dataset up front (nnunetv2's integrity check, as one clear error)."""

from __future__ import annotations

from pathlib import Path

from umamba_seg.errors import UserInputError


def verify_raw_dataset(raw_dataset: Path, num_processes: int = 2) -> None:
    """Run nnunetv2's ``verify_dataset_integrity``; its failures become a user error naming the folder."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(raw_dataset), num_processes)
    except (AssertionError, RuntimeError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise UserInputError(f"dataset check failed: {msg}", raw_dataset,
                             "fix the files named above and re-run with --verify") from e
