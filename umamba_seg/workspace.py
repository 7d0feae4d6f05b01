"""Where raw, preprocessed and results data live.

Precedence: ``--workdir DIR`` (``DIR/raw``, ``DIR/preprocessed``, ``DIR/results``), then the
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` environment variables, then
``./umamba_workdir``. :meth:`Workspace.activate` exports the three variables, which nnunetv2
reads lazily, so nnunetv2 code called afterwards uses the same folders and never warns about
unset paths.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.dataset_name_id_conversion import (
    find_candidate_datasets,
    maybe_convert_to_dataset_name,
)

from umamba_seg.errors import UserInputError

ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
DEFAULT_WORKDIR = "umamba_workdir"
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass(frozen=True)
class Workspace:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike) -> Workspace:
        w = Path(workdir).expanduser().resolve()
        return cls(w / "raw", w / "preprocessed", w / "results")

    @classmethod
    def resolve(cls, workdir: str | os.PathLike | None = None) -> Workspace:
        """``--workdir`` if given, else the nnU-Net variables if all set, else ``./umamba_workdir``."""
        if workdir is not None:
            return cls.from_workdir(workdir)
        values = [os.environ.get(v) for v in ENV_VARS]
        if all(values):
            return cls(*(Path(v).expanduser().resolve() for v in values))
        if any(values):
            missing = [v for v, x in zip(ENV_VARS, values) if not x]
            raise UserInputError(
                f"only some nnU-Net path variables are set ({', '.join(missing)} missing)",
                "environment",
                "set all three of nnUNet_raw, nnUNet_preprocessed, nnUNet_results, or pass --workdir DIR",
            )
        return cls.from_workdir(Path.cwd() / DEFAULT_WORKDIR)

    def activate(self) -> Workspace:
        """Create the folders and export them for nnunetv2."""
        for name, path in zip(ENV_VARS, (self.raw, self.preprocessed, self.results)):
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        return self

    # ---- datasets -------------------------------------------------------------------
    def dataset_name(self, dataset: str | int) -> str:
        """``DatasetXXX_Name`` for an id (``4``, ``"004"``) or a full name.

        nnunetv2's ``maybe_convert_to_dataset_name`` looks the id up in this workspace's raw,
        preprocessed and results folders; an unknown or ambiguous id is one line.
        """
        text = str(dataset).strip()
        if _DATASET_RE.match(text):
            return text
        if not text.isdigit():
            raise UserInputError(
                f"dataset '{text}' is neither an id nor a DatasetXXX_Name",
                "-d",
                "pass the numeric id (e.g. -d 4) or the folder name (e.g. -d Dataset004_Liver)",
            )
        dataset_id = int(text)
        with self._exported():
            try:
                return str(maybe_convert_to_dataset_name(dataset_id))
            except RuntimeError:  # none or several folders: which, for the message
                found = sorted(str(f) for f in find_candidate_datasets(dataset_id))
        if not found:
            prefix = f"Dataset{dataset_id:03d}_"
            raise UserInputError(
                f"no dataset with id {dataset_id}",
                f"{self.raw}",
                f"put it at {self.raw}/{prefix}<Name> (with dataset.json, imagesTr, labelsTr) or check --workdir / nnUNet_raw",
            )
        raise UserInputError(
            f"dataset id {dataset_id} matches several folders ({', '.join(found)})",
            f"{self.raw}",
            "rename or remove all but one, or pass the full DatasetXXX_Name",
        )

    @contextlib.contextmanager
    def _exported(self) -> Iterator[None]:
        """This workspace's folders in the nnUNet_* variables nnunetv2 reads, as before afterwards."""
        saved = {name: os.environ.get(name) for name in ENV_VARS}
        os.environ.update(zip(ENV_VARS, map(str, (self.raw, self.preprocessed, self.results))))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def dataset_id(self, name: str) -> int:
        m = _DATASET_RE.match(name)
        if not m:
            raise UserInputError(f"'{name}' is not a DatasetXXX_Name folder name", name, "rename the folder")
        return int(m.group(1))

    def raw_dataset(self, name: str) -> Path:
        return self.raw / name

    def preprocessed_dataset(self, name: str) -> Path:
        return self.preprocessed / name

    def results_dataset(self, name: str) -> Path:
        return self.results / name
