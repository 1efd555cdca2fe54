"""The freeze-thaw study state on its own (pfnkit.hpo.storage): claim, lease, pause, report,
reclaim and the study lock, on SQLite, optuna's journal file and a real PostgreSQL server.

Each race is staged deterministically: a worker acts on a snapshot, another worker changes
the trial in between, and the first must then change nothing. Interleavings inside a
change are impossible by construction (the study lock), which the lock tests show.
"""

import threading
import time

import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution  # noqa: E402

from pfnkit.exceptions import InvalidConfigError, PfnkitError  # noqa: E402
from pfnkit.hpo.storage import (  # noqa: E402
    LEASE_ATTR,
    STEPS_ATTR,
    BudgetTaken,
    StudyLock,
    StudyStore,
    TrialLost,
    journal_path,
    open_study,
    sqlite_path,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
BACKENDS = ["sqlite", "journal", "postgresql"]


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.log'}"
    return request.getfixturevalue("postgres_url")


_names = iter(range(10**6))


@pytest.fixture
def study_name():
    return f"s{next(_names)}-{time.time_ns()}"


def store(url, name, worker, lease_seconds=60.0):
    return StudyStore(open_study(url, name, "maximize"), worker=worker, lease_seconds=lease_seconds)


def new_trial(s, to=1):
    return s.start({"lr": 0.01}, SPACE, {}, to)


def trial_of(s, claim):
    return s.trial(claim.trial_id)


def test_storage_strings():
    assert sqlite_path("sqlite:///a/b.db") == sqlite_path("sqlite:///a/b.db?timeout=3")
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql://h/d") is None
    assert str(journal_path("journal:///shared/s.log")) == "/shared/s.log"
    assert str(journal_path("journal:s.log")) == "s.log"
    assert journal_path("sqlite:///s.db") is None


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "60"])
def test_lease_seconds_is_checked(url, study_name, bad):
    with pytest.raises(InvalidConfigError, match="'lease_seconds'"):
        store(url, study_name, "w", lease_seconds=bad)


def test_start_report_claim_complete(url, study_name):
    a = store(url, study_name, "a")
    job = new_trial(a, to=2)
    t = trial_of(a, job)
    assert t.state.name == "RUNNING" and t.user_attrs[STEPS_ATTR] == 0
    assert t.user_attrs[LEASE_ATTR]["worker"] == "a" and t.user_attrs[LEASE_ATTR]["to"] == 2
    a.report(job, [0.1, 0.2], final=False)
    t = trial_of(a, job)
    assert (t.state.name, t.user_attrs[STEPS_ATTR], t.intermediate_values) == (
        "WAITING",
        2,
        {1: 0.1, 2: 0.2},
    )
    b = store(url, study_name, "b")
    resumed = b.claim(t, 3)
    assert (resumed.from_step, resumed.to_step, resumed.worker) == (2, 3, "b")
    b.report(resumed, [0.3], final=True)
    t = trial_of(b, resumed)
    assert (t.state.name, t.value, a.steps_used()) == ("COMPLETE", 0.3, 3)


@pytest.mark.parametrize("meanwhile", ["resumed", "trained further", "finished", "failed"])
def test_a_claim_on_a_stale_snapshot_changes_nothing(url, study_name, meanwhile):
    a, b = store(url, study_name, "a"), store(url, study_name, "b")
    job = new_trial(a)
    a.report(job, [0.1], final=False)
    snapshot = trial_of(a, job)  # worker a saw it WAITING at step 1 ...
    other = b.claim(snapshot, 2)  # ... then b resumed it
    if meanwhile != "resumed":
        if meanwhile == "failed":
            b.fail(other, "boom")
        else:
            b.report(other, [0.2], final=meanwhile == "finished")
    before = trial_of(a, job)
    assert a.claim(snapshot, 2) is None
    after = trial_of(a, job)
    assert (after.state, after.user_attrs, after.intermediate_values) == (
        before.state,
        before.user_attrs,
        before.intermediate_values,
    )


def test_an_expired_lease_is_reclaimed_and_the_old_worker_can_change_nothing(url, study_name):
    old = store(url, study_name, "old")
    new = store(url, study_name, "new", lease_seconds=0.05)
    job = old.claim(trial_of(old, _paused(old)), 2)
    time.sleep(0.1)
    assert new.reclaim_abandoned(new.trials()) == 1
    t = trial_of(new, job)
    assert t.state.name == "WAITING" and t.user_attrs[LEASE_ATTR]["worker"] is None
    assert not old.renew(job)  # its heartbeat stops
    with pytest.raises(TrialLost, match="taken over"):
        old.report(job, [0.5], final=False)
    assert old.fail(job, "late error") is False and old.pause(job) is False
    resumed = new.claim(trial_of(new, job), 2)
    assert (resumed.from_step, resumed.worker) == (1, "new")
    with pytest.raises(TrialLost):  # nor while the new worker holds it
        old.report(job, [0.5], final=False)
    new.report(resumed, [0.2], final=False)
    t = trial_of(new, job)
    assert t.intermediate_values == {1: 0.1, 2: 0.2} and "pfnkit_error" not in t.user_attrs


