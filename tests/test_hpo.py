"""Freeze-thaw HPO: search spaces, the ask/tell loop on optuna, faults, workers, pruner."""

import json
import math
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from pfnkit.exceptions import InvalidConfigError, PfnkitError  # noqa: E402
from pfnkit.hpo import FreezeThaw, FreezeThawSurrogate, LCPFNPruner, load_space  # noqa: E402
from pfnkit.hpo.loop import STEPS_ATTR, TrialLost  # noqa: E402
from pfnkit.hpo.space import encode, sample_configs  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE_YAML = """
lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
width: {type: int, low: 8, high: 256, log: true}
dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}
opt: {type: categorical, choices: [adam, sgd, rmsprop]}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML)
    return load_space(path)


# ---------------------------------------------------------------- spaces


def test_space_file_to_distributions_and_encoding(space):
    od = optuna.distributions
    assert isinstance(space["lr"], od.FloatDistribution) and space["lr"].log
    assert isinstance(space["width"], od.IntDistribution)
    assert space["opt"].choices == ("adam", "sgd", "rmsprop")
    configs = sample_configs(space, 200, np.random.default_rng(0))
    for c in configs:
        for name, dist in space.items():
            assert dist._contains(dist.to_internal_repr(c[name])), (name, c[name])
        z = encode(c, space)
        assert z.shape == (4,) and np.all((z >= 0) & (z <= 1))
    # log scale: half the draws of lr lie below the geometric midpoint
    lr = np.array([c["lr"] for c in configs])
    assert 0.35 < np.mean(lr < math.sqrt(1e-4 * 0.1)) < 0.65
    assert encode({"lr": 1e-4, "width": 256, "dropout": 0.5, "opt": "sgd"}, space).tolist() == [
        0.0,
        1.0,
        1.0,
        0.5,
    ]


@pytest.mark.parametrize(
    "text, match",
    [
        ("lr: {type: normal, low: 0, high: 1}", "unknown distribution type 'normal'"),
        ("lr: {type: flot, low: 0, high: 1}", "Did you mean 'float'"),
        ("lr: {type: float, low: 0, high: 1, lg: true}", r"unknown key\(s\) \['lg'\]"),
        ("lr: {type: float, low: 1, high: 0}", "'lr' .* is invalid"),
        ("lr: {type: float, low: 0}", "'low' and 'high' are required"),
        ("lr: {type: categorical, choices: []}", "non-empty list"),
        ("lr: 0.1", "needs a mapping with a 'type'"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_space_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=match):
        load_space(path)


def test_missing_space_file(tmp_path):
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- the loop (tiny FT-PFN)


@pytest.fixture(scope="module")
def surrogate(surrogate_path):
    return FreezeThawSurrogate(surrogate_path)


MAX_STEPS = 8


def curve_value(params, step):
    """A synthetic objective: accuracy rising with steps, best near lr = 0.01, adam."""
    quality = 1 - abs(math.log10(params["lr"]) + 2) / 3 - (params["opt"] != "adam") * 0.1
    return float(np.clip(quality, 0.05, 1) * (1 - math.exp(-step / 3)))


def objective(job):
    return [curve_value(job.params, s) for s in range(job.from_step + 1, job.to_step + 1)]


def cli_curve_value(params, step):
    return (1 - abs(math.log10(params["lr"]) + 2) / 3) * (1 - math.exp(-step / 3))


def check_curves(study, value=curve_value, max_steps=MAX_STEPS):
    for t in study.get_trials(deepcopy=False):
        n = t.user_attrs.get(STEPS_ATTR, 0)
        assert sorted(t.intermediate_values) == list(range(1, n + 1))
        for s, v in t.intermediate_values.items():
            assert v == pytest.approx(value(t.params, s))
        if t.state.name == "COMPLETE":
            assert n == max_steps and t.value == pytest.approx(t.intermediate_values[max_steps])


def test_optimize_spends_the_budget_and_records_curves(space, surrogate):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=0)
    ft.optimize(objective, budget=40)
    assert ft.steps_used() == 40
    check_curves(ft.study)
    states = {t.state.name for t in ft.study.trials}
    assert states <= {"WAITING", "COMPLETE"}
    params, value, steps = ft.best()
    assert value == pytest.approx(curve_value(params, steps))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_steps": 0}, "'max_steps' parameter must be an int >= 1. Got 0"),
        ({"step_size": 0}, "'step_size' parameter must be an int >= 1"),
        ({"n_fresh": 0}, "'n_fresh' parameter must be an int >= 1. Got 0"),
        ({"max_failures": 2.5}, "'max_failures' parameter must be an int >= 1"),
        ({"lease_seconds": -1.0}, "'lease_seconds' parameter must be a number of seconds > 0"),
        ({"lease_seconds": 0}, "'lease_seconds' parameter must be a number .* Got 0."),
        ({"lease_seconds": math.inf}, "'lease_seconds' parameter must be a number .* Got inf"),
        ({"direction": "up"}, "'maximize' or 'minimize'. Got 'up'"),
        ({"value_range": (1.0, 0.0)}, "high > low"),
    ],
)
def test_bad_loop_settings_name_the_parameter(space, surrogate, kwargs, match):
    settings = {"max_steps": MAX_STEPS, "surrogate": surrogate, **kwargs}
    with pytest.raises(InvalidConfigError, match=match):
        FreezeThaw(space, **settings)


def test_ask_tell_by_hand_advances_one_step(space, surrogate):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=1)
    job = ft.ask()
    assert (job.from_step, job.to_step) == (0, 1) and set(job.params) == set(space)
    ft.tell(job, curve_value(job.params, 1))
    assert ft.study.trials[0].state.name == "WAITING"
    with pytest.raises(InvalidConfigError, match="must return 1 number"):
        ft.tell(ft.ask(), [0.1, 0.2])


def test_failing_and_nan_objectives_fail_the_trial_and_go_on(space, surrogate):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=2)

    def flaky(job):
        if job.trial_number % 3 == 1:
            raise RuntimeError("out of memory")
        if job.trial_number % 3 == 2:
            return [float("nan")] * (job.to_step - job.from_step)
        return objective(job)

    ft.optimize(flaky, budget=20)
    failed = [t for t in ft.study.trials if t.state.name == "FAIL"]
    assert failed and ft.steps_used() == 20
    errors = {t.user_attrs["pfnkit_error"].split(":")[0] for t in failed}
    assert errors <= {"RuntimeError", "objective returned a non-finite value"}

    def broken(job):
        raise ValueError("bad objective")

    with pytest.raises(PfnkitError, match="failed 10 times in a row.*bad objective"):
        ft.optimize(broken, budget=1000)


def test_restart_rebuilds_from_sqlite(space, surrogate, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = FreezeThaw(
        space, max_steps=MAX_STEPS, surrogate=surrogate, storage=url, study_name="s", seed=3
    )
    first.optimize(objective, budget=15)
    del first
    again = FreezeThaw(
        space, max_steps=MAX_STEPS, surrogate=surrogate, storage=url, study_name="s", seed=4
    )
    assert again.steps_used() == 15
    again.optimize(objective, budget=30)
    assert again.steps_used() == 30
    check_curves(again.study)
    with pytest.raises(InvalidConfigError, match="other settings"):
        FreezeThaw(space, max_steps=20, surrogate=surrogate, storage=url, study_name="s")
    with pytest.raises(InvalidConfigError, match="created to maximize"):
        FreezeThaw(
            space,
            max_steps=MAX_STEPS,
            surrogate=surrogate,
            storage=url,
            study_name="s",
            direction="minimize",
        )


def test_killed_worker_is_paused_and_resumed_elsewhere(space, surrogate, tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    dead = FreezeThaw(
        space, max_steps=MAX_STEPS, surrogate=surrogate, storage=url, study_name="k", seed=5
    )
    job = dead.ask()  # ... and the worker dies before telling
    alive = FreezeThaw(
        space,
        max_steps=MAX_STEPS,
        surrogate=surrogate,
        storage=url,
        study_name="k",
        seed=6,
        lease_seconds=1e-9,
    )
    # nothing is observed yet, so the reclaimed (paused) configuration is taken first
    resumed = alive.ask()
    assert resumed.trial_number == job.trial_number and resumed.from_step == 0
    alive.tell(resumed, objective(resumed))
    with pytest.raises(TrialLost):
        dead.tell(job, objective(job))
    check_curves(alive.study)


def _loop(space, surrogate, url, seed, **kwargs):
    """One worker on the shared SQLite study "r"."""
    return FreezeThaw(
        space,
        max_steps=MAX_STEPS,
        surrogate=surrogate,
        storage=url,
        study_name="r",
        seed=seed,
        **kwargs,
    )


def test_a_claim_lost_to_a_worker_that_finished_the_trial_picks_again(
    space, surrogate, tmp_path, monkeypatch
):
    # A snapshots the study and chooses the paused trial 0; before A claims it, B resumes
    # it and finishes it. A's claim finds it moved on and A chooses again. (The races
    # inside a claim, report, pause or reclaim are covered in test_hpo_storage.py.)
    url = f"sqlite:///{tmp_path / 'race.db'}"
    a = _loop(space, surrogate, url, seed=7)
    b = _loop(space, surrogate, url, seed=8, step_size=MAX_STEPS)
    first = a.ask()
    a.tell(first, objective(first))
    choose, chosen_from = a._choose, []

    def racing_choose(curves, paused, fresh, tags):
        chosen_from.append([t.number for t in paused])
        if len(chosen_from) > 1:
            return choose(curves, paused, fresh, tags)
        monkeypatch.setattr(b, "_choose", lambda *args: 0)  # b takes the paused trial
        job = b.ask()
        b.tell(job, objective(job))
        return 0

    monkeypatch.setattr(a, "_choose", racing_choose)
    job = a.ask()  # the claim is lost: A reads the study again and picks another configuration
    assert chosen_from == [[0], []]
    assert (job.trial_number, job.from_step, job.to_step) == (1, 0, 1)
    a.tell(job, objective(job))
    assert [t.state.name for t in a.study.trials] == ["COMPLETE", "WAITING"]
    check_curves(a.study)


def _worker(url, space_file, surrogate_path, seed, log):
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ft = FreezeThaw(
        load_space(space_file),
        max_steps=MAX_STEPS,
        surrogate=surrogate_path,
        storage=url,
        study_name="two",
        seed=seed,
    )

    def logged(job):
        with open(log, "a") as f:
            f.write(f"{job.trial_number},{job.from_step},{job.to_step}\n")
        return objective(job)

    ft.optimize(logged, budget=40)


def test_two_workers_on_sqlite_never_train_a_step_twice(space, surrogate_path, tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE_YAML)
    url = f"sqlite:///{tmp_path / 'two.db'}"
    log = tmp_path / "log.csv"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(url, str(space_file), str(surrogate_path), s, str(log)))
        for s in (10, 11)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    rows = [tuple(map(int, ln.split(","))) for ln in log.read_text().split()]
    steps = [(t, s) for t, a, b in rows for s in range(a + 1, b + 1)]
    assert len(steps) == len(set(steps)), "a step was trained twice"
    assert len({w for w in rows}) == len(rows)
    study = optuna.load_study(study_name="two", storage=url)
    used = sum(t.user_attrs.get(STEPS_ATTR, 0) for t in study.trials)
    assert used == 40 == len(steps)  # the budget, exactly: claims are cut to what is left
    check_curves(study)


# ---------------------------------------------------------------- LC-PFN pruner


def test_lcpfn_pruner_in_a_plain_optuna_loop():
    pruner = LCPFNPruner(max_steps=30, threshold=0.05)
    study = optuna.create_study(
        direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )

    def obj(trial):
        ceiling = trial.suggest_float("ceiling", 0.1, 0.95)
        v = 0.0
        for step in range(1, 31):
            v = ceiling * (1 - math.exp(-step / 4))
            trial.report(v, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return v

    study.enqueue_trial({"ceiling": 0.95})
    study.optimize(obj, n_trials=12)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert len(pruned) >= 6, "the pruner stopped almost nothing"
    # every pruned trial would have ended below the best final value: no wrong call
    best = study.best_value
    assert all(t.params["ceiling"] * (1 - math.exp(-30 / 4)) < best for t in pruned)
    used = sum(len(t.intermediate_values) for t in study.trials)
    assert used < 0.6 * 12 * 30


# ---------------------------------------------------------------- CLI

OBJECTIVE_PY = """
import math


