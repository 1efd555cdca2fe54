"""A freeze-thaw study's shared state in an optuna storage: claim, lease, pause, report.

Every configuration is one optuna trial. Its learning curve is the trial's intermediate
values (step -> value) and ``pfnkit_steps`` the steps trained; the trial is RUNNING while a
worker trains it under a lease (``pfnkit_lease``: worker, time, the step it trains to),
WAITING while it is paused, COMPLETE at ``max_steps``, FAIL when its objective failed.

Several workers (processes, machines) share one study. Each change of the shared state is
a read-check-write done under the study's lock (``StudyLock``), so it is atomic against the
other workers' changes:

- **claim** a paused configuration (or create a new one): only if it is still WAITING at
  the steps the worker saw, and only up to the budget left once the steps trained and the
  steps other workers are training now are counted: no two workers train the same step,
  and together they never overspend the budget;
- **renew** the lease (a heartbeat while the objective runs), **report** values, **fail**
  or **pause**: only while the trial is still the worker's (RUNNING, its lease, at the
  steps it claimed); otherwise nothing is written and the worker learns it lost the trial;
- **reclaim**: a RUNNING trial whose lease was not renewed for ``lease_seconds`` is paused
  (its worker is gone), so another worker resumes it.

The lock per backend: SQLite and optuna's journal file, a POSIX file lock beside the file
(released by the kernel when its holder dies; works on NFS with a lock manager);
PostgreSQL, a transaction-level advisory lock (released when the holder's connection
closes); an in-memory study, a thread lock. Other RDB dialects (MySQL) get a thread lock
only, with a warning: run several processes on them at your own risk.

Where optuna has a public API it is used: ``optuna.create_study``/``load_study``,
``RDBStorage``, ``JournalStorage``/``JournalFileBackend``, ``create_trial``, and the
``BaseStorage`` methods documented for storage implementations (``get_trial``,
``set_trial_state_values``, ``set_trial_user_attr``, ...). optuna has none for: the storage
behind a ``Study`` (``study._storage``), a trial's storage id (``FrozenTrial._trial_id``),
the engine behind its storage cache (``_CachedStorage._backend``) and the file behind a
``JournalStorage`` (for its lock); these private reads are made here and nowhere else.
optuna's own heartbeat (``RDBStorage(heartbeat_interval=...)``) fails a stale trial rather
than pausing it, and exists only for RDB storages, hence the lease.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pfnkit.exceptions import InvalidConfigError, PfnkitError

STEPS_ATTR = "pfnkit_steps"
LEASE_ATTR = "pfnkit_lease"
ERROR_ATTR = "pfnkit_error"
TAG_ATTR = "pfnkit_tag"
SETTINGS_ATTR = "pfnkit_freeze_thaw"
LEDGER_ATTR = "pfnkit_claimed"  # study attr: steps trained plus steps claimed and unreported

LOCK_TIMEOUT = 120.0  # seconds a worker waits for the study lock before it gives up


class TrialLost(PfnkitError):
    """The configuration was taken over by another worker (its lease expired)."""


class BudgetTaken(PfnkitError):
    """The budget is trained, or taken by jobs in flight: nothing is left to claim."""


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one configuration: train it from ``from_step`` to ``to_step``."""

    trial_id: int
    number: int
    params: dict[str, Any] = field(hash=False)
    from_step: int
    to_step: int
    worker: str


class Held(Protocol):
    """What the store needs of a held job (a ``Claim``, or the loop's ``Job``)."""

    trial_id: int
    from_step: int
    to_step: int
    worker: str


# ---------------------------------------------------------------- opening a study


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for other URLs and in-memory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def journal_path(url: str) -> Path | None:
    """The log file of a ``journal:PATH`` storage string (``journal:///abs/path.log`` or
    ``journal:relative.log``); None for other strings."""
    if not url.startswith("journal:"):
        return None
    path = url[len("journal:") :]
    if path.startswith("//"):
        path = path[2:]
    return Path(path) if path else None


def sqlite_storage(url: str) -> Any:
    """An optuna RDB storage on SQLite whose transactions take the write lock up front.

    SQLite ignores SELECT ... FOR UPDATE, so optuna's WAITING -> RUNNING claim would be a
    read-then-write race between processes; BEGIN IMMEDIATE makes each transaction
    exclusive. Workers wait up to a minute for the lock instead of failing.
    """
    import optuna
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below open them

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections made before the hooks are dropped
    return storage


