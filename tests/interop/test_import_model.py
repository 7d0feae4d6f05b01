"""``build_from_cnn_plan`` and ``import-model``: networks from a CNN plan, models from the authors' forks.

The forks' model folders are generated here from our own small networks: nnunetv2 2.1 plans
keys, a full trainer checkpoint (``network_weights``, optimizer state, numpy floats in
``logging`` and ``_best_ema``, a ``torch.device``), the authors' weight names, and for
xLSTM-UNet the ViL wrapper's unused LayerNorm.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.helpers import RESOURCES
from umamba_seg.architectures import build_from_cnn_plan, registry
from umamba_seg.benchmark.same_plan import same_plan_plans
from umamba_seg.cli import main as cli
from umamba_seg.errors import UserInputError
from umamba_seg.interop.fork_checkpoint import authors_to_ours, load_fork_checkpoint
from umamba_seg.interop.fork_plans import cnn_architecture, our_plans
from umamba_seg.training.checkpoint_io import require_training_state

FORK_ARCHS = ("umamba_bot", "umamba_enc", "xlstm_bot", "xlstm_enc")
FORK_TRAINER = {
    "umamba_bot": ("u-mamba", "nnUNetTrainerUMambaBot"),
    "umamba_enc": ("u-mamba", "nnUNetTrainerUMambaEnc"),
    "xlstm_bot": ("xlstm-unet", "nnUNetTrainerUxLSTMBot"),
    "xlstm_enc": ("xlstm-unet", "nnUNetTrainerUxLSTMEnc"),
}
FEATURES = (8, 16, 32, 32)  # 4 stages: xLSTM-UNet Enc in 3D has ViL from stage 3 on


def fork_configuration(dim: int, patch: list[int], spacing: list[float], n_channels: int) -> dict:
    """A small configuration as nnunetv2 2.1 (the forks' version) writes it."""
    n = len(FEATURES)
    resample = "resample_data_or_seg_to_shape"
    return {
        "data_identifier": f"nnUNetPlans_{dim}d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "median_image_size_in_voxels": [64] * dim,
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"] * n_channels,
        "use_mask_for_norm": [False] * n_channels,
        "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": FEATURES[0],
        "n_conv_per_stage_encoder": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "num_pool_per_axis": [n - 1] * dim,
        "pool_op_kernel_sizes": [[1] * dim] + [[2] * dim] * (n - 1),
        "conv_kernel_sizes": [[3] * dim] * n,
        "unet_max_num_features": FEATURES[-1],
        "resampling_fn_data": resample,
        "resampling_fn_seg": resample,
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": resample,
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "batch_dice": True,
    }


def fork_plans_2d(dataset_name: str, n_channels: int, patch: tuple[int, int] = (64, 64)) -> dict:
    """The forks' plans.json for a 2D PNG dataset (64 x 64 images: one window per case),
    4 stages of 8/16/32/32 features."""
    props = {
        str(c): {
            "max": 255.0,
            "mean": 120.0,
            "median": 118.0,
            "min": 0.0,
            "percentile_00_5": 2.0,
            "percentile_99_5": 250.0,
            "std": 40.0,
        }
        for c in range(n_channels)
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, 64, 64],
        "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": fork_configuration(2, list(patch), [1.0, 1.0], n_channels)},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": props,
    }


def small_network(arch: str, dim: int, in_channels: int = 1, num_classes: int = 3) -> torch.nn.Module:
    conf = fork_configuration(dim, [32] * dim if dim == 2 else [16] * dim, [1.0] * dim, in_channels)
    return build_from_cnn_plan(arch, cnn_architecture(conf), conf["patch_size"], in_channels, num_classes)


def authors_weights(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict as the authors' networks hold it: the same names, plus the LayerNorm
    that xLSTM-UNet's ViL wrapper creates and never uses, at every wrapper (and its
    ``decoder.encoder`` copy), sized like the ViL block's own norm."""
    out = dict(ours)
    for key, value in ours.items():
        m = re.match(r"^(.*(?:^|\.)(?:xlstm|xlstm_layers\.\d+))\.vil\.norm\.weight$", key)
        if m:
            out[f"{m.group(1)}.norm.weight"] = torch.ones(value.shape[0], device=value.device)
            out[f"{m.group(1)}.norm.bias"] = torch.zeros(value.shape[0], device=value.device)
    return out


