"""export-model / install-model / train --pretrained-weights on the session's trained 2D model.

The archive of the trained model installs into a fresh workdir and predicts the same files as
the original folder; tampered copies of it (built here) are refused with exit 2 and leave
nothing behind; fine-tuning starts from a model of another class and channel count.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from tests.pipeline_fixtures import TINY_SCHEDULE, predict_args, train_args
from umamba_seg.cli import main as cli
from umamba_seg.interop import model_archive
from umamba_seg.training.fold_run import FoldRun
from umamba_seg.training.run import train_fold
from umamba_seg.workspace import Workspace

DS = "Dataset903_SynthEndoscopy"
MODEL = "umambaTrainer__umambaPlans_cnn__2d"
PREFIX = f"{DS}/{MODEL}/"
CKPT = PREFIX + "fold_0/checkpoint_final.pth"


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(trained_2d_workdir: Path, tmp_path_factory) -> Path:
    archive = tmp_path_factory.mktemp("share") / "model.zip"
    assert (
        cli(
            [
                "export-model",
                "-d",
                "903",
                "-c",
                "2d",
                "-f",
                "0",
                "-o",
                str(archive),
                "--workdir",
                str(trained_2d_workdir),
            ]
        )
        == 0
    )
    return archive


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_export_install_predict_identical(exported, trained_2d_workdir, tmp_path, capsys):
    with zipfile.ZipFile(exported) as zf:
        manifest = json.loads(zf.read(model_archive.MANIFEST))
        names = set(zf.namelist())
        assert hashlib.sha256(zf.read(CKPT)).hexdigest() == manifest["files"][CKPT]["sha256"]
    assert names == {model_archive.MANIFEST, *manifest["files"]}
    assert {PREFIX + "plans.json", PREFIX + "dataset.json", PREFIX + "dataset_fingerprint.json", CKPT} <= names
    assert not any(n.endswith(".pkl") or "fold_1" in n for n in names)  # fold 0 only, no pickles
    assert manifest["arch"] == "cnn" and manifest["folds"] == ["0"] and manifest["trainer_name"] == "umambaTrainer"
    assert manifest["versions"]["nnunetv2"] and manifest["versions"]["umamba-seg"]

    fresh = tmp_path / "fresh"
    code, out, err = _run(capsys, "install-model", exported, "--workdir", fresh)
    assert code == 0, err
    assert (fresh / "results" / DS / MODEL / "fold_0" / "checkpoint_final.pth").is_file()
    assert not list((fresh / "results" / DS).glob(".*"))  # no scratch folder left
    images = trained_2d_workdir / "raw" / DS / "imagesTs"
    outs = []
    for workdir, name in ((trained_2d_workdir, "orig"), (fresh, "installed")):
        code, _, err = _run(capsys, *predict_args(workdir, images, tmp_path / name, "903", "2d", "-f", "0"))
        assert code == 0, err
        outs.append(
            {
                p.relative_to(tmp_path / name): p.read_bytes()
                for p in _files_under(tmp_path / name)
                if p.suffix == ".png"
            }
        )
    assert outs[0] and outs[0] == outs[1]

    code, _, err = _run(capsys, "install-model", exported, "--workdir", fresh)  # already there
    assert code == 2 and "--overwrite" in err
    code, _, err = _run(capsys, "install-model", exported, "--workdir", fresh, "--overwrite")
    assert code == 0, err


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy ``src`` with ``edit(files: dict[name, bytes], manifest, extra: list[ZipInfo, bytes])`` applied."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if n != model_archive.MANIFEST}
        manifest = json.loads(zf.read(model_archive.MANIFEST))
    extra: list[tuple[zipfile.ZipInfo, bytes]] = []
    edit(files, manifest, extra)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(model_archive.MANIFEST, json.dumps(manifest))
        for n, data in files.items():
            zf.writestr(n, data, zipfile.ZIP_STORED if n.endswith(".pth") else zipfile.ZIP_DEFLATED)
        for info, data in extra:
            zf.writestr(info, data)
    return dst


def _relist(manifest: dict, name: str, data: bytes) -> None:
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class _Payload:
    """Unpickling this would create a marker file (it must never happen)."""

    marker: str = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _traversal(files, manifest, extra):
    extra.append((zipfile.ZipInfo("../../evil.json"), b"{}"))


def _absolute(files, manifest, extra):
    extra.append((zipfile.ZipInfo("/tmp/evil.json"), b"{}"))


def _link(files, manifest, extra):
    info = zipfile.ZipInfo(PREFIX + "fold_0/checkpoint_best.pth")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    target = b"/etc/passwd"
    extra.append((info, target))
    _relist(manifest, info.filename, target)


def _wrong_hash(files, manifest, extra):
    files[PREFIX + "dataset.json"] = files[PREFIX + "dataset.json"].replace(b'"labels"', b'"labels" ', 1)
    manifest["files"][PREFIX + "dataset.json"]["size"] = len(files[PREFIX + "dataset.json"])


def _other_class(files, manifest, extra):
    plans = json.loads(files[PREFIX + "plans.json"])
    plans["configurations"]["2d"]["architecture"]["network_class_name"] = "subprocess.Popen"
    files[PREFIX + "plans.json"] = json.dumps(plans).encode()
    _relist(manifest, PREFIX + "plans.json", files[PREFIX + "plans.json"])


def _unlisted(files, manifest, extra):
    files[PREFIX + "fold_0/validation/summary.json"] = b"{}"


def _not_a_model_file(files, manifest, extra):
    name = PREFIX + "crossval_results_folds_0/postprocessing.pkl"
    files[name] = b"\x80\x04N."
    _relist(manifest, name, files[name])


def _size_bomb(files, manifest, extra):
    name = PREFIX + "fold_0/validation/summary.json"
    files[name] = b" " * (24 * 1024**2)  # deflates about 1000 times
    _relist(manifest, name, files[name])


def _no_manifest_entry(files, manifest, extra):
    del manifest["files"][PREFIX + "dataset_fingerprint.json"]


HOSTILE = {
    "traversal": _traversal,
    "absolute": _absolute,
    "link": _link,
    "wrong_hash": _wrong_hash,
    "other_class": _other_class,
    "unlisted": _unlisted,
    "pickle_side_file": _not_a_model_file,
    "size_bomb": _size_bomb,
    "missing_from_manifest": _no_manifest_entry,
}


@pytest.mark.parametrize("kind", [*HOSTILE, "pickle_checkpoint", "total_size"])
def test_hostile_archive_refused_and_nothing_written(kind, exported, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "unpickled"
    if kind == "pickle_checkpoint":

        def edit(files, manifest, extra):
            _Payload.marker = str(marker)
            import io

            buf = io.BytesIO()
            torch.save({"network_weights": {}, "payload": _Payload()}, buf)
            files[CKPT] = buf.getvalue()
            _relist(manifest, CKPT, files[CKPT])

        archive = _rewrite(exported, tmp_path / "bad.zip", edit)
    elif kind == "total_size":
        monkeypatch.setattr(model_archive, "MAX_UNPACKED_BYTES", 10_000)
        archive = exported
    else:
        archive = _rewrite(exported, tmp_path / "bad.zip", HOSTILE[kind])
    fresh = tmp_path / "fresh"
    code, out, err = _run(capsys, "install-model", archive, "--workdir", fresh)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert _files_under(fresh) == [] and not (fresh / "results" / DS).exists()
    assert not marker.exists() and not (tmp_path.parent / "evil.json").exists()


def _classes_channels_checkpoint(model_dir: Path, out: Path, labels: dict, channels: dict) -> set[str]:
    """A checkpoint of the same architecture for another task; returns the keys whose shape differs."""
    from umamba_seg.interop.import_model import _build_network

    plans = json.loads((model_dir / "plans.json").read_text())
    ds = json.loads((model_dir / "dataset.json").read_text())
    ours = _build_network(plans, "2d", ds).state_dict()
    other = _build_network(plans, "2d", {**ds, "labels": labels, "channel_names": channels}).state_dict()
    torch.save({"network_weights": other, "trainer_name": "umambaTrainer"}, out)
    return {k for k in ours if ours[k].shape != other[k].shape}


def test_finetune_loads_all_but_heads_and_first_conv(trained_2d_workdir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir, workdir, ignore=shutil.ignore_patterns("fold_1"))
    model_dir = workdir / "results" / DS / MODEL
    source = tmp_path / "other_task.pth"
    differing = _classes_channels_checkpoint(
        model_dir, source, {"background": 0, "a": 1, "b": 2, "c": 3}, {"0": "gray"}
    )
    assert any("seg_layers" in k for k in differing) and any("stages.0.0.convs.0" in k for k in differing)
    capsys.readouterr()  # the training itself through train_fold: the CLI's final validation is not needed here
    train_fold(
        Workspace.from_workdir(workdir).activate(),
        DS,
        FoldRun("2d", 0, epochs=1, iters_per_epoch=2, val_iters=1, device="cpu", seed=0, validate=False),
        pretrained_weights=source,
    )
    out = capsys.readouterr().out
    skipped = {line.split()[1].rstrip(":") for line in out.splitlines() if line.strip().startswith("skipped ")}
    assert skipped == differing, (skipped, differing)
    assert "loaded " in out and f"skipped {len(differing)}," in out
    log = "".join(p.read_text() for p in (model_dir / "fold_0").glob("training_log_*.txt"))
    assert "pretrained weights from" in log and "seg_layers" in log

    argv = train_args(workdir, "903", "2d", "0", "--continue", "--pretrained-weights", source, *TINY_SCHEDULE)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "--continue" in err


def test_finetune_nothing_matching_exits_2(trained_2d_workdir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    shutil.copytree(trained_2d_workdir, workdir, ignore=shutil.ignore_patterns("fold_*"))
    source = tmp_path / "unrelated.pth"
    torch.save({"model": {"head.weight": torch.zeros(3, 3)}}, source)
    argv = train_args(workdir, "903", "2d", "0", "--pretrained-weights", source, *TINY_SCHEDULE)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "no tensor of the checkpoint matches" in err, err
    assert not (workdir / "results" / DS / MODEL / "fold_0" / "checkpoint_final.pth").exists()


def _vmamba_imagenet_state_dict(dim: int = 96, depths=(2, 2, 9, 2), d_state: int = 16) -> dict:
    """Random tensors under the key names and shapes of VMamba v0 ImageNet checkpoints
    (``vmamba_tiny_e292.pth``: dims 96 .. 768, depths 2, 2, 9, 2, a 1000-class head)."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "patch_embed.proj.weight": (dim, 3, 4, 4),
        "patch_embed.proj.bias": (dim,),
        "patch_embed.norm.weight": (dim,),
        "patch_embed.norm.bias": (dim,),
    }
    for i, depth in enumerate(depths):
        c = dim * 2**i
        e, r = 2 * c, -(-c // 16)
        for b in range(depth):
            p = f"layers.{i}.blocks.{b}."
            sd.update(
                {
                    p + "ln_1.weight": (c,),
                    p + "ln_1.bias": (c,),
                    p + "self_attention.in_proj.weight": (2 * e, c),
                    p + "self_attention.conv2d.weight": (e, 1, 3, 3),
                    p + "self_attention.conv2d.bias": (e,),
                    p + "self_attention.x_proj_weight": (4, r + 2 * d_state, e),
                    p + "self_attention.dt_projs_weight": (4, e, r),
                    p + "self_attention.dt_projs_bias": (4, e),
                    p + "self_attention.A_logs": (4 * e, d_state),
                    p + "self_attention.Ds": (4 * e,),
                    p + "self_attention.out_norm.weight": (e,),
                    p + "self_attention.out_norm.bias": (e,),
                    p + "self_attention.out_proj.weight": (c, e),
                }
            )
        if i < len(depths) - 1:
            sd.update(
                {
                    f"layers.{i}.downsample.reduction.weight": (2 * c, 4 * c),
                    f"layers.{i}.downsample.norm.weight": (4 * c,),
                    f"layers.{i}.downsample.norm.bias": (4 * c,),
                }
            )
    top = dim * 2 ** (len(depths) - 1)
    sd.update({"norm.weight": (top,), "norm.bias": (top,), "head.weight": (1000, top), "head.bias": (1000,)})
    return {k: torch.randn(s, generator=g) for k, s in sd.items()}


def test_vmamba_imagenet_checkpoint_loads_into_vmunet(tmp_path):
    from umamba_seg.architectures.vmunet import VMUNet
    from umamba_seg.training.pretrained import load_pretrained_weights

    theirs = _vmamba_imagenet_state_dict(dim=24)  # the tiny layout at a quarter of its width, for speed
    path = tmp_path / "vmamba_tiny_e292.pth"
    torch.save({"model": theirs, "epoch": 292}, path)
    net = VMUNet(3, 2, deep_supervision=True, dims=(24, 48, 96, 192))
    lines: list[str] = []
    report = load_pretrained_weights(net, path, log=lines.append)
    sd = net.state_dict()
    assert torch.equal(sd["encoder.embed.proj.weight"], theirs["patch_embed.proj.weight"])
    assert torch.equal(sd["encoder.stages.2.1.ssm.A_logs"], theirs["layers.2.blocks.1.self_attention.A_logs"])
    assert torch.equal(
        sd["encoder.stages.0.0.ssm.conv.weight"], theirs["layers.0.blocks.0.self_attention.conv2d.weight"]
    )
    assert torch.equal(sd["encoder.merges.1.reduction.weight"], theirs["layers.1.downsample.reduction.weight"])
    # the decoder stage at encoder stage i's resolution gets that stage's blocks (as the authors' load_from)
    assert torch.equal(sd["decoder.stages.3.0.norm.weight"], theirs["layers.0.blocks.0.ln_1.weight"])
    assert torch.equal(
        sd["decoder.stages.0.1.ssm.out_proj.weight"], theirs["layers.3.blocks.1.self_attention.out_proj.weight"]
    )
    assert all(k.startswith("encoder.") or k.startswith("decoder.stages.") for k in report.loaded)
    assert all(k.startswith(("encoder.", "decoder.stages.")) for k in sd if k not in report.skipped)
    not_in_vmamba = ("decoder.expands.", "decoder.final_", "decoder.seg_heads.")  # the decoder's own layers
    assert set(report.skipped) == {k for k in sd if k.startswith(not_in_vmamba)}
    assert {"head.weight", "norm.weight", "encoder.stages.2.8.norm.weight"} <= set(report.unused)
    assert report.mapping and "VMamba" in lines[0]

    gray = VMUNet(1, 2, dims=(24, 48, 96, 192))  # one input channel: the RGB patch embedding is skipped, the rest loads
    report = load_pretrained_weights(gray, path, log=lambda _: None)
    assert "encoder.embed.proj.weight" in report.skipped and "encoder.embed.norm.weight" in report.loaded


def test_export_of_a_model_folder_with_broken_json_is_one_line(tmp_path):
    from umamba_seg.errors import UserInputError
    from umamba_seg.interop.export_model import _check_model

    (tmp_path / "plans.json").write_text('{"dataset_name": "Dataset903_X",')
    with pytest.raises(UserInputError, match=r"plans.json is not valid JSON .*restore the model folder's file"):
        _check_model(tmp_path, ["0"], ["checkpoint_final.pth"])