def objective(job):
    q = 1 - abs(math.log10(job.params["lr"]) + 2) / 3
    return [q * (1 - math.exp(-s / 3)) for s in range(job.from_step + 1, job.to_step + 1)]
"""


@pytest.mark.parametrize(
    "bundled, storage",
    [(False, "sqlite"), (True, "sqlite"), (False, "journal")],
    ids=["small-surrogate", "bundled-surrogate", "journal-file"],
)
def test_cli_run_status_best(tmp_path, surrogate_path, bundled, storage):
    from typer.testing import CliRunner

    from pfnkit.cli import app as cli_app

    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    if storage == "journal":
        url = f"journal://{tmp_path / 'cli.log'}"
    common = ["--storage", url, "--study", "cli"]
    runner = CliRunner()
    r = runner.invoke(
        cli_app.app,
        [
            "hpo",
            "run",
            str(tmp_path / "obj.py"),
            "--space",
            str(tmp_path / "space.yaml"),
            "--budget",
            "30",
            "--max-steps",
            "3",
            *([] if bundled else ["--surrogate", str(surrogate_path)]),
            "--quiet",
            "--seed",
            "0",
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "Used 30/30 steps" in r.output
    r = runner.invoke(cli_app.app, ["hpo", "status", *common])
    assert r.exit_code == 0 and "30 steps used" in r.stdout
    r = runner.invoke(cli_app.app, ["hpo", "best", *common])
    assert r.exit_code == 0, r.output
    import json

    best = json.loads(r.stdout)
    assert best["steps"] == 3 and set(best["params"]) == {"lr", "width", "dropout", "opt"}


@pytest.mark.parametrize(
    "args, match",
    [
        (["--function", "train"], "has no function 'train'"),
        (["--space", "missing.yaml"], "does not exist"),
        (["--value-high", "big"], "--value-high"),
    ],
)
def test_cli_run_bad_input(tmp_path, surrogate_path, args, match):
    from typer.testing import CliRunner

    from pfnkit.cli import app as cli_app

    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    base = {"--space": str(tmp_path / "space.yaml")}
    extra = list(args)
    if "--space" in extra:
        base = {}
        extra[1] = str(tmp_path / extra[1])
    flat = [x for kv in base.items() for x in kv]
    r = CliRunner().invoke(
        cli_app.app,
        [
            "hpo",
            "run",
            str(tmp_path / "obj.py"),
            *flat,
            "--budget",
            "5",
            "--max-steps",
            "5",
            "--surrogate",
            str(surrogate_path),
            "--storage",
            f"sqlite:///{tmp_path / 'b.db'}",
            *extra,
        ],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert match in r.output
    assert not (tmp_path / "b.db").exists()  # refused before the study was created
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", study_name="other")
    r = CliRunner().invoke(
        cli_app.app,
        ["hpo", "status", "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--study", "nope"],
    )
    assert r.exit_code == 1 and "No study 'nope'" in r.output and "there: other" in r.output


SLOW_OBJECTIVE_PY = """
import math
import os
from pathlib import Path
import time