# ---- build_from_cnn_plan -------------------------------------------------------------------------------


def _trainer_network(arch: str, conf: dict, in_channels: int, num_classes: int) -> torch.nn.Module:
    """What `train -a arch` builds on the CNN plan: the benchmark's same-plan plans through nnunetv2."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cnn = {
        "configurations": {"c": {"patch_size": conf["patch_size"], "architecture": cnn_architecture(conf)}},
        "plans_name": "umambaPlans_cnn",
        "dataset_name": "Dataset001_X",
    }
    pm = PlansManager(same_plan_plans(cnn, arch).plans)
    return nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("c"), in_channels, num_classes, True)


def _shapes(net: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("arch", registry.available())
def test_build_from_cnn_plan_is_the_trained_network(arch, monkeypatch):
    spec = registry.get(arch)
    device = "meta"  # structure only: nothing is allocated or initialised
    if spec.family == "vmunet":  # it reads its drop-path rates back from a tensor: make that one on the CPU
        linspace = torch.linspace
        monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    for dim in (2, 3):
        patch = [32] * dim
        if spec.adjust_patch is not None:
            patch = [int(p) for p in spec.adjust_patch(patch)]
        conf = fork_configuration(dim, patch, [1.0] * dim, 2)
        with torch.device(device):
            net = build_from_cnn_plan(arch, cnn_architecture(conf), patch, 2, 4)
            reference = _trainer_network(arch, conf, 2, 4)
        assert type(net) is type(reference)
        assert type(net).__name__ in spec.network_class_name
        assert _shapes(net) == _shapes(reference), (arch, dim)
        assert net.decoder.deep_supervision is True
        with torch.device(device):
            flat = build_from_cnn_plan(arch, cnn_architecture(conf), patch, 2, 4, deep_supervision=False)
        assert flat.decoder.deep_supervision is False


def test_build_from_cnn_plan_forward_and_errors():
    net = small_network("umamba_bot", 2, 1, 3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32))
    assert [tuple(o.shape) for o in out] == [(1, 3, 32, 32), (1, 3, 16, 16), (1, 3, 8, 8)]
    conf = fork_configuration(2, [32, 32], [1.0, 1.0], 1)
    with pytest.raises(UserInputError, match="unknown architecture"):
        build_from_cnn_plan("no_such_net", cnn_architecture(conf), [32, 32], 1, 3)
    with pytest.raises(UserInputError, match="arch_kwargs"):
        build_from_cnn_plan("cnn", {"network_class_name": "x"}, [32, 32], 1, 3)
    vmunet = registry.get("vmunet")
    odd = [36, 36]
    if vmunet.adjust_patch is not None and list(vmunet.adjust_patch(odd)) != odd:
        with pytest.raises(UserInputError, match="does not accept the patch"):
            build_from_cnn_plan("vmunet", cnn_architecture(conf), odd, 1, 3)


# ---- weight-name mapping -------------------------------------------------------------------------------

AUTHORS_KEYS = json.loads((RESOURCES / "authors_state_dict_keys.json").read_text())
FIDELITY_PLANS = json.loads((RESOURCES / "fidelity_plans.json").read_text())


@pytest.mark.parametrize("plan", ("2d", "3d"))
@pytest.mark.parametrize("arch", FORK_ARCHS)
def test_authors_weight_names_round_trip(arch, plan):
    """The authors' state dict, as recorded from their code on nnU-Net's CNN plans, maps onto
    ours key for key (their unused wrapper LayerNorm dropped), and back."""
    p = FIDELITY_PLANS[plan]
    with torch.device("meta"):
        net = build_from_cnn_plan(arch, p["architecture"], p["patch_size"], p["input_channels"], p["num_classes"])
    theirs = {k: torch.empty(shape, device="meta") for k, shape in AUTHORS_KEYS[arch][plan]["state_dict"]}
    ours, dropped = authors_to_ours(arch, theirs, _shapes(net), "checkpoint_final.pth")
    assert list(ours) == list(net.state_dict())
    assert all(ours[k] is theirs[k] for k in ours)
    assert len(dropped) == {"umamba_bot": 0, "umamba_enc": 0, "xlstm_bot": 2, "xlstm_enc": 12}[arch]
    assert sorted([*ours, *dropped]) == sorted(theirs)
    assert all(re.search(r"(^|\.)(xlstm|xlstm_layers\.\d+)\.norm\.(weight|bias)$", k) for k in dropped)


@pytest.mark.parametrize("dim", (2, 3))
@pytest.mark.parametrize("arch", FORK_ARCHS)
def test_weight_names_round_trip_small(arch, dim):
    """Real tensors of small networks: authors' layout -> ours gives back the very tensors, and loads."""
    net = small_network(arch, dim)
    ours = net.state_dict()
    theirs = authors_weights(ours)
    back, dropped = authors_to_ours(arch, theirs, _shapes(net), "checkpoint_final.pth")
    assert list(back) == list(ours)
    assert all(back[k] is ours[k] for k in ours)
    assert sorted(dropped) == sorted(set(theirs) - set(ours))
    assert (len(dropped) > 0) == arch.startswith("xlstm")
    net.load_state_dict(back, strict=True)


