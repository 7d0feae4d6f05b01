"""Where raw, preprocessed and results data live.

Precedence: ``--workdir DIR`` (``DIR/raw``, ``DIR/preprocessed``, ``DIR/results``), then the
``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` environment variables, then
``./umamba_workdir``. :meth:`Workspace.activate` exports the three variables, which nnunetv2
reads lazily, so nnunetv2 code called afterwards uses the same folders and never warns about
unset paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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
    def from_workdir(cls, workdir: str | os.PathLike) -> "Workspace":
        w = Path(workdir).expanduser().resolve()
        return cls(w / "raw", w / "preprocessed", w / "results")

    @classmethod
    def resolve(cls, workdir: str | os.PathLike | None = None) -> "Workspace":
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

    def activate(self) -> "Workspace":
        """Create the folders and export them for nnunetv2."""
        for name, path in zip(ENV_VARS, (self.raw, self.preprocessed, self.results)):
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        return self

    # ---- datasets -------------------------------------------------------------------
    def dataset_name(self, dataset: str | int) -> str:
        """``DatasetXXX_Name`` for an id (``4``, ``"004"``) or a full name.

        Looks in raw, preprocessed and results, like nnunetv2, and refuses ambiguous ids.
        """
        text = str(dataset).strip()
        m = _DATASET_RE.match(text)
        if m:
            return text
        if not text.isdigit():
            raise UserInputError(
                f"dataset '{text}' is neither an id nor a DatasetXXX_Name",
                "-d",
                "pass the numeric id (e.g. -d 4) or the folder name (e.g. -d Dataset004_Liver)",
            )
        prefix = f"Dataset{int(text):03d}_"
        found: set[str] = set()
        for base in (self.raw, self.preprocessed, self.results):
            if base.is_dir():
                found.update(p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix))
        if not found:
            raise UserInputError(
                f"no dataset with id {int(text)}",
                f"{self.raw}",
                f"put it at {self.raw}/{prefix}<Name> (with dataset.json, imagesTr, labelsTr) or check --workdir / nnUNet_raw",
            )
        if len(found) > 1:
            raise UserInputError(
                f"dataset id {int(text)} matches several folders ({', '.join(sorted(found))})",
                f"{self.raw}",
                "rename or remove all but one, or pass the full DatasetXXX_Name",
            )
        return found.pop()

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