def open_storage(storage: Any) -> Any:
    """An optuna storage object for a URL (``sqlite:///``, ``postgresql://``, ... or
    ``journal:PATH``) or a storage object (returned as is); None is in-memory."""
    import optuna

    if storage is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(storage, str):
        return storage
    journal = journal_path(storage)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(journal)))
    if storage.startswith("sqlite"):
        return sqlite_storage(storage)
    return optuna.storages.RDBStorage(storage)


def open_study(storage: Any, study_name: str | None, direction: str) -> Any:
    """Create or load a study; workers starting together race to create the schema and
    the study, so a collision is retried."""
    import random

    import optuna

    for attempt in range(8):
        try:
            return optuna.create_study(
                storage=open_storage(storage),
                study_name=study_name,
                direction=direction,  # type: ignore[arg-type]
                load_if_exists=True,
            )
        except Exception as e:  # sqlalchemy OperationalError, DuplicatedStudyError, ...
            if attempt == 7 or storage is None:
                raise PfnkitError(f"Cannot open study {study_name!r} in {storage!r}: {e}") from e
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the study lock


def _backend(storage: Any) -> Any:
    """The storage behind optuna's RDB cache wrapper (private: optuna has no accessor)."""
    from optuna.storages._cached_storage import _CachedStorage

    return storage._backend if isinstance(storage, _CachedStorage) else storage


_THREAD_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(storage: Any) -> threading.Lock:
    """One lock per storage object, shared by every store of this process on it."""
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(storage, threading.Lock())


class StudyLock:
    """A mutex over one study, shared by every worker of it (see the module docstring).

    ``with lock:`` blocks until it is held, at most ``timeout`` seconds, then raises. It is
    not re-entrant. Each acquisition is separate (its own file descriptor or database
    transaction), so two threads of one process exclude each other as well.
    """

    def __init__(self, storage: Any, study_id: int, *, timeout: float = LOCK_TIMEOUT) -> None:
        import optuna

        self.timeout = timeout
        # what one acquisition holds (its descriptor or connection), per thread: threads of
        # one store share this object, and one thread's release must never touch another's
        self._held = threading.local()
        self._path: Path | None = None
        self._engine: Any = None
        self._key = study_id
        backend = _backend(storage)
        self._thread = _thread_lock(backend)
        self.kind = "thread"
        if isinstance(backend, optuna.storages.RDBStorage):
            url = str(backend.url)
            dialect = backend.engine.dialect.name
            if dialect == "sqlite":
                path = sqlite_path(url)
                if path is not None:
                    self._path, self.kind = Path(f"{path}.pfnkit-lock"), "file"
            elif dialect == "postgresql":
                self._engine, self.kind = backend.engine, "postgresql"
            else:
                warnings.warn(
                    f"pfnkit cannot lock a study on {dialect}; workers in one process are "
                    "safe, but several processes on it may train a step twice. Use "
                    "PostgreSQL, SQLite or a journal file for several workers.",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            if isinstance(backend, JournalStorage):
                log = getattr(backend, "_backend", None)  # private: no accessor either
                if isinstance(log, JournalFileBackend):
                    self._path = Path(f"{log._file_path}.pfnkit-lock")
                    self.kind = "file"

    def __enter__(self) -> StudyLock:
        if self.kind == "file":
            self._held.fd = self._lock_file()
        elif self.kind == "postgresql":
            self._held.conn = self._lock_postgres()
        elif not self._thread.acquire(timeout=self.timeout):
            raise self._timed_out()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "file":
            os.close(self._held.fd)  # closing the descriptor releases its lock
        elif self.kind == "postgresql":
            conn = self._held.conn  # this thread's: another may hold the lock next
            try:
                conn.commit()  # ends the transaction, releasing the xact lock
            finally:
                conn.close()
        else:
            self._thread.release()

    def _timed_out(self) -> PfnkitError:
        return PfnkitError(
            f"Waited {self.timeout:g} s for the study lock ({self.kind}); another worker holds "
            "it (a stopped process?). Resume or kill that worker and run again."
        )

    def _lock_file(self) -> int:
        assert self._path is not None
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
        except ImportError:  # not POSIX: optuna's lock by exclusive file creation
            os.close(fd)
            raise PfnkitError(
                "Several workers on one SQLite or journal file need POSIX file locks "
                "(Linux, macOS). Use PostgreSQL on this platform."
            ) from None
        deadline, pause = time.monotonic() + self.timeout, 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise self._timed_out() from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)

    def _lock_postgres(self) -> Any:
        from sqlalchemy import text

        conn = self._engine.connect()
        try:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(self.timeout * 1000)}ms'"))
            # two-key form: (a constant naming pfnkit, the study id)
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:a, :b)"),
                {"a": zlib.crc32(b"pfnkit") & 0x7FFFFFFF, "b": self._key},
            )
        except Exception as e:
            conn.close()
            if "lock timeout" in str(e).lower():
                raise self._timed_out() from None
            raise
        return conn