# ---- import-model ---------------------------------------------------------------------------------------


def _save_fork_checkpoint(path: Path, weights: dict, trainer: str, plans: dict, ds: dict, numpy1_names: bool) -> None:
    """A checkpoint as the forks' nnunetv2 2.1 trainer writes it (full pickle with numpy values)."""
    first = next(iter(weights.values()))
    ckpt = {
        "network_weights": OrderedDict(weights),
        "optimizer_state": {
            "state": {0: {"momentum_buffer": torch.zeros_like(first)}},
            "param_groups": [{"lr": 1e-5, "momentum": 0.99, "nesterov": True, "params": [0]}],
        },
        "grad_scaler_state": {"scale": 65536.0, "growth_factor": 2.0},
        "logging": {
            "mean_fg_dice": [np.float64(0.61), np.float64(0.7)],
            "train_losses": [np.float32(-0.4)],
            "lrs": [0.01, 0.009],
        },
        "_best_ema": np.float64(0.7),
        "current_epoch": 1000,
        "init_args": {
            "plans": plans,
            "configuration": next(iter(plans["configurations"])),
            "fold": 0,
            "dataset_json": ds,
            "unpack_dataset": True,
            "device": torch.device("cuda"),
        },
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": (0, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    if numpy1_names:  # as written under numpy 1: numpy.core instead of numpy._core
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename.endswith("data.pkl"):
                    assert b"numpy._core.multiarray" in data
                    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                zout.writestr(info, data)
        tmp.replace(path)


def make_fork_folder(root: Path, arch: str, raw_dataset: Path, folds: tuple[str, ...] = ("0",), seed: int = 0):
    """``<root>/<Trainer>__nnUNetPlans__2d`` for a small ``arch`` network; returns it and our
    state dict per fold (the weights the import must reproduce)."""
    ds = json.loads((raw_dataset / "dataset.json").read_text())
    n_channels, n_classes = len(ds["channel_names"]), len(ds["labels"])
    plans = fork_plans_2d(raw_dataset.name, n_channels)
    source, trainer = FORK_TRAINER[arch]
    folder = root / f"{trainer}__nnUNetPlans__2d"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(ds, indent=1))
    conf = plans["configurations"]["2d"]
    ours_per_fold = {}
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        net = build_from_cnn_plan(arch, cnn_architecture(conf), conf["patch_size"], n_channels, n_classes)
        with torch.no_grad():  # non-trivial norms and biases, so a misplaced tensor changes the output
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        ours = {k: v.clone() for k, v in net.state_dict().items()}
        _save_fork_checkpoint(
            folder / f"fold_{fold}" / "checkpoint_final.pth",
            authors_weights(ours),
            trainer,
            plans,
            ds,
            numpy1_names=(i % 2 == 1),
        )
        ours_per_fold[fold] = ours
    return folder, source, ours_per_fold


