"""Four `pfnkit hpo run` workers on one study, one of them killed with SIGKILL mid-job, on
SQLite, optuna's journal file and a real PostgreSQL server: the survivors finish the
budget, every step is trained exactly once, and nothing the study recorded is lost.

The objective keeps a checkpoint per step in its configuration's directory and checks,
on each resume, that the checkpoint of the step it resumes from exists: a job resumed from
the wrong step, or a step trained twice, shows up either in its log or in the study.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from pfnkit.hpo.storage import STEPS_ATTR, open_storage  # noqa: E402

SPACE_YAML = """
lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
width: {type: int, low: 8, high: 256, log: true}
"""

OBJECTIVE_PY = """
import json
import math
import os
import time


def value(params, step):
    return (1 - abs(math.log10(params["lr"]) + 2) / 3) * (1 - math.exp(-step / 3))


def log(event, job):
    record = {"event": event, "pid": os.getpid(), "trial": job.trial_number,
              "from": job.from_step, "to": job.to_step}
    with open(os.environ["PFNKIT_TEST_LOG"], "a") as f:
        f.write(json.dumps(record) + "\\n")


def objective(job):
    ckpt = job.checkpoint_dir
    if job.from_step > 0 and not (ckpt / f"step-{job.from_step}").exists():
        raise RuntimeError(f"no checkpoint at step {job.from_step} in {ckpt}")
    log("start", job)
    time.sleep(float(os.environ["PFNKIT_TEST_SLEEP"]))  # the victim is killed in here
    (ckpt / f"step-{job.to_step}").write_text("weights")
    log("done", job)
    return [value(job.params, s) for s in range(job.from_step + 1, job.to_step + 1)]
"""

# a survivor's lease (renewed every LEASE / 3 s) must outlive any stall of a loaded 2-core
# CI machine, or its job is taken over and legitimately trained twice
BUDGET, MAX_STEPS, LEASE = 24, 4, 6


def value(params, step):
    return (1 - abs(math.log10(params["lr"]) + 2) / 3) * (1 - math.exp(-step / 3))


def _records(log):
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_four_workers_one_killed_train_every_step_exactly_once(
    backend, tmp_path, surrogate_path, request
):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    elif backend == "journal":
        url = f"journal://{tmp_path / 'study.log'}"
    else:
        url = request.getfixturevalue("postgres_url")
    study = f"workers-{backend}-{time.time_ns()}"
    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    log = tmp_path / "log.jsonl"
    cmd = [
        sys.executable, "-m", "pfnkit.cli", "hpo", "run", str(tmp_path / "obj.py"),
        "--space", str(tmp_path / "space.yaml"), "--budget", str(BUDGET),
        "--max-steps", str(MAX_STEPS), "--surrogate", str(surrogate_path),
        "--storage", url, "--study", study, "--quiet", "--lease-seconds", str(LEASE),
        "--artifacts", str(tmp_path / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "PFNKIT_TEST_LOG": str(log), "OMP_NUM_THREADS": "1"}

    def start(sleep):
        return subprocess.Popen(
            cmd,
            env={**env, "PFNKIT_TEST_SLEEP": str(sleep)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    victim = start(60)  # it sleeps in its first job until it is killed
    deadline = time.time() + 120
    while time.time() < deadline and not any(r["pid"] == victim.pid for r in _records(log)):
        time.sleep(0.05)
    killed = [r for r in _records(log) if r["pid"] == victim.pid]
    assert killed, f"the victim never started a job: {victim.communicate(timeout=30)}"
    workers = [start(0.05) for _ in range(3)]
    time.sleep(1.0)  # the others are at work ...
    victim.send_signal(signal.SIGKILL)  # ... when the victim dies inside its job
    victim.wait()
    outs = [w.communicate(timeout=600) for w in workers]
    for w, (_out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-2000:]

    records = _records(log)
    assert [r for r in records if r["pid"] == victim.pid] == killed  # one job, never done
    done = [r for r in records if r["event"] == "done"]
    trained = [(r["trial"], s) for r in done for s in range(r["from"] + 1, r["to"] + 1)]
    assert len(trained) == len(set(trained)), "a step was trained twice"
    assert len(trained) == BUDGET, "the budget was not trained exactly"

    trials = optuna.load_study(study_name=study, storage=open_storage(url)).trials
    assert all(t.state.name in ("WAITING", "COMPLETE") for t in trials), [
        t.state.name for t in trials
    ]
    recorded = [(t.number, s) for t in trials for s in t.intermediate_values]
    assert sorted(recorded) == sorted(trained), "the study lost (or invented) a step"
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs[STEPS_ATTR] + 1))
        for s, v in t.intermediate_values.items():
            assert v == pytest.approx(value(t.params, s))
    # the configuration the victim held was paused when its lease expired, not lost
    lost = next(t for t in trials if t.number == killed[0]["trial"])
    assert (
        lost.user_attrs["pfnkit_lease"].get("reclaimed_by")
        or lost.user_attrs[STEPS_ATTR] > killed[0]["from"]
    )