def objective(job):
    with open(os.environ["PFNKIT_TEST_LOG"], "a") as f:
        f.write(f"{job.trial_number},{job.from_step},{job.to_step}\\n")
    time.sleep(float(os.environ.get("PFNKIT_TEST_SLEEP", "0")))  # killed in here
    q = 1 - abs(math.log10(job.params["lr"]) + 2) / 3
    return [q * (1 - math.exp(-s / 3)) for s in range(job.from_step + 1, job.to_step + 1)]
"""


def test_cli_worker_killed_then_resumed(tmp_path, surrogate_path):
    """kill -9 a worker mid-run; a restarted worker resumes its configuration and
    finishes the budget; the study holds every step once."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "obj.py").write_text(SLOW_OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    log = tmp_path / "log.csv"
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    cmd = [
        sys.executable,
        "-m",
        "pfnkit.cli",
        "hpo",
        "run",
        str(tmp_path / "obj.py"),
        "--space",
        str(tmp_path / "space.yaml"),
        "--budget",
        "24",
        "--max-steps",
        "4",
        "--surrogate",
        str(surrogate_path),
        "--storage",
        url,
        "--study",
        "k",
        "--quiet",
        "--lease-seconds",
        "1",
    ]
    env = {
        **os.environ,
        "PFNKIT_TEST_LOG": str(log),
        "PFNKIT_TEST_SLEEP": "0.3",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().split()) < 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # dies inside objective(): its trial stays RUNNING
    proc.wait()
    study = optuna.load_study(study_name="k", storage=url)
    assert any(t.state.name == "RUNNING" for t in study.trials)
    time.sleep(1.5)  # let the dead worker's lease expire
    env["PFNKIT_TEST_SLEEP"] = "0"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="k", storage=url)
    assert not any(t.state.name == "RUNNING" for t in study.trials)
    used = sum(t.user_attrs.get(STEPS_ATTR, 0) for t in study.trials)
    assert used == 24
    check_curves(study, cli_curve_value, max_steps=4)


