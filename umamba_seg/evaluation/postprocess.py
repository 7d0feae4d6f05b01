"""``postprocess``: apply the connected-component postprocessing that ``find-best`` chose.

Reads ``postprocessing.json`` (not nnunetv2's pickle, which can run code) and resolves each
function only among nnunetv2's postprocessing functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from umamba_seg.errors import UserInputError

ALLOWED_MODULE = "nnunetv2.postprocessing.remove_connected_components"


def load_postprocessing(pp_file: Path) -> tuple[list, list[dict]]:
    import importlib

    if not Path(pp_file).is_file():
        raise UserInputError("postprocessing file not found", pp_file, "run `umamba-seg find-best` first")
    try:
        spec = json.loads(Path(pp_file).read_text())
        names, kwargs = spec["functions"], spec["kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserInputError("postprocessing file is not valid postprocessing JSON", pp_file,
                             "use the postprocessing.json written by find-best") from e
    fns = []
    mod = importlib.import_module(ALLOWED_MODULE)
    for n in names:
        module, _, fn = n.rpartition(".")
        if module != ALLOWED_MODULE or not hasattr(mod, fn):
            raise UserInputError(f"postprocessing function '{n}' is not one of nnU-Net's", pp_file,
                                 "only nnunetv2's connected-component functions are allowed")
        fns.append(getattr(mod, fn))
    for kw in kwargs:  # JSON turned tuples of labels into lists; nnunetv2 accepts both
        for k, v in kw.items():
            if isinstance(v, list):
                kw[k] = [tuple(x) if isinstance(x, list) else x for x in v]
    return fns, kwargs


def postprocess_folder(input_dir: Path, output_dir: Path, pp_file: Path, num_processes: int = 2) -> None:
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    fns, kwargs = load_postprocessing(pp_file)
    for f in ("plans.json", "dataset.json"):
        if not (Path(input_dir) / f).is_file():
            raise UserInputError(f"prediction folder has no {f}", Path(input_dir) / f,
                                 "postprocess a folder written by `umamba-seg predict` or `ensemble`")
    apply_postprocessing_to_folder(str(input_dir), str(output_dir), fns, kwargs, num_processes=num_processes)