def _paused(s):
    """A trial trained to step 1 and paused."""
    job = new_trial(s)
    s.report(job, [0.1], final=False)
    return job


@pytest.mark.parametrize("meanwhile", ["reported", "renewed", "finished"])
def test_a_stale_reclaim_leaves_the_trial_alone(url, study_name, meanwhile):
    owner = store(url, study_name, "owner")
    reaper = store(url, study_name, "reaper", lease_seconds=0.05)
    job = owner.claim(trial_of(owner, _paused(owner)), 2)
    time.sleep(0.1)
    snapshot = reaper.trials()  # the lease looks expired here ...
    if meanwhile == "renewed":  # ... but the owner's heartbeat renews it
        assert owner.renew(job)
    else:
        owner.report(job, [0.2], final=meanwhile == "finished")
    before = trial_of(owner, job)
    assert reaper.reclaim_abandoned(snapshot) == 0
    after = trial_of(owner, job)
    assert (after.state, after.user_attrs) == (before.state, before.user_attrs)


class _SlowRelease:
    """A lock connection whose commit (which frees the advisory lock) waits, afterwards,
    until ``then`` is set: the next holder takes the lock before this exit has finished."""

    def __init__(self, conn, then):
        self.conn, self.then = conn, then

    def commit(self):
        self.conn.commit()
        assert self.then.wait(30)

    def close(self):
        self.conn.close()


def test_a_threads_release_never_frees_the_next_holder(postgres_url, study_name):
    """Two threads share one store's StudyLock. Thread A releases while thread B waits; B
    takes the lock between A's commit and the end of A's exit. B must still hold it after A
    has finished (the bug this pins: A's exit closed the connection it read from shared
    state, which was by then B's, freeing B's lock mid-claim; CI saw a budget overspent)."""
    lock = store(postgres_url, study_name, "w").lock
    other = store(postgres_url, study_name, "other").lock
    other.timeout = 0.3
    b_holds, a_done, first = threading.Event(), threading.Event(), []
    real = lock._lock_postgres

    def lock_postgres():
        conn = real()
        if not first:  # A's acquisition
            first.append(conn)
            return _SlowRelease(conn, b_holds)
        return conn

    lock._lock_postgres = lock_postgres
    seen = []

    def b():
        with lock:
            b_holds.set()
            assert a_done.wait(30)
            try:  # B's hold must exclude everyone else still
                with other:
                    seen.append("free")
            except PfnkitError:
                seen.append("held")

    with lock:
        tb = threading.Thread(target=b)
        tb.start()
        time.sleep(0.2)  # B is waiting for the lock
    a_done.set()
    tb.join(60)
    assert seen == ["held"]


def test_the_budget_counts_steps_in_flight_and_is_never_overspent(url, study_name):
    """Eight threads (four stores of their own) claim at once against a budget of 5 steps
    in jobs of 2: the claims add up to exactly 5, the last one cut to 1."""
    stores = [store(url, study_name, f"w{i}") for i in range(4)]
    for s in stores:
        s.study.get_trials()  # schema and study exist before the race starts
    barrier, claims, errors = threading.Barrier(8), [], []

    def claim(s):
        barrier.wait()
        try:
            claims.append(s.start({"lr": 0.01}, SPACE, {}, 2, budget=5))
        except BudgetTaken:
            pass
        except Exception as e:  # pragma: no cover - shown by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=claim, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sorted(c.to_step - c.from_step for c in claims) == [1, 2, 2]
    assert stores[0].committed(stores[0].trials()) == 5
    with pytest.raises(BudgetTaken):
        stores[0].start({"lr": 0.01}, SPACE, {}, 1, budget=5)


def test_a_dead_workers_steps_return_to_the_budget(url, study_name):
    """Steps in flight count while their lease is live, and not once it has expired (as
    seen by a worker whose lease_seconds is shorter than the time since the claim)."""
    a = store(url, study_name, "a")
    new_trial(a, to=3)  # and a dies
    assert a.committed(a.trials()) == 3  # a 60 s lease: live, however slow this machine
    time.sleep(0.05)
    impatient = store(url, study_name, "b", lease_seconds=0.01)
    assert impatient.committed(impatient.trials()) == 0


