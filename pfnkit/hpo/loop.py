"""Freeze-thaw Bayesian optimisation (ifBO) on an optuna study: the ask/tell loop.

Every configuration is one optuna trial whose learning curve is the trial's intermediate
values; the shared state (claims, leases, pauses, reports) lives in the study's storage and
is changed only through ``pfnkit.hpo.storage.StudyStore``, atomically under the study's
lock, so a restarted loop rebuilds everything from the storage and several workers on one
study (SQLite, PostgreSQL, a journal file) never train a step twice. Which configuration to
advance is the acquisition's choice (``pfnkit.hpo.acquisition``; ifBO's MFPI-random by
default). This module only wires the two together:

    ask:  snapshot the study -> reclaim abandoned trials -> acquisition picks a candidate
          -> claim it (or create it) under the lock, cut to the budget left -> Job
    tell: record the values and pause (or complete) the trial, if it is still the job's
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pfnkit.exceptions import InvalidConfigError, PfnkitError
from pfnkit.hpo.acquisition import Candidate, resolve_acquisition
from pfnkit.hpo.space import encode, load_space, sample_configs
from pfnkit.hpo.storage import (
    ERROR_ATTR,
    LEASE_ATTR,
    SETTINGS_ATTR,
    STEPS_ATTR,
    TAG_ATTR,
    BudgetTaken,
    Claim,
    StudyStore,
    TrialLost,
    open_study,
    sqlite_path,
    sqlite_storage,
)
from pfnkit.hpo.surrogate import Curve, FreezeThawSurrogate

__all__ = [
    "ERROR_ATTR",
    "LEASE_ATTR",
    "SETTINGS_ATTR",
    "STEPS_ATTR",
    "TAG_ATTR",
    "BadObjectiveValues",
    "FreezeThaw",
    "Job",
    "TrialLost",
    "objective_values",
    "sqlite_path",
    "sqlite_storage",
]


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
            for ``lease_seconds``), however long a job takes. Workers on several machines
            compare lease times across their clocks: keep them synchronised (NTP) to well
            within ``lease_seconds``.
        acquisition: "mfpi-random" (ifBO's, the default) or an ``Acquisition`` object
            (``pfnkit.hpo.acquisition``).
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
        acquisition: Any = "mfpi-random",
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
        self.lease_seconds = lease_seconds
        self._feature_cache: dict[int, tuple[np.ndarray, float]] = {}
        self._range_warned = False
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
        self.acquisition = resolve_acquisition(acquisition, self.surrogate)
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
            study = open_study(storage, study_name, direction)
        if study.direction.name.lower() != direction:
            raise InvalidConfigError(
                f"Study '{study.study_name}' was created to {study.direction.name.lower()}; "
                f"this loop was asked to {direction}. Use the same direction or another study."
            )
        self.study = study
        self.store = StudyStore(study, worker=self.worker, lease_seconds=lease_seconds)
        from optuna.distributions import distribution_to_json

        self.store.check_settings(
            {
                "max_steps": self.max_steps,
                "space": {k: distribution_to_json(v) for k, v in self.space.items()},
            }
        )

    # ------------------------------------------------------------------ reading the study

    def steps_used(self) -> int:
        """Steps trained so far over all configurations (the budget spent)."""
        return self.store.steps_used()

    def _normalise(self, values: np.ndarray, high: float) -> np.ndarray:
        lo = self.value_range[0]
        z = (values - lo) / (high - lo)
        return 1.0 - z if self.direction == "minimize" else z

    def _curve_values(self, t: Any) -> np.ndarray:
        n = int(t.user_attrs.get(STEPS_ATTR, 0))
        iv = t.intermediate_values
        return np.asarray([iv[s] for s in range(1, n + 1) if s in iv], dtype=np.float64)

    def _features(self, trial: Any) -> tuple[np.ndarray, float]:
        """(encoded hyperparameters, curve tag) of a trial; cached, params never change."""
        key = trial.number
        if key not in self._feature_cache:
            tag = trial.user_attrs.get(TAG_ATTR)
            self._feature_cache[key] = (
                encode(trial.params, self.space),
                float(tag) if tag is not None else _tag(trial.number),
            )
        return self._feature_cache[key]

    def _curves(self, trials: list[Any]) -> list[Curve]:
        """The observed curves of the snapshot, values mapped to [0, 1] (higher is better)."""
        from optuna.trial import TrialState

        live = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
        observed = [
            (t, self._curve_values(t))
            for t in trials
            if STEPS_ATTR in t.user_attrs and t.state in live
        ]
        observed = [(t, v) for t, v in observed if v.size]
        if not observed:
            return []
        high = self.value_range[1]
        if high is None:
            high = max(float(v.max()) for _, v in observed)
        if high <= self.value_range[0]:
            high = self.value_range[0] + 1.0
        return [
            Curve(*self._features(t), np.clip(self._normalise(v, high), 0.0, 1.0))
            for t, v in observed
        ]

    # ------------------------------------------------------------------ ask / tell

    def ask(self, *, max_train: int | None = None, budget: int | None = None) -> Job | None:
        """The next job: a configuration (new or paused) and the steps to train it for:
        ``step_size`` steps, fewer at ``max_steps`` or when ``max_train`` is smaller.

        ``budget`` is the study's total budget in steps: the job is cut to what is left of
        it once the steps trained and the steps other workers are training now (under a
        live lease) are counted, in the same atomic step as the claim, so workers never
        overspend it. Returns None when the budget is spent or taken that way.
        """
        from optuna.trial import TrialState

        for _attempt in range(50):
            trials = self.store.trials()
            if self.store.reclaim_abandoned(trials):
                trials = self.store.trials()
            if budget is not None and budget - self.store.committed(trials) <= 0:
                return None
            paused = [
                t
                for t in trials
                if t.state == TrialState.WAITING
                and STEPS_ATTR in t.user_attrs
                and int(t.user_attrs[STEPS_ATTR]) < self.max_steps
            ]
            fresh = sample_configs(self.space, self.n_fresh, self.rng)
            tags = self.rng.random(len(fresh)).tolist()
            i = self._choose(self._curves(trials), paused, fresh, tags)
            claim: Claim | None
            try:
                if i >= len(paused):
                    k = i - len(paused)
                    attrs = {TAG_ATTR: tags[k]}
                    claim = self.store.start(
                        fresh[k], self.space, attrs, self._to_step(0, max_train), budget=budget
                    )
                else:
                    t = paused[i]
                    to = self._to_step(int(t.user_attrs[STEPS_ATTR]), max_train)
                    claim = self.store.claim(t, to, budget=budget)
            except BudgetTaken:
                return None
            if claim is not None:
                return self._job(claim)
            # the snapshot was stale (another worker moved that trial on): look again
        raise PfnkitError("Could not claim a configuration after 50 attempts (heavy contention).")

    def _choose(
        self, curves: list[Curve], paused: list[Any], fresh: list[dict], tags: list[float]
    ) -> int:
        """Index into paused + fresh of the configuration to advance."""
        if not curves:
            return 0  # nothing observed yet: the first paused one, else a fresh one
        candidates = [Candidate(*self._features(t), int(t.user_attrs[STEPS_ATTR])) for t in paused]
        candidates += [Candidate(encode(c, self.space), tag, 0) for c, tag in zip(fresh, tags)]
        return self.acquisition.select(curves, candidates, max_steps=self.max_steps, rng=self.rng)

    def _to_step(self, from_step: int, max_train: int | None) -> int:
        step = self.step_size if max_train is None else max(min(self.step_size, max_train), 1)
        return min(from_step + step, self.max_steps)

    def _job(self, claim: Claim) -> Job:
        job = Job(
            claim.number,
            claim.params,
            claim.from_step,
            claim.to_step,
            None,
            claim.trial_id,
            claim.worker,
        )
        if self.artifacts_dir is None:
            return job
        try:
            job.checkpoint_dir = self.artifacts_dir / f"trial-{claim.number}"
            job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # fail the trial: leave no RUNNING one behind
            reason = f"Cannot create the checkpoint directory of trial {claim.number}: {e}"
            self.store.fail(job, reason)
            raise InvalidConfigError(f"{reason}. Check the artifacts directory.") from None
        return job

    @contextlib.contextmanager
    def keep_alive(self, job: Job) -> Iterator[None]:
        """Renew ``job``'s lease every ``lease_seconds / 3`` while the block runs, so it
        expires only when this worker is gone. ``optimize`` runs every objective call in
        it; use it around your own training with ask/tell."""
        with self.store.keep_alive(job):
            yield

    def tell(self, job: Job, values: float | Sequence[float]) -> bool:
        """Record the values at steps from_step+1 .. to_step and pause (or finish) the job;
        True when recorded, False when the values were not finite and the configuration
        was failed instead.

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
        try:
            vals = objective_values(values, job)
        except BadObjectiveValues as e:
            if not self.fail(job, str(e)):
                raise self.store._lost(job) from None
            raise
        self._warn_out_of_range(vals)
        if not all(math.isfinite(v) for v in vals):
            if not self.fail(job, f"objective returned a non-finite value: {vals}"):
                raise self.store._lost(job)
            return False
        self.store.report(job, vals, final=job.to_step >= self.max_steps)
        return True

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
        return self.store.fail(job, reason)

    def pause(self, job: Job) -> bool:
        """Pause the job's configuration, keeping its steps (False if no longer the job's)."""
        return self.store.pause(job)

    # ------------------------------------------------------------------ the loop

    def optimize(
        self,
        objective: Callable[[Job], float | Sequence[float]],
        budget: int,
        *,
        callback: Callable[[FreezeThaw, Job], None] | None = None,
    ) -> None:
        """Run ask -> objective -> tell until the study has trained ``budget`` steps.

        The budget is shared: several workers on one study stop together, and never
        overspend it (each claim is cut to what is left, counting the jobs in flight, in
        one atomic step). A worker that finds the rest of the budget in flight elsewhere
        waits for it: a job that fails, or whose worker dies (its lease expires), comes
        back and is trained here. An objective that raises or returns NaN fails its
        configuration; the loop goes on.
        """
        if budget < 1:
            raise InvalidConfigError(f"The 'budget' must be >= 1 step. Got {budget}.")
        failures: list[str] = []
        wait = 0.05
        while True:
            job = self.ask(budget=budget)
            if job is None:  # the budget is trained, or the rest is in flight elsewhere
                if self.steps_used() >= budget:
                    return
                time.sleep(wait)  # wait for those jobs to land, or to come back
                wait = min(wait * 2, max(self.lease_seconds / 6, 0.05), 2.0)
                continue
            wait = 0.05
            error = None
            try:
                with self.keep_alive(job):
                    values = objective(job)
                if not self.tell(job, values):
                    error = f"objective returned a non-finite value: {values!r:.200}"
            except KeyboardInterrupt:
                self.pause(job)
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

    def best(self) -> tuple[dict[str, Any], float, int] | None:
        """(params, value, steps) of the best configuration: the best final value among
        finished ones, else the best value seen at any step. None before any value."""
        from optuna.trial import TrialState

        sign = 1.0 if self.direction == "maximize" else -1.0
        trials = self.store.trials()
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if done:
            t = max(done, key=lambda t: sign * t.value)
            return dict(t.params), float(t.value), int(t.user_attrs.get(STEPS_ATTR, 0))
        seen = [(t, self._curve_values(t)) for t in trials if STEPS_ATTR in t.user_attrs]
        seen = [(t, v) for t, v in seen if v.size]
        if not seen:
            return None
        t, v = max(seen, key=lambda tv: sign * float(tv[1][-1]))
        return dict(t.params), float(v[-1]), int(v.size)


def _all_distributions(space: Any) -> bool:
    from optuna.distributions import BaseDistribution

    return isinstance(space, dict) and all(isinstance(v, BaseDistribution) for v in space.values())