# ---------------------------------------------------------------- bench (methods compared)

BENCH_METHODS = ["ft", "tpe-hb", "tpe-sh", "random", "random-lcpfn"]


@pytest.mark.parametrize(
    "method, direction",
    [(m, "maximize") for m in BENCH_METHODS] + [("ft", "minimize"), ("random", "minimize")],
)
def test_bench_run_method_trajectory(space, surrogate_path, method, direction):
    from pfnkit.hpo.bench import run_method

    finals: list[float] = []
    spent: list[float] = []

    def recorded(job):  # minimize a loss falling with the steps: 1 - accuracy
        values = [v if direction == "maximize" else 1 - v for v in objective(job)]
        if job.to_step == 4:
            finals.append(values[-1])
        spent.extend(values)
        return values

    run = run_method(
        method,
        recorded,
        space,
        budget=24,
        max_steps=4,
        seed=0,
        direction=direction,
        surrogate=surrogate_path,
    )
    assert len(run.incumbent) == 24 and run.run_time > 0
    first = run.first_finish()
    assert first is not None and first >= 4
    assert all(v is None for v in run.incumbent[: first - 1])
    seen = run.incumbent[first - 1 :]
    assert all(v is not None for v in seen)
    best = max if direction == "maximize" else min
    sign = 1 if direction == "maximize" else -1
    assert all(sign * (b - a) >= 0 for a, b in zip(seen, seen[1:]))
    assert run.incumbent[-1] in finals and run.incumbent[-1] == best(finals)
    assert len(run.ask_times) == (24 if method == "ft" else 0)
    # the anytime incumbent: the best value of any step so far, finished or not
    assert len(run.anytime) == 24
    assert run.anytime == [best(spent[: i + 1]) for i in range(24)]
    assert all(sign * (a - f) >= 0 for a, f in zip(run.anytime, run.incumbent) if f is not None)


