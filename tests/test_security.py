"""Files from elsewhere never run code or write outside their folder (docs/security.md).

Each attack goes through the CLI in-process and must end with exit 2, one ``error:`` line
naming the offending file, no traceback, and no side effect: the code-execution cases point
their payload at a marker file that must not appear, the path cases at a folder that must
stay empty. The trained 2D model of ``trained_2d_workdir`` is copied and tampered with.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import plain_cnn_block
from umamba_seg.architectures import registry
from umamba_seg.architectures.plans_allowlist import check_architecture, check_plans
from umamba_seg.cli import main as cli
from umamba_seg.errors import UserInputError
from umamba_seg.safe_pickle import load_pickle_safe

DATASET = "Dataset903_SynthEndoscopy"
MODEL = "umambaTrainer__umambaPlans_cnn__2d"


def _predict_model(model: Path, raw: Path, out: Path) -> list:
    """``predict`` of a raw dataset's test images with the model folder ``model`` (fold 0, CPU)."""
    return ["predict", "-i", raw / "imagesTs", "-o", out, "-m", model, "-f", "0", "--device", "cpu"]


def _refused(capsys, argv: list, names: str, marker: Path | None = None) -> str:
    """Run the CLI; assert exit 2, one error line naming ``names``, no traceback, no marker."""
    code = cli([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(names) in lines[0], err
    if marker is not None:
        assert not marker.exists(), f"payload ran: {marker} exists"
    return lines[0]


@pytest.fixture
def model_copy(trained_2d_workdir: Path, tmp_path: Path) -> Path:
    """plans.json, dataset.json and fold 0's final checkpoint of the trained 2D model, in tmp."""
    src = trained_2d_workdir / "results" / DATASET / MODEL
    dst = tmp_path / "model"
    (dst / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
        shutil.copyfile(src / f, dst / f)
    return dst


def _evil_module(tmp_path: Path, marker: Path, monkeypatch) -> str:
    """A module on sys.path that creates ``marker`` when imported; returns its name."""
    (tmp_path / "evil_plans_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "evil_plans_module.X"


def _nonlin_os_system(arch, marker, module):
    arch["arch_kwargs"]["nonlin"] = "os.system"
    arch["arch_kwargs"]["nonlin_kwargs"] = {"command": f"touch {marker}"}
    return "arch_kwargs.nonlin"


def _class_logging_basic_config(arch, marker, module):
    arch["network_class_name"] = "logging.basicConfig"
    arch["arch_kwargs"] = {"filename": str(marker)}
    arch["_kw_requires_import"] = []
    return "network_class_name"


def _requires_import_any_module(arch, marker, module):
    arch["arch_kwargs"]["block"] = module
    arch["_kw_requires_import"].append("block")
    return "arch_kwargs.block"


def _op_key_any_module(arch, marker, module):
    arch["arch_kwargs"]["dropout_op"] = module  # our networks locate op keys themselves
    return "arch_kwargs.dropout_op"


def _requires_import_names_missing_key(arch, marker, module):
    arch["_kw_requires_import"].append("not_a_key")
    return "_kw_requires_import"


@pytest.mark.parametrize(
    "tamper",
    [
        _nonlin_os_system,
        _class_logging_basic_config,
        _requires_import_any_module,
        _op_key_any_module,
        _requires_import_names_missing_key,
    ],
)
def test_predict_refuses_plans_that_import_code(tamper, model_copy, raw_2d_dataset, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "MARKER"
    plans = json.loads((model_copy / "plans.json").read_text())
    key = tamper(plans["configurations"]["2d"]["architecture"], marker, _evil_module(tmp_path, marker, monkeypatch))
    (model_copy / "plans.json").write_text(json.dumps(plans))
    out = tmp_path / "out"
    line = _refused(capsys, _predict_model(model_copy, raw_2d_dataset, out), model_copy / "plans.json", marker)
    assert key in line
    assert not out.exists()


@pytest.mark.parametrize(
    "key, value",
    [
        ("image_reader_writer", "save_pickle"),  # nnunetv2 looks it up in its imageio package
        ("label_manager", "join"),
        ("configurations.2d.preprocessor_name", "subprocess"),
        ("configurations.2d.resampling_fn_data", "save_json"),
        ("configurations.2d.normalization_schemes", ["ZScoreNormalization", "load_pickle", "ZScoreNormalization"]),
        ("configurations.2d.data_identifier", "../../outside"),  # a folder name in the preprocessed dataset
    ],
)
def test_predict_refuses_names_nnunet_looks_up(key, value, model_copy, raw_2d_dataset, tmp_path, capsys):
    plans = json.loads((model_copy / "plans.json").read_text())
    *parents, last = key.split(".")
    node = plans
    for p in parents:
        node = node[p]
    node[last] = value
    (model_copy / "plans.json").write_text(json.dumps(plans))
    line = _refused(capsys, _predict_model(model_copy, raw_2d_dataset, tmp_path / "out"), model_copy / "plans.json")
    assert key in line


def test_predict_refuses_a_model_dataset_json_whose_file_ending_names_a_folder(
    model_copy, raw_2d_dataset, tmp_path, capsys
):
    ds = json.loads((model_copy / "dataset.json").read_text())
    ds["file_ending"] = "/../../escaped.png"
    (model_copy / "dataset.json").write_text(json.dumps(ds))
    _refused(capsys, _predict_model(model_copy, raw_2d_dataset, tmp_path / "out"), model_copy / "dataset.json")


def _probability_folder(root: Path, name: str, plans: dict, dataset: dict, properties) -> Path:
    folder = root / name
    folder.mkdir()
    np.savez_compressed(folder / "case_0.npz", probabilities=np.full((2, 1, 4, 4), 0.5, np.float32))
    (folder / "case_0.pkl").write_bytes(pickle.dumps(properties))
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def ensemble_inputs(model_copy, tmp_path):
    plans = json.loads((model_copy / "plans.json").read_text())
    dataset = json.loads((model_copy / "dataset.json").read_text())
    props = {
        "spacing": (999, 1, 1),
        "shape_before_cropping": (1, 4, 4),
        "bbox_used_for_cropping": [[0, 1], [0, 4], [0, 4]],
        "shape_after_cropping_and_before_resampling": (1, 4, 4),
    }

    def make(first_properties, plans_first: dict | None = None):
        a = _probability_folder(tmp_path, "a", plans_first or plans, dataset, first_properties)
        b = _probability_folder(tmp_path, "b", plans, dataset, props)
        return a, b

    return make, props


def test_ensemble_refuses_a_pickle_that_runs_code(ensemble_inputs, tmp_path, capsys):
    make, _ = ensemble_inputs
    marker = tmp_path / "MARKER"
    a, b = make({"spacing": _RunsCommand(marker)})
    out = tmp_path / "ens"
    line = _refused(capsys, ["ensemble", "-i", a, b, "-o", out, "-np", "1"], a / "case_0.pkl", marker)
    assert "--trust-checkpoint" in line
    assert not out.exists()


def test_ensemble_reads_data_pickles_and_trust_admits_other_objects(ensemble_inputs, tmp_path, capsys):
    make, props = ensemble_inputs
    a, b = make(OrderedDict(props))  # harmless, but not plain data: refused unless trusted
    _refused(capsys, ["ensemble", "-i", a, b, "-o", tmp_path / "refused", "-np", "1"], a / "case_0.pkl")
    assert (
        cli([str(x) for x in ["ensemble", "-i", a, b, "-o", tmp_path / "trusted", "-np", "1", "--trust-checkpoint"]])
        == 0
    )
    assert (tmp_path / "trusted" / "case_0.png").is_file()
    (a / "case_0.pkl").write_bytes(pickle.dumps({**props, "spacing": np.array([999.0, 1, 1])}, protocol=5))
    assert cli([str(x) for x in ["ensemble", "-i", a, b, "-o", tmp_path / "plain", "-np", "1"]]) == 0
    assert (tmp_path / "plain" / "case_0.png").is_file()


def test_ensemble_refuses_input_plans_naming_a_helper(ensemble_inputs, tmp_path, capsys, model_copy):
    make, props = ensemble_inputs
    plans = json.loads((model_copy / "plans.json").read_text())
    a, b = make(props, {**plans, "image_reader_writer": "save_pickle"})
    _refused(capsys, ["ensemble", "-i", a, b, "-o", tmp_path / "ens", "-np", "1"], a / "plans.json")
    assert not (tmp_path / "ens").exists()


@pytest.mark.parametrize(
    "functions, kwargs",
    [
        (["nnunetv2.postprocessing.remove_connected_components.save_pickle"], [{"obj": 1, "file": "MARKER"}]),
        (["save_pickle"], [{}]),
        (["os.system"], [{"command": "touch MARKER"}]),
        (
            ["nnunetv2.postprocessing.remove_connected_components.remove_all_but_largest_component_from_segmentation"],
            [{"labels_or_regions": 1, "file": "MARKER"}],
        ),
    ],
)
def test_postprocess_refuses_functions_outside_the_list(functions, kwargs, model_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in ("plans.json", "dataset.json"):
        shutil.copyfile(model_copy / f, pred / f)
    pp = tmp_path / "postprocessing.json"
    pp.write_text(json.dumps({"functions": functions, "kwargs": kwargs}))
    _refused(
        capsys, ["postprocess", "-i", pred, "-o", tmp_path / "pp", "--pp-file", pp, "-np", "1"], pp, tmp_path / "MARKER"
    )
    assert not (tmp_path / "pp").exists()


def test_find_best_refuses_a_validation_pickle_that_runs_code(trained_2d_workdir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir / "results", workdir / "results")
    marker = tmp_path / "MARKER"
    pkl = next((workdir / "results" / DATASET / MODEL / "fold_0" / "validation").glob("*.pkl"))
    pkl.write_bytes(pickle.dumps(_RunsCommand(marker)))
    _refused(capsys, ["find-best", "-d", "903", "--workdir", workdir, "-np", "1"], pkl, marker)


def _raw_copy(raw_2d_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    workdir = tmp_path / "wd"
    raw = workdir / "raw" / raw_2d_dataset.name
    shutil.copytree(raw_2d_dataset, raw)
    (workdir / "outside").mkdir()
    return workdir, raw


def _entries(raw: Path, first_key: str, first_image: str | None = None) -> dict:
    entries = {}
    for i, img in enumerate(sorted((raw / "imagesTr").glob("*_0000.png"))):
        case = img.name[: -len("_0000.png")]
        entries[first_key if i == 0 else case] = {
            "images": [first_image if i == 0 and first_image else f"imagesTr/{img.name}"],
            "label": f"labelsTr/{case}.png",
        }
    return entries


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize(
    "edit, what",
    [
        (lambda raw: {"dataset": _entries(raw, "../../../outside/e0")}, "case identifier"),
        (lambda raw: {"dataset": _entries(raw, "endo_000", "../../outside/x_0000.png")}, "outside the raw dataset"),
        (
            lambda raw: {"dataset": _entries(raw, "endo_000", str(raw.parent.parent / "outside" / "x_0000.png"))},
            "outside the raw dataset",
        ),
        (lambda raw: {"file_ending": "/../../../outside/x.png"}, "file_ending"),
        (lambda raw: {"overwrite_image_reader_writer": "save_pickle"}, "overwrite_image_reader_writer"),
    ],
)
def test_plan_and_preprocess_refuses_paths_outside_the_dataset(edit, what, verify, raw_2d_dataset, tmp_path, capsys):
    workdir, raw = _raw_copy(raw_2d_dataset, tmp_path)
    ds = json.loads((raw / "dataset.json").read_text())
    ds.update(edit(raw))
    (raw / "dataset.json").write_text(json.dumps(ds))
    line = _refused(
        capsys,
        ["plan-and-preprocess", "-d", "903", "-a", "cnn", "-c", "2d", "--workdir", workdir, "-np", "1"]
        + (["--verify"] if verify else []),
        raw / "dataset.json",
    )
    assert what in line
    assert not any((workdir / "outside").iterdir())
    assert not [p for p in workdir.glob("preprocessed/**/*") if p.is_file()]


def _cnn_block(ndim: int) -> dict:
    return plain_cnn_block(ndim, [8, 16, 32], [[1] * ndim, [2] * ndim, [2] * ndim])


@pytest.mark.parametrize("ndim", [2, 3])
def test_every_registered_architecture_passes_the_allow_list(ndim):
    cnn = _cnn_block(ndim)
    check_architecture(cnn, "cnn")  # nnunetv2's own spelling, dropout_op null in _kw_requires_import
    patch = [64, 64] if ndim == 2 else [32, 64, 64]
    for name in registry.available():
        check_architecture(registry.get(name).architecture_block(cnn, patch), name)
    res_enc = json.loads(
        json.dumps(cnn)
        .replace("PlainConvUNet", "ResidualEncoderUNet")
        .replace("torch.nn.modules.conv.", "torch.nn.")
        .replace('n_conv_per_stage"', 'n_blocks_per_stage"')
    )
    check_architecture(res_enc, "resenc")


def test_trainer_and_memory_model_refuse_plans_that_import_code(model_copy):
    from umamba_seg.planning.memory_model import build_network
    from umamba_seg.training.trainer import umambaTrainer

    plans = json.loads((model_copy / "plans.json").read_text())
    check_plans(plans, "plans.json")
    arch = plans["configurations"]["2d"]["architecture"]
    arch["arch_kwargs"]["nonlin"] = "builtins.exec"
    dataset = json.loads((model_copy / "dataset.json").read_text())
    with pytest.raises(UserInputError, match="arch_kwargs.nonlin"):
        umambaTrainer(plans, "2d", 0, dataset, device=torch.device("cpu"))
    with pytest.raises(UserInputError, match="arch_kwargs.nonlin"):
        build_network(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 3, 2)


def test_build_from_cnn_plan_refuses_a_block_that_imports_code(tmp_path):
    from umamba_seg.architectures.from_cnn_plan import build_from_cnn_plan

    block = _cnn_block(2)
    block["arch_kwargs"]["nonlin"] = "os.system"
    block["arch_kwargs"]["nonlin_kwargs"] = {"command": f"touch {tmp_path / 'MARKER'}"}
    with pytest.raises(UserInputError, match="arch_kwargs.nonlin"):
        build_from_cnn_plan("cnn", block, [64, 64], 1, 2)
    assert not (tmp_path / "MARKER").exists()


def test_data_only_unpickler_names_the_refused_global(tmp_path):
    f = tmp_path / "x.pkl"
    f.write_bytes(pickle.dumps({"a": np.arange(3), "b": np.float32(1), "c": {1, 2}, "d": (1, [2.0])}, protocol=2))
    assert load_pickle_safe(f)["c"] == {1, 2}
    f.write_bytes(pickle.dumps(_RunsCommand(tmp_path / "MARKER")))
    with pytest.raises(UserInputError, match="system"):
        load_pickle_safe(f)
    assert not (tmp_path / "MARKER").exists()
