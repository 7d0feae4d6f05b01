"""Issue 5: preprocessing killed with SIGKILL resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from umamba_seg.atomic import atomic_path, write_json_atomic


def _cmd(workdir: Path, ds: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "umamba_seg",
        "plan-and-preprocess",
        "-d",
        ds,
        "-a",
        "cnn",
        "-c",
        "3d_fullres",
        "-np",
        "1",
        "--workdir",
        str(workdir),
    ]


def _load(folder: Path, case: str):
    import blosc2

    data = blosc2.open(urlpath=str(folder / f"{case}.b2nd"), mode="r")[:]
    seg = blosc2.open(urlpath=str(folder / f"{case}_seg.b2nd"), mode="r")[:]
    with open(folder / f"{case}.pkl", "rb") as f:
        props = pickle.load(f)
    return data, seg, props


def test_sigkill_mid_preprocessing_then_rerun(raw_3d_dataset, tmp_path):
    ds = raw_3d_dataset.name
    ref, run = tmp_path / "ref", tmp_path / "run"
    for w in (ref, run):
        (w / "raw").mkdir(parents=True)
        shutil.copytree(raw_3d_dataset, w / "raw" / ds)
    env = {**os.environ, "nnUNet_n_proc_DA": "1"}
    subprocess.run(_cmd(ref, ds[7:10]), check=True, capture_output=True, env=env, timeout=600)

    proc = subprocess.Popen(_cmd(run, ds[7:10]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    data_dir = run / "preprocessed" / ds / "umambaPlans_3d_fullres"
    deadline = time.time() + 300
    while time.time() < deadline and not list(data_dir.glob("*.pkl")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # every case visible under its final name is complete (arrays + properties)
    for pkl in data_dir.glob("*.pkl"):
        _load(data_dir, pkl.stem)
    assert (
        len(list(data_dir.glob("*.pkl")))
        < len(list((ref / "preprocessed" / ds / "umambaPlans_3d_fullres").glob("*.pkl")))
        or proc.returncode != -signal.SIGKILL
    )

    r = subprocess.run(_cmd(run, ds[7:10]), check=True, capture_output=True, text=True, env=env, timeout=600)
    assert "already done" in r.stdout
    ref_dir = ref / "preprocessed" / ds / "umambaPlans_3d_fullres"
    cases = sorted(p.stem for p in ref_dir.glob("*.pkl"))
    assert cases == sorted(p.stem for p in data_dir.glob("*.pkl"))
    assert not (data_dir / ".partial").exists()
    for c in cases:
        a, b = _load(ref_dir, c), _load(data_dir, c)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2]["shape_before_cropping"] == b[2]["shape_before_cropping"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic({"v": 1}, target)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
