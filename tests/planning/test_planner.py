"""Issue 12: per-architecture plans: topology per family, budget fitting, monotonicity, nnunetv2 validity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from umamba_seg.architectures import registry
from umamba_seg.planning.budget import GB, MemoryBudget
from umamba_seg.planning.ssm_planner import TopologyKnobs, candidate_path, search_configuration

ARCHS = [a for a in registry.available() if a != "cnn"]
SSM_ARCHS = [a for a in ARCHS if not a.endswith("_nossm")]


def _total_downsampling(arch_kwargs: dict, dim: int) -> list[int]:
    return [math.prod(int(s[a]) for s in arch_kwargs["strides"]) for a in range(dim)]


def test_budget_split():
    b = MemoryBudget(8, 10_000_000, "sgd")
    assert b.param_bytes == b.grad_bytes == b.optimizer_bytes == 40_000_000
    assert MemoryBudget(8, 10_000_000, "adamw").optimizer_bytes == 80_000_000
    assert b.fixed_bytes + b.activation_bytes == 8 * GB
    assert 0.5 * GB < b.workspace_bytes < 2 * GB
    with pytest.raises(ValueError):
        MemoryBudget(8, 1, "lion")


def test_candidate_path_is_nnunets():
    """Anisotropic 3D: starts at the median shape, shrinks the largest axis relative to it, never
    pools the thick axis first, and every patch is divisible by its CNN's total downsampling."""
    spacing, median = (3.0, 0.8, 0.8), (40, 300, 300)
    path = candidate_path(spacing, median, TopologyKnobs())
    assert len(path) > 5
    first_patch, first_block = path[0]
    assert first_patch[0] <= 48 and first_patch[1] >= 256  # clipped/padded to the median's aspect
    strides = first_block["arch_kwargs"]["strides"]
    assert strides[1][0] == 1 and strides[1][1] == 2  # in-plane first, as nnU-Net does for anisotropic data
    voxels = [math.prod(p) for p, _ in path]
    assert voxels == sorted(voxels, reverse=True) and len(set(voxels)) == len(voxels)
    for patch, block in path:
        total = _total_downsampling(block["arch_kwargs"], 3)
        assert all(p % t == 0 for p, t in zip(patch, total)), (patch, total)


