"""Freeze-thaw Bayesian optimisation (ifBO) on an optuna study.

Every configuration is one optuna trial. Its learning curve is the trial's intermediate
values (step -> value); the trial is RUNNING while a worker trains it, WAITING while it is
paused (frozen), COMPLETE once it reached ``max_steps`` (its value is the final one), FAIL
when the objective raised or returned NaN. The whole state lives in the study's storage,
so a restarted loop rebuilds it from there and loses nothing, and several workers on one
RDB storage cooperate: a paused configuration is claimed by the atomic WAITING -> RUNNING
transition, so no configuration is trained twice for the same steps. A worker that dies
leaves its trial RUNNING with a lease that expires; other workers then pause and resume it.

Every change a worker makes rests on a read of the study that another worker may have made
stale in between: a claim, a pause or a report then finds the trial moved on (resumed,
paused or finished elsewhere). Such a change is not made and the worker goes on: a lost
claim is no claim (``ask`` reads the study again and picks again), a stale pause is skipped,
and a report, failure or pause for a trial that is no longer the job's (its worker, RUNNING,
at ``from_step`` steps) raises ``TrialLost`` or does nothing, never touching the new
owner's work and never failing with optuna's ``UpdateFinishedTrialError``.

Acquisition (ifBO's MFPI-random): draw a horizon h uniformly in 1..max_steps and a
threshold tau = f_best + 10^U(-4, -1) * (1 - f_best) above the incumbent (values mapped to
[0, 1], higher is better); score every candidate, paused configurations and fresh random
samples, by P(value at min(steps + h, max_steps) > tau) under the FT-PFN surrogate; advance
the best one by ``step_size`` steps (ifBO: one).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfnkit.exceptions import InvalidConfigError, PfnkitError
from pfnkit.hpo.space import encode, load_space, sample_configs
from pfnkit.hpo.surrogate import Curve, FreezeThawSurrogate

STEPS_ATTR = "pfnkit_steps"
LEASE_ATTR = "pfnkit_lease"
ERROR_ATTR = "pfnkit_error"
TAG_ATTR = "pfnkit_tag"
SETTINGS_ATTR = "pfnkit_freeze_thaw"


@dataclass
class Job:
    """One unit of work: train ``params`` from ``from_step`` to ``to_step``.

    ``checkpoint_dir`` is this configuration's own directory (when the loop has an
    ``artifacts_dir``): save the model there at ``to_step`` and load it back at
    ``from_step`` when the configuration is resumed.
    """

    trial_number: int
    params: dict[str, Any]
    from_step: int
    to_step: int
    checkpoint_dir: Path | None
    trial_id: int = field(repr=False, default=-1)
    worker: str = field(repr=False, default="")


class TrialLost(PfnkitError):
    """The configuration was taken over by another worker (its lease expired)."""


class BadObjectiveValues(InvalidConfigError):
    """The objective's return value is not one number per step; the trial is failed."""


def objective_values(values: Any, job: Job) -> list[float]:
    """The objective's return value as one float per step of ``job``.

    A real number (not a bool) is one value; a list, tuple or array of real numbers is one
    value per step. Anything else (a string, bytes, a dict, None, ...) is refused: iterating
    it would turn ``"1"`` into 1.0 silently. Raises ``BadObjectiveValues``.
    """
    expected = job.to_step - job.from_step
    steps = f"steps {job.from_step + 1}..{job.to_step}"
    shape = (
        f"The objective must return {expected} number(s), the values at {steps} "
        "(a float, or a list of floats)"
    )

    def real(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)

    if real(values):
        vals: list[Any] = [values]
    elif isinstance(values, np.ndarray) and values.ndim <= 1:
        vals = values.reshape(-1).tolist()
    elif isinstance(values, list | tuple):
        vals = list(values)
    else:
        raise BadObjectiveValues(f"{shape}. Got {type(values).__name__} {values!r:.80}.")
    bad = [v for v in vals if not real(v)]
    if bad:
        raise BadObjectiveValues(
            f"{shape}. Got a {type(values).__name__} holding {type(bad[0]).__name__} "
            f"{bad[0]!r:.80}."
        )
    if len(vals) != expected:
        raise BadObjectiveValues(f"{shape}. Got {len(vals)} value(s).")
    return [float(v) for v in vals]