def _run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _predicted_labels(folder: Path, cases: list[str]) -> list[np.ndarray]:
    return [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{c}.png"))) for c in cases]


def test_import_then_predict_ensemble_evaluate(tmp_path, raw_2d_dataset, workdir_factory, capsys):
    workdir = workdir_factory(raw_2d_dataset)
    ds_id = raw_2d_dataset.name[7:10]
    umamba_folder, src_u, umamba_weights = make_fork_folder(
        tmp_path / "umamba_results", "umamba_bot", raw_2d_dataset, folds=("0", "1")
    )
    xlstm_folder, src_x, xlstm_weights = make_fork_folder(
        tmp_path / "xlstm_results", "xlstm_bot", raw_2d_dataset, seed=10
    )
    best = xlstm_folder / "fold_0" / "checkpoint_best.pth"  # an earlier epoch's weights
    ckpt = torch.load(xlstm_folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    ckpt["network_weights"] = {k: v + 1 for k, v in ckpt["network_weights"].items()}
    ckpt["current_epoch"] = 700
    torch.save(ckpt, best)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(umamba_folder / "fold_1" / "checkpoint_final.pth")

    code, out, err = _run(
        capsys, "import-model", "--from", src_u, "-i", umamba_folder, "-d", ds_id, "--workdir", workdir
    )
    assert code == 0, err
    assert "umamba_bot" in out and "Dropped" not in out
    code, out, err = _run(
        capsys, "import-model", "--from", src_x, "-i", xlstm_folder, "-d", ds_id, "--workdir", workdir
    )
    assert code == 0, err
    assert "Dropped 2 unused weight(s)" in out and "xlstm.norm.weight" in out

    results = workdir / "results" / raw_2d_dataset.name
    best_ours = torch.load(
        results / "umambaTrainer__umambaPlans_xlstm_bot__2d" / "fold_0" / best.name, weights_only=True
    )
    assert best_ours["current_epoch"] == 700
    assert all(torch.equal(best_ours["network_weights"][k], v + 1) for k, v in xlstm_weights["0"].items())
    assert sorted(p.name for p in (results / "umambaTrainer__umambaPlans_umamba_bot__2d" / "fold_0").iterdir()) == [
        "checkpoint_final.pth"
    ]
    for arch, weights in (("umamba_bot", umamba_weights), ("xlstm_bot", xlstm_weights)):
        model = results / f"umambaTrainer__umambaPlans_{arch}__2d"
        assert sorted(p.name for p in model.iterdir()) == sorted(
            ["plans.json", "dataset.json", "import_info.json"] + [f"fold_{f}" for f in weights]
        )
        plans = json.loads((model / "plans.json").read_text())
        assert plans["plans_name"] == f"umambaPlans_{arch}" and plans["dataset_name"] == raw_2d_dataset.name
        assert plans["configurations"]["2d"]["architecture"] == registry.get(arch).architecture_block(
            cnn_architecture(fork_configuration(2, [64, 64], [1.0, 1.0], 3)), [64, 64]
        )
        for fold, ours in weights.items():
            ckpt = torch.load(model / f"fold_{fold}" / "checkpoint_final.pth", weights_only=True)  # no numpy left
            assert list(ckpt["network_weights"]) == list(ours)
            with pytest.raises(UserInputError, match="--pretrained-weights instead of --continue"):
                require_training_state(ckpt, model / f"fold_{fold}" / "checkpoint_final.pth")  # train --continue
            assert all(torch.equal(ckpt["network_weights"][k], v) for k, v in ours.items())
            assert ckpt["trainer_name"] == "umambaTrainer" and ckpt["inference_allowed_mirroring_axes"] == (0, 1)
    assert not list(results.glob(".*"))  # no scratch folders left

    cases = sorted(p.name[: -len("_0000.png")] for p in (raw_2d_dataset / "imagesTs").glob("*_0000.png"))
    preds = {}
    for arch in ("umamba_bot", "xlstm_bot"):
        out_dir = tmp_path / f"pred_{arch}"
        code, _, err = _run(
            capsys,
            "predict",
            "-i",
            raw_2d_dataset / "imagesTs",
            "-o",
            out_dir,
            "-d",
            ds_id,
            "-c",
            "2d",
            "-a",
            arch,
            "--device",
            "cpu",
            "--no-tta",
            "--save-probabilities",
            "--workdir",
            workdir,
        )
        assert code == 0, err
        preds[arch] = _predicted_labels(out_dir, cases)
        for seg in preds[arch]:
            assert seg.shape == (64, 64) and set(np.unique(seg)) <= {0, 1}
    code, _, err = _run(
        capsys,
        "ensemble",
        "-i",
        tmp_path / "pred_umamba_bot",
        tmp_path / "pred_xlstm_bot",
        "-o",
        tmp_path / "ens",
        "-np",
        "1",
    )
    assert code == 0, err
    assert all(seg.shape == (64, 64) for seg in _predicted_labels(tmp_path / "ens", cases))
    code, _, err = _run(
        capsys,
        "evaluate",
        "-r",
        raw_2d_dataset / "labelsTs",
        "-p",
        tmp_path / "ens",
        "-d",
        ds_id,
        "-np",
        "1",
        "--workdir",
        workdir,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert set(summary["metric_per_case"][0]["metrics"]) >= {"1"}

    # the imported weights are what predict ran: our network with the source weights gives the same labels
    from umamba_seg.inference.model import load_predictor

    predictor = load_predictor(results / "umambaTrainer__umambaPlans_xlstm_bot__2d", ["0"], tta=False)
    assert all(torch.equal(predictor.list_of_parameters[0][k], v) for k, v in xlstm_weights["0"].items())

    # an existing destination needs --overwrite
    code, _, err = _run(capsys, "import-model", "--from", src_x, "-i", xlstm_folder, "-d", ds_id, "--workdir", workdir)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, _, err = _run(
        capsys, "import-model", "--from", src_x, "-i", xlstm_folder, "-d", ds_id, "--workdir", workdir, "--overwrite"
    )
    assert code == 0, err
    assert not list(results.glob(".*"))


@pytest.fixture(scope="module")
def good_fork_folder(tmp_path_factory, raw_2d_dataset) -> Path:
    folder, _, _ = make_fork_folder(tmp_path_factory.mktemp("fork"), "xlstm_bot", raw_2d_dataset)
    return folder


def _broken_copy(good: Path, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / "broken" / (name or good.name)
    shutil.copytree(good, target)
    return target


def _edit_weights(folder: Path, edit) -> Path:
    path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(path, weights_only=False)
    edit(ckpt["network_weights"])
    torch.save(ckpt, path)
    return path


def _assert_refused(capsys, folder: Path, workdir: Path, *needles: str, source: str = "xlstm-unet") -> None:
    code, _, err = _run(capsys, "import-model", "--from", source, "-i", folder, "-d", "903", "--workdir", workdir)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not any((workdir / "results").iterdir()), "something was written"


def test_import_refuses_broken_folders(tmp_path, good_fork_folder, capsys):
    workdir = tmp_path / "wd"
    first_key = next(
        iter(load_fork_checkpoint(good_fork_folder / "fold_0" / "checkpoint_final.pth")["network_weights"])
    )

    bad = _broken_copy(good_fork_folder, tmp_path, "nnUNetTrainerSwinUNETR__nnUNetPlans__2d")
    _assert_refused(capsys, bad, workdir, "unknown trainer 'nnUNetTrainerSwinUNETR'", str(bad))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)  # right trainer, wrong --from
    _assert_refused(capsys, bad, workdir, "nnUNetTrainerUxLSTMBot", "--from xlstm-unet", source="u-mamba")
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)
    path = _edit_weights(bad, lambda w: w.pop(first_key))
    _assert_refused(capsys, bad, workdir, f"weight '{first_key}' is missing", str(path))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)
    path = _edit_weights(bad, lambda w: w.__setitem__("decoder.extra_head.weight", torch.zeros(3)))
    _assert_refused(capsys, bad, workdir, "weight 'decoder.extra_head.weight'", str(path))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)
    path = _edit_weights(bad, lambda w: w.__setitem__(first_key, torch.zeros(*w[first_key].shape, 2)))
    _assert_refused(capsys, bad, workdir, f"weight '{first_key}' has shape", str(path))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)  # encoder.* and decoder.encoder.* are one tensor
    path = _edit_weights(bad, lambda w: w[f"decoder.{first_key}"].add_(1.0))
    _assert_refused(capsys, bad, workdir, f"'{first_key}' and 'decoder.{first_key}'", str(path))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)  # a checkpoint that would run code when fully unpickled
    path = bad / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(path, weights_only=False)
    ckpt["logging"]["hook"] = Path("/etc/passwd")
    torch.save(ckpt, path)
    _assert_refused(capsys, bad, workdir, "pathlib", str(path))
    shutil.rmtree(bad.parent)

    bad = _broken_copy(good_fork_folder, tmp_path)
    plans = json.loads((bad / "plans.json").read_text())
    del plans["configurations"]["2d"]["conv_kernel_sizes"]
    (bad / "plans.json").write_text(json.dumps(plans))
    _assert_refused(capsys, bad, workdir, "'conv_kernel_sizes'", str(bad / "plans.json"))
    shutil.rmtree(bad.parent)

    # a second fold that fails after the first was converted: still nothing written
    bad = _broken_copy(good_fork_folder, tmp_path)
    shutil.copytree(bad / "fold_0", bad / "fold_1")
    path = bad / "fold_1" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[:1000])
    _assert_refused(capsys, bad, workdir, str(path))
    shutil.rmtree(bad.parent)

    # the workspace already holds dataset 903 with other labels
    local = workdir / "raw" / "Dataset903_SynthEndoscopy" / "dataset.json"
    ds = json.loads((good_fork_folder / "dataset.json").read_text())
    local.parent.mkdir(parents=True)
    local.write_text(json.dumps({**ds, "labels": {"background": 0, "tumour": 1, "cyst": 2}}))
    _assert_refused(capsys, _broken_copy(good_fork_folder, tmp_path), workdir, "labels/channels differ", str(local))