def test_bench_baseline_survives_a_failing_objective(space):
    from pfnkit.hpo.bench import run_method

    def flaky(job):
        if job.trial_number % 3 == 1:
            raise RuntimeError("out of memory")
        return objective(job)

    run = run_method("random", flaky, space, budget=24, max_steps=4)
    assert len(run.incumbent) == 24 and run.incumbent[-1] is not None

    def broken(job):
        return [float("nan")]

    with pytest.raises(PfnkitError, match="failed 10 times in a row.*non-finite"):
        run_method("tpe-sh", broken, space, budget=24, max_steps=4)
    with pytest.raises(InvalidConfigError, match="choose from: ft, tpe-hb"):
        run_method("bohb", objective, space, budget=24, max_steps=4)


def _bench_cli(tmp_path, *args):
    from typer.testing import CliRunner

    from pfnkit.cli import app as cli_app

    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    return CliRunner().invoke(
        cli_app.app,
        [
            "hpo",
            "bench",
            str(tmp_path / "obj.py"),
            "--space",
            str(tmp_path / "space.yaml"),
            "--budget",
            "24",
            "--max-steps",
            "4",
            *args,
        ],
    )


def test_cli_bench_prints_the_method_table(tmp_path, surrogate_path):
    from pfnkit.hpo.bench import METHODS

    r = _bench_cli(tmp_path, "--seeds", "2", "--surrogate", str(surrogate_path))
    assert r.exit_code == 0, r.output
    rows = [ln.split(" | ") for ln in r.stdout.splitlines() if ln.startswith("| ")]
    assert rows[0][:2] == ["| method", "best @25%"] and rows[0][-1] == "run time (s) |"
    assert [row[0][2:] for row in rows[1:]] == list(METHODS.values())
    for row in rows[1:]:
        assert len(row) == 7 and 0 < float(row[3]) <= 1  # best @100%: something finished
    assert rows[1][5] != "-" and rows[2][5] == "-"  # ask times: freeze-thaw only
    assert "mean over 2 seed(s)" in r.stdout


def test_cli_bench_unknown_method(tmp_path, surrogate_path):
    r = _bench_cli(tmp_path, "--methods", "ft,bohb", "--surrogate", str(surrogate_path))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "Unknown method(s) 'bohb'" in r.output
    assert "ft, tpe-hb, tpe-sh, random, random-lcpfn" in r.output


def test_bundled_surrogate_runs_the_loop(space):
    from pfnkit.hpo.surrogate import DEFAULT_CHECKPOINT
    from pfnkit.train.checkpoint import bundled_checkpoint_path

    assert bundled_checkpoint_path(DEFAULT_CHECKPOINT, "freeze-thaw surrogate").is_file()
    ft = FreezeThaw(space, max_steps=MAX_STEPS, seed=0)  # surrogate="default"
    assert ft.surrogate.max_hyperparameters >= 4
    ft.optimize(objective, budget=30)
    assert ft.steps_used() == 30
    check_curves(ft.study)


def test_bench_passes_n_fresh_to_freeze_thaw(space, surrogate_path):
    from pfnkit.hpo.bench import run_method

    with pytest.raises(InvalidConfigError, match="'n_fresh' parameter must be an int >= 1"):
        run_method(
            "ft", objective, space, budget=4, max_steps=4, surrogate=surrogate_path, n_fresh=0
        )
    run = run_method(
        "ft", objective, space, budget=8, max_steps=4, surrogate=surrogate_path, n_fresh=1
    )
    assert len(run.incumbent) == 8 and len(run.ask_times) == 8