@functools.lru_cache(maxsize=65536)
def _tag(trial_number: int) -> float:
    """Fallback curve tag of a trial created without one."""
    return float(np.random.default_rng([trial_number, 20240917]).random())


class FreezeThaw:
    """Ask/tell freeze-thaw optimiser whose state is an optuna study.

    Args:
        space: optuna distributions (a dict), or a YAML space file / dict of specs.
        max_steps: the full training length of a configuration (epochs, say).
        surrogate: "default" (the bundled FT-PFN), a checkpoint path, or a
            ``FreezeThawSurrogate``.
        study: an optuna ``Study`` to use; else one is created or loaded from
            ``storage`` and ``study_name``.
        storage: optuna storage URL (e.g. "sqlite:///study.db") or object; None keeps the
            study in memory.
        study_name: name of the study in the storage.
        direction: "maximize" or "minimize" the reported values.
        value_range: (low, high) the values lie in (high None: the largest seen so far);
            used to map values to [0, 1] for the surrogate.
        step_size: steps each ask advances a configuration by.
        n_fresh: fresh random configurations scored per ask. The best of many noisy
            scores is optimistic, so more fresh candidates mean more exploring and fewer
            configurations trained to the end; on the LCBench dev tasks 16 beat 4 and 64
            (README, "Freeze-thaw HPO").
        lease_seconds: a RUNNING configuration whose worker has not renewed its lease for
            this long is considered abandoned and may be resumed by another worker. While
            the objective runs, ``optimize`` renews the lease every ``lease_seconds / 3``
            (``keep_alive``), so a lease expires only when its worker is gone (or stalled
            for ``lease_seconds``), however long a job takes.
        artifacts_dir: parent directory of the per-configuration checkpoint directories.
        seed: seeds fresh configurations and the acquisition's random horizon/threshold.
        max_failures: ``optimize`` stops with an error after this many failures in a row.
    """

    def __init__(
        self,
        space: Any,
        *,
        max_steps: int,
        surrogate: Any = "default",
        study: Any = None,
        storage: Any = None,
        study_name: str | None = None,
        direction: str = "maximize",
        value_range: tuple[float, float | None] = (0.0, 1.0),
        step_size: int = 1,
        n_fresh: int = 16,
        lease_seconds: float = 600.0,
        artifacts_dir: str | Path | None = None,
        seed: int | None = None,
        max_failures: int = 10,
    ) -> None:

        if not isinstance(max_steps, int) or max_steps < 1:
            raise InvalidConfigError(
                f"The 'max_steps' parameter must be an int >= 1. Got {max_steps!r}."
            )
        if direction not in ("maximize", "minimize"):
            raise InvalidConfigError(
                f"The 'direction' parameter must be 'maximize' or 'minimize'. Got {direction!r}."
            )
        if not isinstance(step_size, int) or step_size < 1:
            raise InvalidConfigError(
                f"The 'step_size' parameter must be an int >= 1. Got {step_size!r}."
            )
        for name, value in (("n_fresh", n_fresh), ("max_failures", max_failures)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(
                    f"The '{name}' parameter must be an int >= 1. Got {value!r}."
                )
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, int | float)
            or not 0 < lease_seconds < math.inf
        ):
            raise InvalidConfigError(
                f"The 'lease_seconds' parameter must be a number of seconds > 0 (a worker "
                f"renews its lease every lease_seconds/3). Got {lease_seconds!r}."
            )
        lo, hi = value_range
        if hi is not None and not hi > lo:
            raise InvalidConfigError(f"value_range must have high > low. Got {value_range!r}.")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
        ):
            raise InvalidConfigError(
                f"The 'seed' parameter must be None or an int >= 0. Got {seed!r}."
            )
        self.space = load_space(space) if not _all_distributions(space) else dict(space)
        self.max_steps = max_steps
        self.direction = direction
        self.value_range = (float(lo), None if hi is None else float(hi))
        self.step_size = step_size
        self.n_fresh = n_fresh
        self.max_failures = max_failures
        self._feature_cache: dict[int, tuple[np.ndarray, float]] = {}
        self._range_warned = False
        self.lease_seconds = lease_seconds
        self.rng = np.random.default_rng(seed)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # everything that can be refused is checked before the study is created or touched
        if isinstance(surrogate, FreezeThawSurrogate):
            self.surrogate = surrogate
        else:
            self.surrogate = FreezeThawSurrogate(surrogate, seed=0 if seed is None else seed)
        if len(self.space) > self.surrogate.max_hyperparameters:
            raise InvalidConfigError(
                f"The search space has {len(self.space)} hyperparameters but the surrogate "
                f"reads at most {self.surrogate.max_hyperparameters}."
            )
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir is not None else None
        if self.artifacts_dir is not None:
            try:
                self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InvalidConfigError(
                    f"The artifacts directory '{self.artifacts_dir}' cannot be created "
                    f"({e.strerror or e}). Pass a directory you can write to (--artifacts)."
                ) from None
        if study is None:
            study = _open_study(storage, study_name, direction)
        if study.direction.name.lower() != direction:
            raise InvalidConfigError(
                f"Study '{study.study_name}' was created to {study.direction.name.lower()}; "
                f"this loop was asked to {direction}. Use the same direction or another study."
            )
        self.study = study
        self._check_settings()

    # ------------------------------------------------------------------ study state

    @property
    def _storage(self) -> Any:
        return self.study._storage

    def _check_settings(self) -> None:
        """Store the loop's settings in the study; refuse to mix incompatible runs."""
        from optuna.distributions import distribution_to_json

        settings = {
            "max_steps": self.max_steps,
            "space": {k: distribution_to_json(v) for k, v in self.space.items()},
        }
        stored = self.study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            self.study.set_user_attr(SETTINGS_ATTR, settings)
        elif stored != settings:
            raise InvalidConfigError(
                f"Study '{self.study.study_name}' was run with other settings "
                f"(max_steps={stored.get('max_steps')}, space {sorted(stored.get('space', {}))})."
                " Resume it with the same space and max_steps, or start a new study."
            )

    def _trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def steps_used(self) -> int:
        """Steps trained so far over all configurations (the budget spent)."""
        return sum(int(t.user_attrs.get(STEPS_ATTR, 0)) for t in self._trials())

    def _reclaim_abandoned(self, trials: list[Any]) -> bool:
        """Pause RUNNING trials whose lease expired; True if any was paused.

        ``trials`` is a snapshot that may be stale: a trial is paused only if it is still
        RUNNING under the very lease seen there (not told, finished or resumed since). Its
        lease is revoked before it is paused, so the worker that held it can no longer
        report for it, even before another worker's claim writes a new lease. What is left
        is the gap between the check and the revocation (two storage calls, on a trial whose
        worker has been silent for ``lease_seconds``).
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now = time.time()
        paused = False
        for t in trials:
            if t.state != TrialState.RUNNING or STEPS_ATTR not in t.user_attrs:
                continue
            lease = t.user_attrs.get(LEASE_ATTR) or {}
            if now - float(lease.get("time", 0.0)) <= self.lease_seconds:
                continue
            current = self._storage.get_trial(t._trial_id)
            if current.state != TrialState.RUNNING or current.user_attrs.get(LEASE_ATTR) != (
                t.user_attrs.get(LEASE_ATTR)
            ):
                continue  # reported, finished or resumed since the snapshot
            revoked = {"worker": None, "time": time.time(), "reclaimed_by": self.worker}
            try:
                self._storage.set_trial_user_attr(t._trial_id, LEASE_ATTR, revoked)
                self._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
            except UpdateFinishedTrialError:
                continue  # its worker finished it after all
            paused = True
        return paused

    def _holds(self, trial: Any, job: Job) -> bool:
        """Whether ``trial`` (freshly read) is still ``job``'s to report for."""
        from optuna.trial import TrialState

        lease = trial.user_attrs.get(LEASE_ATTR) or {}
        return (
            trial.state == TrialState.RUNNING
            and int(trial.user_attrs.get(STEPS_ATTR, -1)) == job.from_step
            and lease.get("worker") == job.worker
        )

    def _normalise(self, values: np.ndarray, high: float) -> np.ndarray:
        lo = self.value_range[0]
        z = (values - lo) / (high - lo)
        return 1.0 - z if self.direction == "minimize" else z

    def _curve_values(self, t: Any) -> np.ndarray:
        n = int(t.user_attrs.get(STEPS_ATTR, 0))
        iv = t.intermediate_values
        return np.asarray([iv[s] for s in range(1, n + 1) if s in iv], dtype=np.float64)

    # ------------------------------------------------------------------ ask / tell

    def ask(self, *, max_train: int | None = None, budget: int | None = None) -> Job | None:
        """The next job: a configuration (new or paused) and the steps to train it for:
        ``step_size`` steps, fewer at ``max_steps`` or when ``max_train`` is smaller.

        ``budget`` is the study's total budget in steps: the job is cut to what is left of
        it once the steps trained and the steps other workers are training now (under a
        live lease) are counted, read just before the claim. Returns None when the budget
        is spent or taken that way, or when no configuration can be made.
        """
        from optuna.trial import TrialState

        for _attempt in range(20):
            trials = self._trials()
            if self._reclaim_abandoned(trials):
                trials = self._trials()
            ours = [t for t in trials if STEPS_ATTR in t.user_attrs]
            observed = [
                (t, self._curve_values(t))
                for t in ours
                if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
            ]
            observed = [(t, v) for t, v in observed if v.size]
            paused = [
                t
                for t in ours
                if t.state == TrialState.WAITING and int(t.user_attrs[STEPS_ATTR]) < self.max_steps
            ]
            fresh = sample_configs(self.space, self.n_fresh, self.rng)
            tags = self.rng.random(len(fresh)).tolist()
            choice = self._choose(observed, paused, fresh, tags)
            if budget is not None:
                left = budget - self._committed(self._trials())
                if left <= 0:
                    return None
                max_train = left if max_train is None else min(max_train, left)
            if isinstance(choice, int):
                return self._start(fresh[choice], tags[choice], max_train)
            job = self._resume(choice, max_train)
            if job is not None:
                return job
        raise PfnkitError("Could not claim a configuration after 20 attempts (heavy contention).")

    def _features(self, trial: Any) -> tuple[np.ndarray, float]:
        """(encoded hyperparameters, curve tag) of a trial; cached, params never change."""
        key = trial._trial_id
        if key not in self._feature_cache:
            tag = trial.user_attrs.get(TAG_ATTR)
            self._feature_cache[key] = (
                encode(trial.params, self.space),
                float(tag) if tag is not None else _tag(trial.number),
            )
        return self._feature_cache[key]

    def _choose(
        self, observed: list[Any], paused: list[Any], fresh: list[dict], tags: list[float]
    ) -> Any:
        """A paused trial, or the index of a fresh configuration, by MFPI-random."""
        if not observed:
            return paused[0] if paused else 0
        highs = [float(v.max()) for _, v in observed]
        high = self.value_range[1] if self.value_range[1] is not None else max(highs)
        if high <= self.value_range[0]:
            high = self.value_range[0] + 1.0
        curves = [
            Curve(*self._features(t), np.clip(self._normalise(v, high), 0.0, 1.0))
            for t, v in observed
        ]
        f_best = float(max(c.values.max() for c in curves))
        f_best = min(max(f_best, 0.0), 1.0)
        tau = f_best + 10 ** self.rng.uniform(-4, -1) * (1.0 - f_best)
        horizon = int(self.rng.integers(1, self.max_steps + 1))
        cand_h = [self._features(t)[0] for t in paused] + [encode(c, self.space) for c in fresh]
        cand_tag = [self._features(t)[1] for t in paused] + list(tags)
        cand_steps = [int(t.user_attrs[STEPS_ATTR]) for t in paused] + [0] * len(fresh)
        qstep = np.minimum(np.asarray(cand_steps) + horizon, self.max_steps)
        logits = self.surrogate.logits(
            curves, np.asarray(cand_h), np.asarray(cand_tag), qstep.astype(float), self.max_steps
        )
        score = self.surrogate.prob_above(logits, tau)
        best = np.flatnonzero(score >= score.max() - 1e-12)
        i = int(self.rng.choice(best))
        return paused[i] if i < len(paused) else i - len(paused)

    def _committed(self, trials: list[Any]) -> int:
        """Steps trained plus steps in flight: being trained under a live lease (up to the
        ``to`` step the lease names)."""
        from optuna.trial import TrialState

        now = time.time()
        total = 0
        for t in trials:
            steps = int(t.user_attrs.get(STEPS_ATTR, 0))
            total += steps
            lease = t.user_attrs.get(LEASE_ATTR) or {}
            if (
                t.state == TrialState.RUNNING
                and lease.get("worker") is not None
                and now - float(lease.get("time", 0.0)) <= self.lease_seconds
            ):
                total += max(int(lease.get("to", steps)) - steps, 0)
        return total

    def _to_step(self, from_step: int, max_train: int | None) -> int:
        step = self.step_size if max_train is None else max(min(self.step_size, max_train), 1)
        return min(from_step + step, self.max_steps)

    def _lease_value(self, to_step: int) -> dict[str, Any]:
        return {"worker": self.worker, "time": time.time(), "to": to_step}

    def _lease(self, trial_id: int, to_step: int) -> None:
        self._storage.set_trial_user_attr(trial_id, LEASE_ATTR, self._lease_value(to_step))

    @contextlib.contextmanager
    def keep_alive(self, job: Job) -> Iterator[None]:
        """Renew ``job``'s lease every ``lease_seconds / 3`` while the block runs.

        A heartbeat thread rewrites the lease (the trial's ``pfnkit_lease`` user attribute,
        with the time now) as long as the trial is still the job's; it stops, and is
        joined, before the block's result is told, so a late beat never lands on a trial
        that was paused and claimed by someone else. optuna's own heartbeat
        (``RDBStorage(heartbeat_interval=...)``) fails stale trials instead of pausing them,
        and only for RDB storages, hence this one on the lease attribute. ``optimize`` runs
        every objective call inside it; use it around your own training with ask/tell.
        """
        stop = threading.Event()

        def beat() -> None:
            from optuna.exceptions import UpdateFinishedTrialError

            while not stop.wait(self.lease_seconds / 3):
                try:
                    if not self._holds(self._storage.get_trial(job.trial_id), job):
                        return  # taken over (a stall longer than the lease): tell says so
                    self._lease(job.trial_id, job.to_step)
                except UpdateFinishedTrialError:
                    return
                except Exception as e:  # a storage hiccup: try again at the next beat
                    warnings.warn(
                        f"Renewing the lease of trial {job.trial_number}: {e}", stacklevel=1
                    )

        thread = threading.Thread(target=beat, name=f"pfnkit-lease-{job.trial_number}")
        thread.daemon = True
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _job(self, trial_id: int, number: int, params: dict, from_step: int, to: int) -> Job:
        ckpt = None
        if self.artifacts_dir is not None:
            ckpt = self.artifacts_dir / f"trial-{number}"
            ckpt.mkdir(parents=True, exist_ok=True)
        return Job(number, dict(params), from_step, to, ckpt, trial_id, self.worker)

    def _start(self, params: dict[str, Any], tag: float, max_train: int | None) -> Job:
        from optuna.trial import TrialState, create_trial

        to = self._to_step(0, max_train)
        template = create_trial(
            state=TrialState.RUNNING,
            params=params,
            distributions=self.space,
            user_attrs={
                STEPS_ATTR: 0,
                TAG_ATTR: tag,
                LEASE_ATTR: self._lease_value(to),
            },
        )
        trial_id = self._storage.create_new_trial(self.study._study_id, template_trial=template)
        number = self._storage.get_trial_number_from_id(trial_id)
        try:
            return self._job(trial_id, number, params, 0, to)
        except OSError as e:  # its checkpoint directory: fail the trial, leave no RUNNING one
            reason = f"Cannot create the checkpoint directory of trial {number}: {e}"
            self._storage.set_trial_user_attr(trial_id, ERROR_ATTR, reason[:500])
            self._storage.set_trial_state_values(trial_id, TrialState.FAIL)
            raise InvalidConfigError(f"{reason}. Check the artifacts directory.") from None

    def _resume(self, trial: Any, max_train: int | None) -> Job | None:
        """Claim the paused ``trial`` (from a snapshot that may be stale) and make its job;
        None if another worker got there first."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        # the atomic claim: only one worker moves a paused trial to RUNNING. It returns
        # False when another worker claimed it first, and raises when another worker
        # finished (or failed) it since the snapshot: both mean "not claimed".
        try:
            if not self._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                return None
            to = self._to_step(int(trial.user_attrs[STEPS_ATTR]), max_train)
            self._lease(trial._trial_id, to)
        except UpdateFinishedTrialError:
            return None
        fresh = self._storage.get_trial(trial._trial_id)
        lease = fresh.user_attrs.get(LEASE_ATTR) or {}
        steps = int(fresh.user_attrs[STEPS_ATTR])
        if (
            fresh.state != TrialState.RUNNING
            or lease.get("worker") != self.worker
            or steps >= self.max_steps
        ):
            return None  # a late report of an older owner moved it on under the claim
        if steps != int(trial.user_attrs[STEPS_ATTR]):  # trained elsewhere since the snapshot
            to = self._to_step(steps, max_train)
            self._lease(trial._trial_id, to)
        return self._job(trial._trial_id, trial.number, fresh.params, steps, to)

    def tell(self, job: Job, values: float | Sequence[float]) -> None:
        """Record the values at steps from_step+1 .. to_step and pause (or finish) the job.

        A return value that is not one real number per step (a string, bytes, a dict,
        None, a list of the wrong length) fails the configuration, once, and raises
        ``BadObjectiveValues``. NaN or infinite values mark the configuration failed.
        Raises ``TrialLost``, recording nothing, when the configuration is no longer the
        job's (another worker took it over after its lease expired).

        Values outside ``value_range`` are recorded as returned, since they are the metric
        the study reports and ``best`` ranks, but the surrogate sees them clipped to the
        range, and a warning (once per loop) names the value and the fix. Refusing them
        would throw away real results (a loss above a guessed bound); accepting them
        silently would hide a wrong ``--value-low/--value-high``, which flattens the
        surrogate's view of every curve beyond it.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        lost = TrialLost(
            f"Trial {job.trial_number} was taken over by another worker; its result for "
            f"steps {job.from_step + 1}..{job.to_step} is discarded."
        )
        try:
            vals = objective_values(values, job)
        except BadObjectiveValues as e:
            if not self.fail(job, str(e)):
                raise lost from None
            raise
        if not self._holds(self._storage.get_trial(job.trial_id), job):
            raise lost
        self._warn_out_of_range(vals)
        if not all(math.isfinite(v) for v in vals):
            if not self.fail(job, f"objective returned a non-finite value: {vals}"):
                raise lost
            return
        try:
            for k, v in enumerate(vals):
                self._storage.set_trial_intermediate_value(job.trial_id, job.from_step + 1 + k, v)
            self._storage.set_trial_user_attr(job.trial_id, STEPS_ATTR, job.to_step)
            if job.to_step >= self.max_steps:
                self._storage.set_trial_state_values(job.trial_id, TrialState.COMPLETE, [vals[-1]])
            else:
                self._storage.set_trial_state_values(job.trial_id, TrialState.WAITING)
        except UpdateFinishedTrialError as e:  # the new owner finished it meanwhile
            raise lost from e

    def _warn_out_of_range(self, vals: list[float]) -> None:
        lo, hi = self.value_range
        out = [v for v in vals if math.isfinite(v) and (v < lo or (hi is not None and v > hi))]
        if out and not self._range_warned:
            self._range_warned = True
            high = "the largest value seen" if hi is None else f"{hi:g}"
            warnings.warn(
                f"The objective returned {out[0]:g}, outside the value range [{lo:g}, {high}]"
                " that maps values for the surrogate; it is recorded as returned, but the "
                "surrogate sees it clipped to the range. Set value_range "
                "(--value-low/--value-high) to the bounds the metric can take.",
                UserWarning,
                stacklevel=3,
            )

    def fail(self, job: Job, reason: str) -> bool:
        """Mark the job's configuration failed (the loop goes on with others).

        Returns False, changing nothing, when the configuration is no longer the job's:
        another worker took it over, or it is finished already.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if not self._holds(self._storage.get_trial(job.trial_id), job):
            return False
        try:
            self._storage.set_trial_user_attr(job.trial_id, ERROR_ATTR, reason[:500])
            self._storage.set_trial_state_values(job.trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False
        return True

    # ------------------------------------------------------------------ the loop

    def optimize(
        self,
        objective: Callable[[Job], float | Sequence[float]],
        budget: int,
        *,
        callback: Callable[[FreezeThaw, Job], None] | None = None,
    ) -> None:
        """Run ask -> objective -> tell until the study has used ``budget`` steps in all.

        The budget is shared: several workers on one study stop together. Each job is cut
        to the budget left once the steps trained and those other workers are training now
        are counted (``ask(budget=...)``), so workers overspend it only when they claim at
        the same moment (between one's count and its claim, two storage round trips): by
        at most ``step_size`` steps per other worker, and not at all with one worker. A
        worker stops when the budget is trained or taken by jobs in flight elsewhere. An
        objective that raises or returns NaN fails its configuration; the loop goes on.
        """
        if budget < 1:
            raise InvalidConfigError(f"The 'budget' must be >= 1 step. Got {budget}.")
        failures: list[str] = []
        while (left := budget - self.steps_used()) > 0:
            job = self.ask(max_train=left, budget=budget)
            if job is None:
                break
            error = None
            try:
                with self.keep_alive(job):
                    values = objective(job)
                self.tell(job, values)
                trial = self._storage.get_trial(job.trial_id)
                if trial.state.name == "FAIL":
                    error = trial.user_attrs.get(ERROR_ATTR, "?")
            except KeyboardInterrupt:
                self._pause(job)
                raise
            except TrialLost:
                continue
            except BadObjectiveValues as e:  # tell failed the configuration already
                error = str(e)
            except Exception as e:  # the user's code failed: record it and go on
                error = f"{type(e).__name__}: {e}"
                self.fail(job, error)  # unless another worker has the trial by now
            if error is not None:
                failures.append(error)
                if len(failures) >= self.max_failures:
                    raise PfnkitError(
                        f"The objective failed {len(failures)} times in a row; the last error: "
                        f"{failures[-1]}. Fix the objective and run again: the study keeps "
                        "every finished step."
                    )
                continue
            failures.clear()
            if callback is not None:
                callback(self, job)

    def _pause(self, job: Job) -> None:
        """Pause the job's configuration (on an interrupt) if it is still the job's."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if not self._holds(self._storage.get_trial(job.trial_id), job):
            return
        with contextlib.suppress(UpdateFinishedTrialError):  # finished meanwhile
            self._storage.set_trial_state_values(job.trial_id, TrialState.WAITING)

    def best(self) -> tuple[dict[str, Any], float, int] | None:
        """(params, value, steps) of the best configuration: the best final value among
        finished ones, else the best value seen at any step. None before any value."""
        from optuna.trial import TrialState

        sign = 1.0 if self.direction == "maximize" else -1.0
        done = [t for t in self._trials() if t.state == TrialState.COMPLETE and t.value is not None]
        if done:
            t = max(done, key=lambda t: sign * t.value)
            return dict(t.params), float(t.value), int(t.user_attrs.get(STEPS_ATTR, 0))
        seen = [(t, self._curve_values(t)) for t in self._trials() if STEPS_ATTR in t.user_attrs]
        seen = [(t, v) for t, v in seen if v.size]
        if not seen:
            return None
        t, v = max(seen, key=lambda tv: sign * float(tv[1][-1]))
        return dict(t.params), float(v[-1]), int(v.size)


def _all_distributions(space: Any) -> bool:
    from optuna.distributions import BaseDistribution

    return isinstance(space, dict) and all(isinstance(v, BaseDistribution) for v in space.values())


def _open_study(storage: Any, study_name: str | None, direction: str) -> Any:
    """Create or load a study; workers starting together race to create the schema and
    the study, so a collision is retried."""
    import random

    import optuna

    for attempt in range(8):
        try:
            if isinstance(storage, str) and storage.startswith("sqlite"):
                storage_obj: Any = sqlite_storage(storage)
            else:
                storage_obj = storage
            return optuna.create_study(
                storage=storage_obj,
                study_name=study_name,
                direction=direction,  # type: ignore[arg-type]
                load_if_exists=True,
            )
        except Exception as e:  # sqlalchemy OperationalError, DuplicatedStudyError, ...
            if attempt == 7 or storage is None:
                raise PfnkitError(f"Cannot open study {study_name!r} in {storage!r}: {e}") from e
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for other URLs and in-memory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def sqlite_storage(url: str) -> Any:
    """An optuna RDB storage on SQLite whose transactions take the write lock up front.

    SQLite ignores SELECT ... FOR UPDATE, so optuna's WAITING -> RUNNING claim would be a
    read-then-write race between processes; BEGIN IMMEDIATE makes each transaction
    exclusive, which turns the claim into an atomic compare-and-set. Workers wait up to a
    minute for the lock instead of failing.
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