def test_old_torch_is_refused_before_any_unpickling(good_fork_folder, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(UserInputError, match=r"needs torch >= 2\.6 \(this is 2\.5\.1\)"):
        load_fork_checkpoint(good_fork_folder / "fold_0" / "checkpoint_final.pth")


def test_our_plans_resolve_inheritance_and_refuse_cascade():
    plans = fork_plans_2d("Dataset903_X", 3)
    plans["configurations"]["2d_big"] = {"inherits_from": "2d", "patch_size": [96, 96]}
    ours = our_plans(copy.deepcopy(plans), "2d_big", "umamba_bot", "Dataset903_X", "plans.json")
    conf = ours["configurations"]["2d_big"]
    assert conf["patch_size"] == [96, 96] and "inherits_from" not in conf and "conv_kernel_sizes" not in conf
    assert conf["architecture"]["arch_kwargs"]["patch_size"] == [96, 96]
    plans["configurations"]["2d_cascade"] = {"inherits_from": "2d", "previous_stage": "2d_big"}
    from umamba_seg.errors import UserInputError

    with pytest.raises(UserInputError, match="cascade"):
        our_plans(plans, "2d_cascade", "umamba_bot", "Dataset903_X", "plans.json")
    for key, value, message in (
        ("patch_size", 64, "'patch_size' is not a list"),
        ("conv_kernel_sizes", [[3, 3]] * 3, "'pool_op_kernel_sizes' has 4 entries"),
        ("UNet_base_num_features", "32", "'UNet_base_num_features' is not a positive"),
    ):
        broken = copy.deepcopy(plans)
        broken["configurations"]["2d"][key] = value
        with pytest.raises(UserInputError, match=message):
            our_plans(broken, "2d", "umamba_bot", "Dataset903_X", "plans.json")