@pytest.mark.parametrize("arch", SSM_ARCHS)
@pytest.mark.parametrize("spacing,median", [((1.0, 1.0), (96, 80)), ((3.0, 0.8, 0.8), (20, 56, 64))])
def test_topology_respects_each_family(arch, spacing, median):
    dim = len(spacing)
    res = search_configuration(arch, spacing, median, 50 * math.prod(median), 1, 3, 8.0)
    kw = res.architecture["arch_kwargs"]
    patch = res.patch_size
    total = _total_downsampling(kw, dim)
    assert all(p % t == 0 for p, t in zip(patch, total)), (patch, total)
    spec = registry.get(arch)
    if spec.adjust_patch is not None:  # VM-UNet's embedding/merges, SegMamba's stem and halvings
        assert spec.adjust_patch(patch) == patch
    if "patch_size" in kw:  # networks that size layers from the patch (channel tokens, slice counts)
        assert list(kw["patch_size"]) == patch
    if spec.family == "segmamba":
        assert all(t == 2 ** len(kw["feature_size"]) for t in total)
    if spec.family == "vmunet":
        assert all(p // t >= 1 for p, t in zip(patch, total))
    assert res.fits and res.batch_size >= 2
    assert res.estimate.mixer_bytes > 0


def test_more_memory_never_gives_a_smaller_patch_or_fewer_voxels_per_step():
    spacing, median = (2.0, 1.0, 1.0), (48, 96, 96)
    arch = "umamba_enc" if "umamba_enc" in SSM_ARCHS else SSM_ARCHS[0]
    plans = [search_configuration(arch, spacing, median, 1e12, 1, 3, gb) for gb in (1.6, 2, 3, 4, 6, 8, 12, 24)]
    for small, big in zip(plans, plans[1:]):
        assert all(b >= s for s, b in zip(small.patch_size, big.patch_size)), (small.patch_size, big.patch_size)
        assert math.prod(big.patch_size) * big.batch_size >= math.prod(small.patch_size) * small.batch_size
    assert math.prod(plans[-1].patch_size) > math.prod(plans[0].patch_size)
    for p, gb in zip(plans, (1.6, 2, 3, 4, 6, 8, 12, 24)):
        if p.fits:  # the chosen step fits its budget
            assert p.budget.fixed_bytes + p.estimate.activation_bytes <= gb * GB


def test_batch_fills_the_budget_and_keeps_nnunets_5_percent_cap():
    arch = "umamba_bot" if "umamba_bot" in SSM_ARCHS else SSM_ARCHS[0]
    spacing, median = (1.0, 1.0), (64, 64)
    roomy = search_configuration(arch, spacing, median, 1e12, 1, 3, 8.0)
    assert roomy.patch_size == [64, 64]
    assert roomy.batch_size > 20  # tiny 2D patches: the budget allows many
    used = roomy.budget.fixed_bytes + roomy.estimate.activation_bytes
    one_more = roomy.estimate.at_batch(roomy.batch_size + 1).activation_bytes + roomy.budget.fixed_bytes
    assert used <= 8 * GB < one_more
    capped = search_configuration(arch, spacing, median, 10 * 64 * 64 * 20, 1, 3, 8.0)  # 5% = 10 patches
    assert capped.batch_size == 10
    tiny_dataset = search_configuration(arch, spacing, median, 64 * 64 * 10, 1, 3, 8.0)
    assert tiny_dataset.batch_size == 2  # never below nnU-Net's minimum


def test_ablation_uses_its_parents_patch_and_batch():
    pairs = [(a, f"{a}_nossm") for a in SSM_ARCHS if f"{a}_nossm" in ARCHS]
    assert pairs
    arch, ablation = pairs[0]
    spacing, median = (1.0, 1.0), (128, 128)
    a = search_configuration(arch, spacing, median, 1e12, 1, 3, 4.0)
    b = search_configuration(ablation, spacing, median, 1e12, 1, 3, 4.0)
    assert (a.patch_size, a.batch_size) == (b.patch_size, b.batch_size)
    assert b.estimate.mixer_bytes < a.estimate.mixer_bytes
    assert b.architecture["arch_kwargs"].get("use_ssm") is False


# --------------------------------------------------------------------------- whole pipeline


@pytest.fixture(scope="module")
def planned_3d(tmp_path_factory, raw_3d_dataset):
    """The tiny 3D dataset planned for the CNN and one architecture of every family (2d preprocessed)."""
    import shutil

    from umamba_seg.cli import main as cli

    workdir = tmp_path_factory.mktemp("planner")
    (workdir / "raw").mkdir()
    shutil.copytree(raw_3d_dataset, workdir / "raw" / raw_3d_dataset.name)
    families, archs = set(), []
    for a in SSM_ARCHS:
        if registry.get(a).family not in families:
            families.add(registry.get(a).family)
            archs.append(a)
    code = cli(
        [
            "plan-and-preprocess",
            "-d",
            raw_3d_dataset.name[7:10],
            "-a",
            "cnn",
            *archs,
            "-c",
            "2d",
            "--explain",
            "--workdir",
            str(workdir),
        ]
    )
    assert code == 0
    return workdir, raw_3d_dataset.name, archs


def test_plans_share_spacing_and_data_per_configuration(planned_3d, capsys):
    workdir, name, archs = planned_3d
    pre = workdir / "preprocessed" / name
    cnn = json.loads((pre / "umambaPlans_cnn.json").read_text())
    for arch in archs:
        plans = json.loads((pre / f"umambaPlans_{arch}.json").read_text())
        assert plans["plans_name"] == f"umambaPlans_{arch}"
        assert set(plans["configurations"]) == set(cnn["configurations"])
        for c, conf in plans["configurations"].items():
            ref = cnn["configurations"][c]
            assert conf["spacing"] == ref["spacing"] and conf["data_identifier"] == ref["data_identifier"]
            assert conf["normalization_schemes"] == ref["normalization_schemes"]
            mem = conf["umamba_memory"]
            assert mem["fits"] and mem["token_mixer_gb"] > 0 and mem["total_gb"] <= 8.0


def test_explain_prints_the_memory_split(planned_3d):
    from umamba_seg.planning.explain import explain_plans
    from umamba_seg.workspace import Workspace

    workdir, name, archs = planned_3d
    text = explain_plans(Workspace.from_workdir(workdir), name, ["cnn", *archs], ["3d_fullres"], 8.0)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("arch"))
    for col in ("spacing", "patch", "stages", "batch", "conv GB", "mixer GB", "fixed GB"):
        assert col in header
    rows = [line.split() for line in lines if line.split() and line.split()[0] in ["cnn", *archs]]
    assert [r[0] for r in rows] == ["cnn", *archs]
    assert all(r[1] == "3d_fullres" and r[2] == "3x0.8x0.8" for r in rows)
    assert float(rows[0][8]) == 0.0  # the CNN has no token mixer
    assert all(float(r[8]) > 0 for r in rows[1:])
    assert "SGD momentum" in text and "workspace" in text


def test_stock_nnunet_trainer_accepts_the_plans(planned_3d, monkeypatch):
    """nnunetv2's own nnUNetTrainer builds each network from our plans, with deep supervision
    outputs matching its scales."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    workdir, name, archs = planned_3d
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        monkeypatch.setenv(var, str(workdir / sub))
    pre = workdir / "preprocessed" / name
    dataset_json = json.loads((pre / "dataset.json").read_text())
    arch = "umamba_enc" if "umamba_enc" in archs else archs[0]
    plans = json.loads((pre / f"umambaPlans_{arch}.json").read_text())
    plans["continue_training"] = False  # nnunetv2 2.8.1's run_training adds this key; the trainer pops it
    trainer = nnUNetTrainer(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    assert (
        type(trainer.network).__name__
        == plans["configurations"]["2d"]["architecture"]["network_class_name"].rsplit(".", 1)[-1]
    )
    patch = plans["configurations"]["2d"]["patch_size"]
    with torch.no_grad():
        out = trainer.network(torch.zeros(1, 1, *patch))
    scales = trainer._get_deep_supervision_scales()
    assert len(out) == len(scales)
    for o, s in zip(out, scales):
        assert list(o.shape[2:]) == [round(p * f) for p, f in zip(patch, s)]
    assert np.isfinite(out[0].numpy()).all()