def test_the_lock_excludes_other_workers(url, study_name):
    """While one worker holds the study lock, another's claim waits for it."""
    a, b = store(url, study_name, "a"), store(url, study_name, "b")
    paused = trial_of(a, _paused(a))
    done = threading.Event()
    with a.lock:
        t = threading.Thread(target=lambda: (b.claim(paused, 2), done.set()))
        t.start()
        assert not done.wait(0.5), "the claim went through while the lock was held"
    assert done.wait(60)
    t.join()
    assert a.trial(paused._trial_id).user_attrs[LEASE_ATTR]["worker"] == "b"


def test_a_lock_held_too_long_is_a_one_line_error(url, study_name):
    a = store(url, study_name, "a")
    impatient = StudyLock(a.storage, a.study_id, timeout=0.3)
    with (
        a.lock,
        pytest.raises(PfnkitError, match="Waited 0.3 s for the study lock") as e,
        impatient,
    ):
        pass
    assert "\n" not in str(e.value)


def test_the_file_lock_is_released_when_its_holder_dies(tmp_path, study_name):
    """A worker killed while it holds the lock does not block the others."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'dead.db'}"
    a = store(url, study_name, "a")
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, f"{tmp_path / 'dead.db'}.pfnkit-lock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    start = time.monotonic()
    new_trial(a)
    assert time.monotonic() - start < 5


def test_keep_alive_renews_and_stops_with_the_block(url, study_name):
    a = store(url, study_name, "a", lease_seconds=0.3)
    job = new_trial(a)
    first = trial_of(a, job).user_attrs[LEASE_ATTR]["time"]
    with a.keep_alive(job):
        deadline = time.monotonic() + 30  # a beat every 0.1 s, however loaded the machine
        while trial_of(a, job).user_attrs[LEASE_ATTR]["time"] == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
    renewed = trial_of(a, job).user_attrs[LEASE_ATTR]["time"]
    assert renewed > first
    time.sleep(0.25)
    assert trial_of(a, job).user_attrs[LEASE_ATTR]["time"] == renewed  # no beat after


def test_settings_are_stored_once_and_checked(url, study_name):
    a = store(url, study_name, "a")
    a.check_settings({"max_steps": 4, "space": {}})
    a.check_settings({"max_steps": 4, "space": {}})
    with pytest.raises(InvalidConfigError, match="other settings"):
        store(url, study_name, "b").check_settings({"max_steps": 5, "space": {}})


def test_the_ledger_follows_every_change_and_claims_read_no_trial_list(
    url, study_name, monkeypatch
):
    """The study's ledger equals the steps trained plus claimed after each kind of change,
    so a claim cuts the budget without reading every trial under the lock."""
    a = store(url, study_name, "a")
    reaper = store(url, study_name, "r", lease_seconds=0.05)

    def check():
        assert a._ledger() == a.claimed(a.trials())

    reads = []
    listing = a.trials
    monkeypatch.setattr(a, "trials", lambda: reads.append(1) or listing())
    first = a.start({"lr": 0.01}, SPACE, {}, 2, budget=100)
    second = a.start({"lr": 0.02}, SPACE, {}, 3, budget=100)
    assert reads == [1]  # only the very first claim, to create the ledger
    monkeypatch.setattr(a, "trials", listing)
    check()
    a.report(first, [0.1, 0.2], final=False)
    check()
    assert a.fail(second, "boom")
    check()
    third = a.claim(trial_of(a, first), 4, budget=100)
    assert a.pause(third)
    check()
    fourth = a.claim(trial_of(a, first), 3, budget=100)
    time.sleep(0.1)  # its worker dies; the reaper pauses it
    assert reaper.reclaim_abandoned(reaper.trials()) == 1
    check()
    assert a.steps_used() == 2 and a._ledger() == 2
    assert fourth.to_step == 3


def test_a_ledger_left_too_high_by_a_killed_worker_heals(url, study_name, monkeypatch):
    """A worker killed between counting its claim and writing it leaves the ledger too
    high (never too low); once it says the budget is spent, it is recounted."""
    a = store(url, study_name, "a")
    job = a.start({"lr": 0.01}, SPACE, {}, 2, budget=4)
    a.report(job, [0.1, 0.2], final=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the worker dies right after its claim was counted

    monkeypatch.setattr(a.storage, "create_new_trial", killed)
    with pytest.raises(KeyboardInterrupt):
        a.start({"lr": 0.02}, SPACE, {}, 2, budget=4)
    monkeypatch.undo()
    assert a._ledger() == 4 and a.claimed(a.trials()) == 2  # the drift
    b = store(url, study_name, "b")
    healed = b.start({"lr": 0.03}, SPACE, {}, 2, budget=4)
    assert healed.to_step == 2 and b._ledger() == 4
    with pytest.raises(BudgetTaken):
        b.start({"lr": 0.04}, SPACE, {}, 1, budget=4)
