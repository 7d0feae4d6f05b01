"""``train --ddp``: two gloo processes on CPU (torchrun), against a single-process run.

The fixed-batch runs go through ``tests/training/ddp_worker.py`` (no augmentation, one global batch
drawn with a fixed seed, each rank keeping its rows): weights must be identical on both
ranks, the ranks' mean first loss must equal the single process's within 1e-4, and a rank
killed mid-run must end the job with our one-line error, not a hang. The CLI run checks
``torchrun ... -m umamba_seg train --ddp --continue`` end to end, resuming a single-process
run and validating over both ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.pipeline_fixtures import (  # noqa: F401 - trained_2d_workdir: session fixture (planned, preprocessed 2d)
    tiny_schedule,
    train_args,
    trained_2d_workdir,
)
from umamba_seg.cli import main as cli
from umamba_seg.errors import UserInputError
from umamba_seg.training.ddp import RankInfo, ddp_device, lost_peer, torchrun_rank_info

WORKER = Path(__file__).with_name("ddp_worker.py")
DATASET = "903"
ARCHS = ("cnn", "umamba_bot")
RUN_TIMEOUT_S = 420


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1", **extra)
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_env(), **kw)
    assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


@pytest.fixture(scope="module")
def ddp_workdir(trained_2d_workdir, tmp_path_factory) -> Path:  # noqa: F811
    """raw/ and preprocessed/ (2d, CNN plans) of the pipeline fixture; fresh results/."""
    workdir = tmp_path_factory.mktemp("ddp") / "workdir"
    for sub in ("raw", "preprocessed"):
        shutil.copytree(trained_2d_workdir / sub, workdir / sub)
    (workdir / "results").mkdir()
    return workdir


@pytest.fixture(scope="module")
def single_records(ddp_workdir: Path) -> Path:
    """First loss and weights of the single-process fixed-batch run of every arch in ARCHS."""
    rec = ddp_workdir.parent / "single"
    _run(
        [
            sys.executable,
            str(WORKER),
            "--single",
            "--workdir",
            str(ddp_workdir),
            "-d",
            DATASET,
            "-a",
            *ARCHS,
            "--record",
            str(rec),
        ]
    )
    return rec


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _norm(a: dict, b: dict, keys: list[str]) -> float:
    """Euclidean norm of the difference of two state dicts over ``keys``."""
    return float(torch.sqrt(sum(((a[k] - b[k]).double() ** 2).sum() for k in keys)))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_two_gloo_ranks_stay_in_sync_and_match_one_process(arch, ddp_workdir, single_records):
    rec = ddp_workdir.parent / f"ddp_{arch}"
    _run(_torchrun(WORKER, "--workdir", ddp_workdir, "-d", DATASET, "-a", arch, "--record", rec))
    single = single_records / arch

    firsts = [json.loads((rec / f"first_loss_rank{r}.json").read_text()) for r in (0, 1)]
    ref = json.loads((single / "first_loss_rank0.json").read_text())
    rows = [f["rows"] for f in firsts]  # the plans' global batch, split over the 2 ranks as nnunetv2 does
    assert ref["rows"] >= 2 and sum(rows) == ref["rows"] and min(rows) >= 1 and max(rows) - min(rows) <= 1
    # each rank: CE over its rows + Dice over the global batch, so the row-weighted mean is the global loss
    mean_first = sum(f["loss"] * f["rows"] for f in firsts) / ref["rows"]
    assert abs(mean_first - ref["loss"]) < 1e-4, (firsts, ref)

    init0, init1, init_single = (
        _weights(p) for p in (rec / "initial_rank0.pt", rec / "initial_rank1.pt", single / "initial_rank0.pt")
    )
    assert all(torch.equal(init0[k], init1[k]) and torch.equal(init0[k], init_single[k]) for k in init0)
    final0, final1 = _weights(rec / "final_rank0.pt"), _weights(rec / "final_rank1.pt")
    assert final0.keys() == final1.keys() == init0.keys()
    assert all(torch.equal(final0[k], final1[k]) for k in final0), "ranks drifted apart"
    floats = [k for k in final0 if final0[k].is_floating_point()]
    assert _norm(final0, init0, floats) > 1e-3, "no training happened"
    # the first step: averaged gradients of two half batches = the gradient of the whole batch, up to
    # float32 noise (about 0.1 %; later steps amplify it through momentum, so they are not compared)
    step0, step_single = _weights(rec / "step1_rank0.pt"), _weights(single / "step1_rank0.pt")
    assert _norm(step0, step_single, floats) < 0.01 * _norm(step_single, init0, floats)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_killed_rank_ends_job_with_clear_error(ddp_workdir):
    """Rank 1 SIGKILLs itself at step 2; rank 0 must stop with our line (no torchrun agent to kill it)."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = _env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            UMAMBA_DDP_TIMEOUT_S="120",
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "--workdir",
                    str(ddp_workdir),
                    "-d",
                    DATASET,
                    "-a",
                    "cnn",
                    "--record",
                    str(ddp_workdir.parent / "killed"),
                    "--kill-rank",
                    "1",
                    "--kill-at",
                    "2",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    t0 = time.monotonic()
    try:
        outs = [p.communicate(timeout=RUN_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == -9
    assert procs[0].returncode == 2, outs[0][1][-3000:]
    last = outs[0][1].strip().splitlines()[-1]
    assert last.startswith("error: rank 0 lost contact with the other training processes"), last
    assert "--continue" in last
    assert time.monotonic() - t0 < RUN_TIMEOUT_S


@pytest.mark.slow
def test_torchrun_cli_continues_a_single_process_run(ddp_workdir, trained_2d_workdir):  # noqa: F811
    """``torchrun -m umamba_seg train --ddp --continue`` picks up the fixture's 1-epoch single-process fold 0."""
    rel = Path("results") / "Dataset903_SynthEndoscopy" / "umambaTrainer__umambaPlans_cnn__2d"
    shutil.copytree(trained_2d_workdir / rel, ddp_workdir / rel)
    fold = ddp_workdir / rel / "fold_0"
    shutil.rmtree(fold / "validation")
    logs_before = set(fold.glob("training_log_*.txt"))
    assert torch.load(fold / "checkpoint_final.pth", weights_only=True)["current_epoch"] == 1

    res = _run(
        _torchrun(
            "-m", "umamba_seg", *train_args(ddp_workdir, DATASET, "2d", "0", *tiny_schedule(2), "--ddp", "--continue")
        )
    )
    assert res.stdout.count("--continue: resuming from checkpoint_final.pth at epoch 1") == 1  # rank 0 only
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ckpt["current_epoch"] == 2 and ckpt["trainer_name"] == "umambaTrainer"
    assert len(ckpt["logging"]["train_losses"]) == 2
    assert len(set(fold.glob("training_log_*.txt")) - logs_before) == 1  # rank 0 alone writes the log
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 2  # both validation cases, predicted one per rank
    assert not list(fold.rglob(".*.tmp*"))  # no half-written files left


def test_ddp_without_torchrun_is_a_clear_error(ddp_workdir, monkeypatch, capsys):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    code = cli(["train", "-d", DATASET, "-c", "2d", "-f", "0", "--workdir", str(ddp_workdir), "--ddp"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: --ddp needs the torchrun environment") and "torchrun --nproc-per-node" in err


def test_rank_info_device_and_peer_loss(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    info = torchrun_rank_info()
    assert info == RankInfo(rank=3, local_rank=1, world_size=4) and not info.is_main
    assert ddp_device("cpu", info) == torch.device("cpu")
    with pytest.raises(UserInputError, match="MPS"):
        ddp_device("mps", info)
    if not torch.cuda.is_available():
        assert ddp_device("auto", info) == torch.device("cpu")
        with pytest.raises(UserInputError, match="no CUDA GPU"):
            ddp_device("cuda", info)
    assert lost_peer(RuntimeError("[gloo/transport/tcp/pair.cc:545] Read error: Connection reset by peer"))
    assert not lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not lost_peer(ValueError("gloo"))


@pytest.mark.parametrize("arch", ("umamba_bot", "umamba_enc", "xlstm_bot", "xlstm_enc"))
def test_ssm_network_gives_every_parameter_a_gradient(arch, ddp_workdir):
    """DDP (find_unused_parameters=False) fails on a parameter outside the graph; under DDP every
    deep-supervision output is in the loss (nnunetv2 weights the last one 1e-6), so none may be."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from umamba_seg.architectures import registry
    from umamba_seg.planning.arch_plans import derive_arch_plans

    if arch not in registry.available():
        pytest.skip(f"{arch} is not registered")
    pre = ddp_workdir / "preprocessed" / "Dataset903_SynthEndoscopy"
    plans = derive_arch_plans(
        json.loads((pre / "umambaPlans_cnn.json").read_text()), arch, json.loads((pre / "dataset.json").read_text())
    )
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    torch.manual_seed(0)
    net = nnUNetTrainer.build_network_architecture(pm, cm, 3, 2, enable_deep_supervision=True)
    outputs = net(torch.randn(1, 3, *cm.patch_size))
    assert isinstance(outputs, (list, tuple)) and len(outputs) > 1
    sum(o.float().square().mean() for o in outputs).backward()
    unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
    sequence_layer_grads = [
        p.grad.abs().sum()
        for n, p in net.named_parameters()
        if any(w in n.lower() for w in ("token_layers", "mixer", "ssm", "mamba", "mlstm"))
    ]
    assert sequence_layer_grads and max(sequence_layer_grads) > 0  # the SSM/mLSTM layers do learn