def test_objective_resumes_from_its_own_checkpoint_dir(space, surrogate, tmp_path):
    """Each configuration gets its own artifacts directory; a paused configuration comes
    back at the step its saved state is at, also after the loop is restarted."""
    url = f"sqlite:///{tmp_path / 'ckpt.db'}"
    artifacts = tmp_path / "artifacts"
    dirs: dict[int, Path] = {}

    def training(job):
        state = job.checkpoint_dir / "state.json"
        trained = json.loads(state.read_text())["step"] if state.exists() else 0
        assert trained == job.from_step  # resumes where its own checkpoint left off
        assert dirs.setdefault(job.trial_number, job.checkpoint_dir) == job.checkpoint_dir
        state.write_text(json.dumps({"step": job.to_step}))
        return objective(job)

    def loop():
        return FreezeThaw(
            space,
            max_steps=MAX_STEPS,
            surrogate=surrogate,
            storage=url,
            study_name="ckpt",
            artifacts_dir=artifacts,
            step_size=3,
            seed=len(dirs),
        )

    loop().optimize(training, budget=20)
    restarted = loop()  # a new worker on the same study and artifacts
    restarted.optimize(training, budget=40)
    assert restarted.steps_used() == 40
    assert len(set(dirs.values())) == len(dirs) > 1
    for t in restarted.study.get_trials():
        saved = json.loads((artifacts / f"trial-{t.number}" / "state.json").read_text())
        assert saved["step"] == t.user_attrs[STEPS_ATTR]
    check_curves(restarted.study)


# ---------------------------------------------------------------- objective return values


@pytest.mark.parametrize(
    "returned, match",
    [
        ("1", "Got str '1'"),
        (b"1", "Got bytes"),
        ({"acc": 0.5}, "Got dict"),
        (None, "Got NoneType"),
        (True, "Got bool"),
        (["0.5"], "holding str '0.5'"),
        ([0.1, 0.2], "Got 2 value"),
    ],
)
def test_a_return_that_is_not_one_number_per_step_fails_the_trial_once(
    space, surrogate, monkeypatch, returned, match
):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=20, max_failures=2)
    fails = []
    fail = ft.fail
    monkeypatch.setattr(ft, "fail", lambda job, reason: fails.append(reason) or fail(job, reason))
    with pytest.raises(PfnkitError, match="failed 2 times in a row.*must return 1 number"):
        ft.optimize(lambda job: returned, budget=4)
    assert len(fails) == 2  # one per trial: each failed once, not twice
    for t in ft.study.trials:
        assert t.state.name == "FAIL" and STEPS_ATTR in t.user_attrs
        assert t.user_attrs["pfnkit_error"].startswith("The objective must return 1 number")
        assert match in t.user_attrs["pfnkit_error"] and not t.intermediate_values


def test_numpy_returns_are_values(space, surrogate):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=21, step_size=2)
    ft.optimize(lambda job: np.asarray(objective(job), dtype=np.float32), budget=4)
    job = ft.ask(max_train=1)
    ft.tell(job, np.float64(0.5))  # a numpy scalar for a one-step job
    assert ft.steps_used() == 5
    trial = ft.study.trials[job.trial_number]
    assert trial.intermediate_values[job.to_step] == 0.5 and trial.state.name != "FAIL"


def test_values_outside_the_value_range_are_recorded_with_one_warning(space, surrogate):
    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, seed=22)
    with pytest.warns(UserWarning, match=r"returned 3, outside the value range \[0, 1\]") as w:
        ft.optimize(lambda job: [3.0], budget=3)
    assert len([x for x in w if "value range" in str(x.message)]) == 1
    assert ft.steps_used() == 3 and all(t.intermediate_values[1] == 3.0 for t in ft.study.trials)


# ---------------------------------------------------------------- leases


def test_a_job_longer_than_its_lease_is_not_taken_over(space, surrogate, tmp_path):
    """The worker renews its lease while the objective runs: a second worker that asks
    after the lease time has passed leaves the running configuration alone."""
    import threading
    import time

    url = f"sqlite:///{tmp_path / 'lease.db'}"
    log: list[tuple[int, int]] = []
    # a lease of 3 s renewed every second: only a stall of 2 s would let it lapse
    a = _loop(space, surrogate, url, seed=30, lease_seconds=3.0)
    b = _loop(space, surrogate, url, seed=31, lease_seconds=3.0)
    started, b_done = threading.Event(), threading.Event()

    def slow(job):
        log.extend((job.trial_number, s) for s in range(job.from_step + 1, job.to_step + 1))
        started.set()
        assert b_done.wait(60)  # still running while b asks, however slow b is
        return objective(job)

    def fast(job):
        log.extend((job.trial_number, s) for s in range(job.from_step + 1, job.to_step + 1))
        return objective(job)

    worker = threading.Thread(target=a.optimize, args=(slow, 1))
    worker.start()
    assert started.wait(30)
    time.sleep(3.6)  # past the lease: without renewals, b would pause and resume a's trial

    def release_a(ft, job):  # b has trained the 2 steps left to it; it now waits for a's
        if ft.steps_used() >= 2:
            b_done.set()

    b.optimize(fast, budget=3, callback=release_a)
    worker.join(30)
    slow_trial = log[0][0]
    assert [t for t, _ in log].count(slow_trial) == 1, "the slow job was trained twice"
    assert len(log) == len(set(log))
    trial = b.study.trials[slow_trial]
    assert trial.user_attrs[STEPS_ATTR] == 1 and trial.intermediate_values[1] == pytest.approx(
        curve_value(trial.params, 1)
    )
    check_curves(b.study)


