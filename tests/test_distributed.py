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


def _shutdown_worker(rank: int, port: int, result) -> None:
    import torch.distributed as dist

    from pfnkit.train.distributed import DistInfo, shutdown_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    shutdown_distributed(DistInfo(rank=rank, world_size=2))
    result.put((rank, dist.is_initialized()))


def test_shutdown_distributed_destroys_the_group_on_every_rank():
    """Both ranks leave the process group (the train-prior CLI calls this after a run)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    procs = [ctx.Process(target=_shutdown_worker, args=(r, port, result)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(result.get(timeout=5) for _ in procs) == [(0, False), (1, False)]
