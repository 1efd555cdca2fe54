"""End-to-end: train from the CLI, kill -9 mid-run, resume, and compare with a clean run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow

# long enough that the kill lands mid-run even on an idle machine: with 60 steps the
# victim once finished all of them between the poll that saw step 20 and the SIGKILL
STEPS = 300
ARGS = [
    "--prior",
    "gp",
    "--steps",
    str(STEPS),
    "--checkpoint-every",
    "10",
    "--d-model",
    "32",
    "--n-layers",
    "2",
    "--n-heads",
    "2",
    "--rows",
    "32",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--quiet",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "pfnkit.cli", "train-prior", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **kw,
    )


def wait_for_step(path, step, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists():
            try:
                if torch.load(path, weights_only=True)["step"] >= step:
                    return
            except Exception:
                pass  # being replaced right now
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    clean = cli(*ARGS, "--out", tmp_path / "clean")
    assert clean.wait(300) == 0, clean.communicate()

    victim = cli(*ARGS, "--out", tmp_path / "killed")
    wait_for_step(tmp_path / "killed" / "checkpoint.pt", 20, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert 20 <= saved["step"] < STEPS  # killed mid-run; the last checkpoint survived

    resumed = cli("--resume", tmp_path / "killed", "--quiet")
    assert resumed.wait(300) == 0, resumed.communicate()
    a = torch.load(tmp_path / "clean" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_ctrl_c_saves_and_exits_130(tmp_path):
    proc = cli(*ARGS, "--out", tmp_path / "run")
    wait_for_step(tmp_path / "run" / "checkpoint.pt", 10, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]
    assert 10 <= step < 60