# ---------------------------------------------------------------- one worker's handle


def _lease_of(trial: Any) -> dict[str, Any]:
    return trial.user_attrs.get(LEASE_ATTR) or {}


class StudyStore:
    """One worker's handle on a freeze-thaw study's shared state.

    Args:
        study: the optuna ``Study``.
        worker: this worker's unique name (written into its leases).
        lease_seconds: a lease not renewed for this long has expired.
    """

    def __init__(self, study: Any, *, worker: str, lease_seconds: float) -> None:
        if isinstance(lease_seconds, bool) or not (
            isinstance(lease_seconds, int | float) and 0 < lease_seconds < math.inf
        ):
            raise InvalidConfigError(
                f"The 'lease_seconds' parameter must be a number of seconds > 0 (a worker "
                f"renews its lease every lease_seconds/3). Got {lease_seconds!r}."
            )
        self.study = study
        self.storage = study._storage  # private: a Study has no public storage accessor
        self.study_id = self.storage.get_study_id_from_name(study.study_name)
        self.worker = worker
        self.lease_seconds = float(lease_seconds)
        self.lock = StudyLock(self.storage, self.study_id)

    # ------------------------------------------------------------ reads (no lock)

    def trials(self) -> list[Any]:
        """A snapshot of the study's trials (may be stale by the time it is used)."""
        return self.study.get_trials(deepcopy=False)

    def trial(self, trial_id: int) -> Any:
        return self.storage.get_trial(trial_id)

    def steps_used(self, trials: Sequence[Any] | None = None) -> int:
        """Steps trained so far over all configurations."""
        trials = self.trials() if trials is None else trials
        return sum(int(t.user_attrs.get(STEPS_ATTR, 0)) for t in trials)

    def live(self, trial: Any, now: float | None = None) -> bool:
        """Whether ``trial`` is RUNNING under a lease that has not expired."""
        from optuna.trial import TrialState

        lease = _lease_of(trial)
        now = time.time() if now is None else now
        return (
            trial.state == TrialState.RUNNING
            and lease.get("worker") is not None
            and now - float(lease.get("time", 0.0)) <= self.lease_seconds
        )

    def committed(self, trials: Sequence[Any]) -> int:
        """Steps trained plus steps in flight (up to the ``to`` step of each live lease)."""
        now = time.time()
        return self.claimed(trials, lambda t: self.live(t, now))

    @staticmethod
    def claimed(trials: Sequence[Any], counts: Callable[[Any], bool] | None = None) -> int:
        """Steps trained plus steps claimed and not reported, released or reclaimed: what
        the ledger counts. ``counts`` narrows which RUNNING trials' claims count
        (``committed``: live leases only); by default every unrevoked lease counts, expired
        ones too, until they are reclaimed."""
        from optuna.trial import TrialState

        total = 0
        for t in trials:
            steps = int(t.user_attrs.get(STEPS_ATTR, 0))
            total += steps
            lease = _lease_of(t)
            if (
                t.state == TrialState.RUNNING
                and lease.get("worker") is not None
                and (counts is None or counts(t))
            ):
                total += max(int(lease.get("to", steps)) - steps, 0)
        return total

    def holds(self, trial: Any, job: Held) -> bool:
        """Whether ``trial`` (freshly read) is still ``job``'s: RUNNING, under its worker's
        lease, at the step the job started from."""
        from optuna.trial import TrialState

        return (
            trial.state == TrialState.RUNNING
            and int(trial.user_attrs.get(STEPS_ATTR, -1)) == job.from_step
            and _lease_of(trial).get("worker") == job.worker
        )

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Store the loop's settings in the study; refuse to mix incompatible runs."""
        stored = self.study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            with self.lock:
                stored = self.study.user_attrs.get(SETTINGS_ATTR)
                if stored is None:
                    self.study.set_user_attr(SETTINGS_ATTR, settings)
                    return
        if stored != settings:
            raise InvalidConfigError(
                f"Study '{self.study.study_name}' was run with other settings "
                f"(max_steps={stored.get('max_steps')}, space {sorted(stored.get('space', {}))})."
                " Resume it with the same space and max_steps, or start a new study."
            )

    # ------------------------------------------------------------ changes (under the lock)

    def _lease_value(self, to_step: int) -> dict[str, Any]:
        return {"worker": self.worker, "time": time.time(), "to": to_step}

    # The ledger (a study user attribute) holds ``claimed(trials)``, so a claim needs no
    # read of every trial: under the lock, a claim adds its steps to it before the claim is
    # written, and a release (fail, pause, reclaim) subtracts them after the trial changed.
    # A worker killed between the two writes leaves the ledger too high, never too low: the
    # budget is never overspent, and when the ledger says it is spent the ledger is
    # recounted from the trials, which heals that drift.

    def _ledger(self) -> int:
        value = self.storage.get_study_user_attrs(self.study_id).get(LEDGER_ATTR)
        return self._recount() if value is None else int(value)

    def _set_ledger(self, value: int) -> None:
        self.storage.set_study_user_attr(self.study_id, LEDGER_ATTR, int(value))

    def _recount(self) -> int:
        value = self.claimed(self.trials())
        self._set_ledger(value)
        return value

    def _release(self, steps: int) -> None:
        if steps > 0:
            self._set_ledger(self._ledger() - steps)

    def _capped(self, from_step: int, to_step: int, budget: int | None) -> int:
        """``to_step`` cut to the budget left, its steps added to the ledger; raises
        ``BudgetTaken`` when none is left. Called under the lock, so the count and the
        claim that follows are one step."""
        ledger = self._ledger()
        if budget is not None:
            if budget - ledger <= 0:
                ledger = self._recount()  # heal a drift a killed worker may have left
            if budget - ledger <= 0:
                raise BudgetTaken(f"The budget of {budget} steps is trained or in flight.")
            to_step = min(to_step, from_step + budget - ledger)
        self._set_ledger(ledger + to_step - from_step)
        return to_step

    def reclaim_abandoned(self, trials: Sequence[Any]) -> int:
        """Pause the RUNNING trials of the snapshot ``trials`` whose lease expired; the
        number paused. A trial is paused only if it is still RUNNING under the very lease
        seen in the snapshot (not reported, renewed, finished or resumed since)."""
        from optuna.trial import TrialState

        now = time.time()
        stale = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and STEPS_ATTR in t.user_attrs
            and now - float(_lease_of(t).get("time", 0.0)) > self.lease_seconds
        ]
        if not stale:
            return 0
        paused = 0
        with self.lock:
            for t in stale:
                current = self.trial(t._trial_id)
                if current.state != TrialState.RUNNING or _lease_of(current) != _lease_of(t):
                    continue
                revoked = {"worker": None, "time": time.time(), "reclaimed_by": self.worker}
                self.storage.set_trial_user_attr(t._trial_id, LEASE_ATTR, revoked)
                self.storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
                steps = int(current.user_attrs.get(STEPS_ATTR, 0))
                if _lease_of(current).get("worker") is not None:
                    self._release(int(_lease_of(current).get("to", steps)) - steps)
                paused += 1
        return paused

    def start(
        self,
        params: dict[str, Any],
        distributions: dict[str, Any],
        user_attrs: dict[str, Any],
        to_step: int,
        *,
        budget: int | None = None,
    ) -> Claim:
        """Create a new configuration, RUNNING under this worker's lease to ``to_step``
        (cut to the budget). Raises ``BudgetTaken``."""
        from optuna.trial import TrialState, create_trial

        with self.lock:
            to = self._capped(0, to_step, budget)
            template = create_trial(
                state=TrialState.RUNNING,
                params=params,
                distributions=distributions,
                user_attrs={**user_attrs, STEPS_ATTR: 0, LEASE_ATTR: self._lease_value(to)},
            )
            trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        number = self.storage.get_trial_number_from_id(trial_id)
        return Claim(trial_id, number, dict(params), 0, to, self.worker)

    def claim(self, trial: Any, to_step: int, *, budget: int | None = None) -> Claim | None:
        """Resume the paused ``trial`` (from a snapshot that may be stale) to ``to_step``
        (cut to the budget). None, changing nothing, when it is no longer WAITING at the
        steps the snapshot shows (resumed, trained or finished elsewhere since): the
        caller chose on stale information and chooses again. Raises ``BudgetTaken``."""
        from optuna.trial import TrialState

        seen = int(trial.user_attrs.get(STEPS_ATTR, -1))
        with self.lock:
            current = self.trial(trial._trial_id)
            if (
                current.state != TrialState.WAITING
                or int(current.user_attrs.get(STEPS_ATTR, -1)) != seen
            ):
                return None
            to = self._capped(seen, to_step, budget)
            self.storage.set_trial_user_attr(trial._trial_id, LEASE_ATTR, self._lease_value(to))
            if not self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                self._release(to - seen)
                return None  # only a worker outside pfnkit's lock can get here
        return Claim(trial._trial_id, trial.number, dict(current.params), seen, to, self.worker)

    def renew(self, job: Held) -> bool:
        """Renew ``job``'s lease (the time now); False, writing nothing, if the trial is no
        longer the job's."""
        with self.lock:
            if not self.holds(self.trial(job.trial_id), job):
                return False
            self.storage.set_trial_user_attr(
                job.trial_id, LEASE_ATTR, {**self._lease_value(job.to_step), "worker": job.worker}
            )
        return True

    def report(self, job: Held, values: Sequence[float], *, final: bool) -> None:
        """Record ``values`` at steps ``from_step + 1 ..`` and pause the trial (or complete
        it, with the last value, when ``final``). Raises ``TrialLost``, recording nothing,
        when the trial is no longer the job's."""
        from optuna.trial import TrialState

        with self.lock:
            if not self.holds(self.trial(job.trial_id), job):
                raise self._lost(job)
            for k, v in enumerate(values):
                self.storage.set_trial_intermediate_value(job.trial_id, job.from_step + 1 + k, v)
            self.storage.set_trial_user_attr(job.trial_id, STEPS_ATTR, job.to_step)
            if final:
                self.storage.set_trial_state_values(job.trial_id, TrialState.COMPLETE, [values[-1]])
            else:
                self.storage.set_trial_state_values(job.trial_id, TrialState.WAITING)

    def fail(self, job: Held, reason: str) -> bool:
        """Mark the job's trial failed with ``reason``; False, changing nothing, when it is
        no longer the job's (taken over, or finished already)."""
        from optuna.trial import TrialState

        with self.lock:
            if not self.holds(self.trial(job.trial_id), job):
                return False
            self.storage.set_trial_user_attr(job.trial_id, ERROR_ATTR, reason[:500])
            self.storage.set_trial_state_values(job.trial_id, TrialState.FAIL)
            self._release(job.to_step - job.from_step)
        return True

    def pause(self, job: Held) -> bool:
        """Pause the job's trial (its steps so far kept) if it is still the job's."""
        from optuna.trial import TrialState

        with self.lock:
            if not self.holds(self.trial(job.trial_id), job):
                return False
            self.storage.set_trial_state_values(job.trial_id, TrialState.WAITING)
            self._release(job.to_step - job.from_step)
        return True

    def _lost(self, job: Held) -> TrialLost:
        return TrialLost(
            f"Trial {getattr(job, 'trial_number', getattr(job, 'number', job.trial_id))} was "
            f"taken over by another worker; its result for steps {job.from_step + 1}.."
            f"{job.to_step} is discarded."
        )

    @contextlib.contextmanager
    def keep_alive(self, job: Held) -> Iterator[None]:
        """Renew ``job``'s lease every ``lease_seconds / 3`` while the block runs.

        The heartbeat thread stops, and is joined, before the block's result is reported,
        so a late beat never lands on a trial that moved on. A storage error in a beat is
        a warning and the next beat tries again.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / 3):
                try:
                    if not self.renew(job):
                        return  # taken over (a stall longer than the lease): report says so
                except Exception as e:  # a storage hiccup: try again at the next beat
                    warnings.warn(f"Renewing the lease of trial {job.trial_id}: {e}", stacklevel=1)

        thread = threading.Thread(target=beat, name=f"pfnkit-lease-{job.trial_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
