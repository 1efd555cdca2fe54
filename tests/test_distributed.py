"""DDP with two CPU processes (gloo) started by torchrun."""

import os
import shutil
import subprocess
import sys

import pytest
import torch


@pytest.mark.skipif(
    shutil.which("torchrun") is None and sys.platform == "win32", reason="no torchrun"
)
def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "pfnkit.cli",
        "train-prior",
        "--prior",
        "gp",
        "--steps",
        "6",
        "--out",
        str(out),
        "--d-model",
        "32",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--rows",
        "24",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--threads",
        "1",
        "--quiet",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    data = torch.load(out / "checkpoint.pt", weights_only=True)
    assert data["world_size"] == 2 and data["step"] == 6
    assert data["metrics"]["datasets_seen"] == 6 * 4 * 2
    assert r.stderr.count("Done at step 6/6") == 1  # only rank 0 reports
