"""Issue 14: 2 folds x 2 architectures -> predict -> ensemble -> evaluate -> find-best -> postprocess, via the CLI."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np

from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, run_cli, train_args
from umamba_seg.evaluation.find_best import write_postprocessing_json
from umamba_seg.evaluation.postprocess import load_postprocessing

SECOND_ARCH = "umamba_bot"


def test_model_folder_names_parse():
    from umamba_seg.training.model_folders import parse_model_folder

    m = parse_model_folder("umambaTrainer__umambaPlans_umamba_bot_nossm__3d_fullres")
    assert (m.trainer, m.arch, m.configuration) == ("umambaTrainer", "umamba_bot_nossm", "3d_fullres")
    assert parse_model_folder(".umambaTrainer__umambaPlans_cnn__2d.importing-x1") is None  # a scratch folder


def test_postprocessing_json_keeps_numpy_labels(tmp_path):
    """nnunetv2 stores the labels it postprocesses as numpy integers (CI once failed on np.int64)."""
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation as keep_largest,
    )

    kwargs = [{"labels_or_regions": np.int64(1)}, {"labels_or_regions": [np.int64(2), (np.int64(1), np.int64(2))]}]
    pkl = tmp_path / "postprocessing.pkl"
    pkl.write_bytes(pickle.dumps(([keep_largest, keep_largest], kwargs)))
    fns, loaded = load_postprocessing(write_postprocessing_json(pkl))
    assert fns == [keep_largest, keep_largest]
    assert loaded == [{"labels_or_regions": 1}, {"labels_or_regions": [2, (1, 2)]}]
    seg = np.zeros((1, 8, 8), dtype=np.uint8)
    seg[0, :3, :3] = 1
    seg[0, 6:, 6:] = 1  # the smaller component of label 1
    seg[0, 4, :] = 2
    for f, kw, kw_np in zip(fns, loaded, kwargs):
        np.testing.assert_array_equal(f(seg, **kw), keep_largest(seg, **kw_np))
    assert (fns[0](seg, **loaded[0]) == 1).sum() == 9


def test_find_best_chain(trained_2d_workdir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir, workdir)
    raw = next((workdir / "raw").iterdir())
    ds = raw.name[7:10]
    for f in ("0", "1"):
        run_cli(*train_args(workdir, ds, "2d", f, "-a", SECOND_ARCH, "--npz", *TINY_SCHEDULE))
    preds = []
    for arch in ("cnn", SECOND_ARCH):
        out = tmp_path / f"pred_{arch}"
        opts = ("-a", arch, "-f", "0", "1", "--save-probabilities", "--no-tta")
        run_cli(*predict_args(workdir, raw / "imagesTs", out, ds, "2d", *opts))
        preds.append(out)
    run_cli("ensemble", "-i", *preds, "-o", tmp_path / "ens")
    run_cli("evaluate", "-r", raw / "labelsTs", "-p", tmp_path / "ens", "-d", ds, "--workdir", workdir)
    capsys.readouterr()
    run_cli("find-best", "-d", ds, "--workdir", workdir)
    printed = capsys.readouterr().out
    results = workdir / "results" / raw.name
    text = (results / "inference_instructions.txt").read_text()
    assert "umambaTrainer__umambaPlans_cnn__2d" in text and f"umambaPlans_{SECOND_ARCH}__2d" in text
    assert "ensemble___" in text, "the pairwise ensemble must be a candidate"
    assert "umamba-seg predict -i INPUT_FOLDER" in text and "-f 0 1" in text
    assert "umamba-seg postprocess" in text and "Best for" in printed
    info = json.loads((results / "inference_information.json").read_text())
    assert len(info["all_results"]) == 3  # two single models and their ensemble
    best = max(info["all_results"].values())
    assert abs(info["best_model_or_ensemble"]["result_on_crossval_pre_pp"] - best) < 1e-12
    pp_json = text.split("--pp-file ")[1].split()[0]
    fns, kwargs = load_postprocessing(pp_json)
    assert len(fns) == len(kwargs)
    run_cli("postprocess", "-i", tmp_path / "ens", "-o", tmp_path / "ens_pp", "--pp-file", pp_json)
    assert sorted(p.name for p in (tmp_path / "ens_pp").glob("*.png")) == sorted(
        p.name for p in (tmp_path / "ens").glob("*.png")
    )
