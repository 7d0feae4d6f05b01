"""``postprocess``: apply the connected-component postprocessing that ``find-best`` chose.

Reads ``postprocessing.json`` (not nnunetv2's pickle, which can run code). Each function is
looked up by its exact dotted name in a fixed list (the ones nnunetv2's
``determine_postprocessing`` chooses from), never as an attribute of a module: that module
also holds helpers such as ``save_pickle``. Keyword arguments are checked to be label values.
The input folder's plans.json and dataset.json pass the plans allow-list first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from umamba_seg.architectures.plans_allowlist import check_dataset_json_names, check_plans
from umamba_seg.errors import UserInputError
from umamba_seg.safe_paths import check_file_ending

ALLOWED_MODULE = "nnunetv2.postprocessing.remove_connected_components"
ALLOWED_FUNCTIONS: tuple[str, ...] = ("remove_all_but_largest_component_from_segmentation",)
ALLOWED_KWARGS: tuple[str, ...] = ("labels_or_regions", "background_label")
_FIX = "use the postprocessing.json written by find-best"


def _is_label_value(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, (list, tuple)) and all(_is_label_value(x) for x in v)


def _regions_as_tuples(v: Any) -> Any:
    """JSON turned regions (tuples of labels) in a list of labels/regions into lists; nnunetv2
    tells a region from a list of labels by its type."""
    return [tuple(x) if isinstance(x, list) else x for x in v] if isinstance(v, list) else v


def load_postprocessing(pp_file: Path) -> tuple[list, list[dict]]:
    """The functions and keyword arguments of ``pp_file``; exit 2 on any name outside the list."""
    from nnunetv2.postprocessing import remove_connected_components as module

    if not Path(pp_file).is_file():
        raise UserInputError("postprocessing file not found", pp_file, "run `umamba-seg find-best` first")
    try:
        spec = json.loads(Path(pp_file).read_text())
        names, kwargs = spec["functions"], spec["kwargs"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserInputError(
            f"postprocessing file is not valid postprocessing JSON ({type(e).__name__})", pp_file, _FIX
        ) from None
    if not isinstance(names, list) or not isinstance(kwargs, list) or len(names) != len(kwargs):
        raise UserInputError("postprocessing file needs lists 'functions' and 'kwargs' of equal length", pp_file, _FIX)
    allowed = {f"{ALLOWED_MODULE}.{fn}": fn for fn in ALLOWED_FUNCTIONS}
    fns = []
    for n in names:
        if not isinstance(n, str) or n not in allowed:
            raise UserInputError(
                f"postprocessing function {n!r} is not an allowed function (allowed: {', '.join(allowed)})",
                pp_file,
                _FIX,
            )
        fns.append(getattr(module, allowed[n]))
    checked = []
    for kw in kwargs:
        if not isinstance(kw, dict) or any(k not in ALLOWED_KWARGS or not _is_label_value(v) for k, v in kw.items()):
            raise UserInputError(
                f"postprocessing arguments {kw!r} are not label values of {', '.join(ALLOWED_KWARGS)}", pp_file, _FIX
            )
        checked.append({k: _regions_as_tuples(v) for k, v in kw.items()})
    return fns, checked


def postprocess_folder(input_dir: Path, output_dir: Path, pp_file: Path, num_processes: int = 2) -> None:
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    fns, kwargs = load_postprocessing(pp_file)
    contents = {}
    for f in ("plans.json", "dataset.json"):
        path = Path(input_dir) / f
        if not path.is_file():
            raise UserInputError(
                f"prediction folder has no {f}",
                path,
                "postprocess a folder written by `umamba-seg predict` or `ensemble`",
            )
        try:
            contents[f] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserInputError(f"{f} is not valid JSON ({type(e).__name__})", path, "re-run the prediction") from None
    check_plans(contents["plans.json"], Path(input_dir) / "plans.json")
    check_dataset_json_names(contents["dataset.json"], Path(input_dir) / "dataset.json")
    check_file_ending(contents["dataset.json"].get("file_ending"), Path(input_dir) / "dataset.json")
    apply_postprocessing_to_folder(
        str(input_dir),
        str(output_dir),
        fns,
        kwargs,
        plans_file_or_dict=contents["plans.json"],
        dataset_json_file_or_dict=contents["dataset.json"],
        num_processes=num_processes,
    )