def test_cli_refuses_lease_seconds_zero(tmp_path, surrogate_path):
    from typer.testing import CliRunner

    from pfnkit.cli import app as cli_app

    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    r = CliRunner().invoke(
        cli_app.app,
        [
            "hpo",
            "run",
            str(tmp_path / "obj.py"),
            "--space",
            str(tmp_path / "space.yaml"),
            "--budget",
            "3",
            "--max-steps",
            "3",
            "--surrogate",
            str(surrogate_path),
            "--storage",
            f"sqlite:///{tmp_path / 'z.db'}",
            "--lease-seconds",
            "0",
        ],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "'lease_seconds' parameter must be a number of seconds > 0" in r.output
    assert len(r.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- CLI defaults

RESUMING_OBJECTIVE_PY = """
import json

from helper import value  # a module beside this file


def objective(job):
    state = job.checkpoint_dir / "state.json"
    trained = json.loads(state.read_text())["step"] if state.exists() else 0
    if trained != job.from_step:
        raise RuntimeError(f"checkpoint at {trained}, job from {job.from_step}")
    state.write_text(json.dumps({"step": job.to_step}))
    return [value(job.params, s) for s in range(job.from_step + 1, job.to_step + 1)]
"""

HELPER_PY = """
import math


def value(params, step):
    return (1 - abs(math.log10(params["lr"]) + 2) / 3) * (1 - math.exp(-step / 3))
"""


def _cli(*args):
    from typer.testing import CliRunner

    from pfnkit.cli import app as cli_app

    return CliRunner().invoke(cli_app.app, [str(a) for a in args])


def test_cli_run_gives_every_configuration_a_directory_beside_the_study(tmp_path, surrogate_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "obj.py").write_text(RESUMING_OBJECTIVE_PY)
    (code / "helper.py").write_text(HELPER_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    r = _cli(
        "hpo", "run", code / "obj.py", "--space", tmp_path / "space.yaml", "--budget", 12,
        "--max-steps", 3, "--surrogate", surrogate_path, "--quiet", "--seed", 0,
        "--storage", url, "--study", "mine",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    artifacts = tmp_path / "db" / "mine-artifacts"
    assert f"Checkpoints: {artifacts}/trial-N" in r.output
    study = optuna.load_study(study_name="mine", storage=url)
    assert {t.state.name for t in study.trials} <= {"WAITING", "COMPLETE"}
    for t in study.trials:
        state = json.loads((artifacts / f"trial-{t.number}" / "state.json").read_text())
        assert state["step"] == t.user_attrs[STEPS_ATTR]


def test_default_artifacts_for_other_storages():
    from pfnkit.cli.hpo import default_artifacts

    assert default_artifacts("sqlite:////data/s.db", "x") == Path("/data/x-artifacts")
    assert default_artifacts("sqlite:///s.db", "x") == Path("x-artifacts")
    assert default_artifacts("postgresql://u@h/db", "x") == Path("x-artifacts")


@pytest.mark.parametrize("method", ["ft", "random"])
def test_bench_gives_every_configuration_a_checkpoint_dir(space, surrogate_path, method):
    from pfnkit.hpo.bench import run_method

    seen: dict[int, Path] = {}

    def training(job):
        assert job.checkpoint_dir is not None and job.checkpoint_dir.is_dir()
        assert seen.setdefault(job.trial_number, job.checkpoint_dir) == job.checkpoint_dir
        state = job.checkpoint_dir / "step"
        assert (int(state.read_text()) if state.exists() else 0) == job.from_step
        state.write_text(str(job.to_step))
        return objective(job)

    run = run_method(
        method, training, space, budget=10, max_steps=4, surrogate=surrogate_path, seed=0
    )
    assert len(run.incumbent) == 10 and len(set(seen.values())) == len(seen)
    assert not any(d.exists() for d in seen.values())  # the temporary directory is gone


# ---------------------------------------------------------------- one-line HPO errors


def _one_line_error(r, match):
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert match in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("command", ["status", "best"])
def test_status_and_best_refuse_bad_storages(tmp_path, command):
    missing = tmp_path / "typo.db"
    _one_line_error(
        _cli("hpo", command, "--storage", f"sqlite:///{missing}"), "no SQLite database at"
    )
    assert not missing.exists()  # no empty database made for a mistyped path
    _one_line_error(_cli("hpo", command, "--storage", "nosuchdb://x/y"), "Cannot open --storage")
    journal = tmp_path / "typo.log"
    _one_line_error(_cli("hpo", command, "--storage", f"journal:{journal}"), "no journal at")
    assert not journal.exists()


def _run_args(tmp_path, surrogate_path, *extra):
    (tmp_path / "obj.py").write_text(OBJECTIVE_PY)
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    return [
        "hpo", "run", tmp_path / "obj.py", "--space", tmp_path / "space.yaml", "--budget", 3,
        "--max-steps", 3, "--surrogate", surrogate_path, "--quiet",
        "--storage", f"sqlite:///{tmp_path / 'v.db'}", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--budget", 0], "--budget must be >= 1 step. Got 0"),
        (["--surrogate", "missing.pt"], "missing.pt"),
        (["--seed", -1], "'seed' parameter must be None or an int >= 0. Got -1"),
    ],
)
def test_cli_run_refuses_bad_arguments_before_creating_the_study(
    tmp_path, surrogate_path, extra, match
):
    _one_line_error(_cli(*_run_args(tmp_path, surrogate_path), *extra), match)
    assert not (tmp_path / "v.db").exists()


def test_cli_run_refuses_an_artifacts_path_it_cannot_create(tmp_path, surrogate_path):
    (tmp_path / "file").write_text("")
    args = _run_args(tmp_path, surrogate_path, "--artifacts", tmp_path / "file" / "a")
    _one_line_error(_cli(*args), "artifacts directory")
    assert not (tmp_path / "v.db").exists()  # refused before the study: no phantom trial


def test_a_checkpoint_dir_that_cannot_be_made_leaves_no_running_trial(space, surrogate, tmp_path):
    ft = FreezeThaw(
        space, max_steps=MAX_STEPS, surrogate=surrogate, artifacts_dir=tmp_path / "a", seed=1
    )
    (tmp_path / "a" / "trial-0").write_text("in the way")
    with pytest.raises(InvalidConfigError, match="checkpoint directory of trial 0"):
        ft.ask()
    assert [t.state.name for t in ft.study.trials] == ["FAIL"]


@pytest.mark.parametrize("bound", [".nan", ".inf", "-.inf"])
def test_space_file_refuses_non_finite_bounds(tmp_path, bound):
    path = tmp_path / "space.yaml"
    path.write_text(f"lr: {{type: float, low: {bound}, high: 0.1}}\n")
    with pytest.raises(InvalidConfigError, match="'low' must be a finite number"):
        load_space(path)


# ---------------------------------------------------------------- budget


def test_a_worker_counts_the_steps_other_workers_are_training(space, surrogate, tmp_path):
    """A job in flight on another worker counts against the shared budget: the second
    worker trains only what is left, and together they spend the budget exactly."""
    import threading

    url = f"sqlite:///{tmp_path / 'budget.db'}"
    a = _loop(space, surrogate, url, seed=40, step_size=3)
    b = _loop(space, surrogate, url, seed=41, step_size=3)
    started, b_done, trained = threading.Event(), threading.Event(), []

    def slow(job):
        trained.append(("a", job.to_step - job.from_step))
        started.set()
        assert b_done.wait(60)  # a's job is in flight for as long as b runs
        return objective(job)

    def fast(job):
        trained.append(("b", job.to_step - job.from_step))
        return objective(job)

    worker = threading.Thread(target=a.optimize, args=(slow, 4))
    worker.start()
    assert started.wait(30)
    # a trains steps 1..3 now: 1 step is left to b, which then waits for a's to land
    b.optimize(fast, budget=4, callback=lambda ft, job: b_done.set())
    worker.join(30)
    assert trained == [("a", 3), ("b", 1)]
    assert a.steps_used() == 4
    check_curves(a.study)


# ---------------------------------------------------------------- acquisitions


def test_another_acquisition_plugs_in(space, surrogate):
    """An object with select() replaces MFPI-random; it sees every observed curve and the
    paused candidates before the fresh ones."""
    seen = []

    class MostTrained:
        def select(self, curves, candidates, *, max_steps, rng):
            seen.append((len(curves), [c.steps for c in candidates]))
            return max(range(len(candidates)), key=lambda i: candidates[i].steps)

    ft = FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, acquisition=MostTrained())
    ft.optimize(objective, budget=MAX_STEPS)
    # it always advances the configuration trained furthest: one configuration, to the end
    assert [t.state.name for t in ft.study.trials] == ["COMPLETE"]
    assert seen[-1] == (1, [MAX_STEPS - 1] + [0] * ft.n_fresh)


@pytest.mark.parametrize("bad, match", [("ucb", "Unknown acquisition"), (3, "'acquisition'")])
def test_unknown_acquisitions_are_refused(space, surrogate, bad, match):
    with pytest.raises(InvalidConfigError, match=match):
        FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, acquisition=bad)
