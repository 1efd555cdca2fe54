"""Freeze-thaw against optuna's baselines on one objective under one budget of steps.

``run_method(method, objective, space, budget=..., max_steps=...)`` runs one method on an
objective with the ``Job`` interface (``objective(job)`` returns the values at steps
job.from_step+1..job.to_step) in in-memory studies and records, after every step spent,
the incumbent: the best final (step ``max_steps``) value among configurations trained to
``max_steps`` (None before any finished). The optuna baselines train a configuration one
step at a time and ask their pruner after each step. Used by ``pfnkit hpo bench`` and
``benchmarks/hpo.py``; optuna and the networks are loaded on first use.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pfnkit.exceptions import InvalidConfigError, PfnkitError

if TYPE_CHECKING:
    from pfnkit.hpo.loop import Job

METHODS: dict[str, str] = {
    "ft": "freeze-thaw (pfnkit)",
    "tpe-hb": "TPE + Hyperband",
    "tpe-sh": "TPE + successive halving",
    "random": "random search",
    "random-lcpfn": "random + LC-PFN pruner",
}
FRACTIONS = (0.25, 0.5, 1.0)
MAX_FAILURES = 10  # consecutive failed configurations before a baseline gives up


@dataclass
class BenchRun:
    """One run: the incumbent after each step spent (None before any configuration
    finished), the best value seen at any step so far (ifBO's "anytime" incumbent, which
    also counts unfinished configurations), the wall time of each ``ask`` (freeze-thaw
    only) and of the whole run."""

    method: str
    seed: int
    incumbent: list[float | None]
    ask_times: list[float] = field(default_factory=list)
    run_time: float = 0.0
    anytime: list[float] = field(default_factory=list)

    def at(self, fraction: float) -> float | None:
        """The incumbent once ``fraction`` of the budget is spent."""
        return self.incumbent[fraction_index(len(self.incumbent), fraction)]

    def first_finish(self) -> int | None:
        """Steps spent when the first configuration reached ``max_steps``."""
        return next((i + 1 for i, v in enumerate(self.incumbent) if v is not None), None)


def fraction_index(budget: int, fraction: float) -> int:
    """Index into a trajectory of ``budget`` steps once ``fraction`` of it is spent."""
    return max(round(fraction * budget), 1) - 1


def check_settings(
    methods: Sequence[str], *, budget: int, max_steps: int, direction: str
) -> list[str]:
    """The methods, checked with the other settings; one clear error otherwise."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InvalidConfigError(
            f"Unknown method(s) {', '.join(map(repr, bad)) or '(none given)'}; "
            f"choose from: {', '.join(METHODS)}."
        )
    if budget < 1 or max_steps < 1:
        raise InvalidConfigError(
            f"budget and max_steps must be >= 1. Got budget={budget}, max_steps={max_steps}."
        )
    if direction not in ("maximize", "minimize"):
        raise InvalidConfigError(f"direction must be 'maximize' or 'minimize'. Got {direction!r}.")
    return list(dict.fromkeys(methods))


@cache
def _ft_model(surrogate: str) -> Any:
    from pfnkit.hpo.surrogate import FreezeThawSurrogate

    return FreezeThawSurrogate(surrogate).model


@cache
def _lcpfn_pruner(max_steps: int, value_range: tuple[float, float | None]) -> Any:
    from pfnkit.hpo.pruner import LCPFNPruner

    return LCPFNPruner(max_steps=max_steps, value_range=value_range)  # stateless: shared


def preload(
    methods: Sequence[str],
    *,
    surrogate: str | Path = "default",
    max_steps: int,
    value_range: tuple[float, float | None] = (0.0, 1.0),
) -> None:
    """Load the networks the methods need now, so that no run's time includes it."""
    if "ft" in methods:
        _ft_model(str(surrogate))
    if "random-lcpfn" in methods:
        _lcpfn_pruner(max_steps, (value_range[0], value_range[1]))  # hashable


class _Tracker:
    """The incumbent after each step spent."""

    def __init__(self, budget: int, max_steps: int, direction: str) -> None:
        self.budget, self.max_steps = budget, max_steps
        self.sign = 1.0 if direction == "maximize" else -1.0
        self.best: float | None = None
        self.seen: float | None = None
        self.incumbent: list[float | None] = []
        self.anytime: list[float] = []

    def spend(self, step: int, value: float) -> bool:
        """Count one step of a configuration; True once the budget is spent."""
        if step == self.max_steps and (self.best is None or self.sign * (value - self.best) > 0):
            self.best = value
        if self.seen is None or self.sign * (value - self.seen) > 0:
            self.seen = value
        self.incumbent.append(self.best)
        self.anytime.append(self.seen)
        return len(self.incumbent) >= self.budget


def _values(job: Job, result: Any) -> list[float]:
    """The objective's values for the job's steps; ValueError for a bad answer."""
    from pfnkit.hpo.loop import objective_values

    vals = objective_values(result, job)  # BadObjectiveValues is a ValueError
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"objective returned a non-finite value: {vals}")
    return vals


def run_method(
    method: str,
    objective: Callable[[Job], Any],
    space: dict[str, Any],
    *,
    budget: int,
    max_steps: int,
    seed: int = 0,
    direction: str = "maximize",
    value_range: tuple[float, float | None] = (0.0, 1.0),
    surrogate: str | Path = "default",
    study_name: str | None = None,
    n_fresh: int | None = None,
    artifacts_dir: str | Path | None = None,
) -> BenchRun:
    """Run ``method`` on ``objective`` over ``space`` (optuna distributions) for ``budget``
    steps in all; configurations are at most ``max_steps`` long.

    ``surrogate`` is the FT-PFN of "ft"; ``value_range`` maps values for the surrogates;
    ``study_name`` names the in-memory study (Hyperband's brackets depend on it);
    ``n_fresh`` overrides FreezeThaw's fresh candidates per ask. Every configuration gets
    its own ``job.checkpoint_dir`` (``trial-N``) under ``artifacts_dir``; None: under a
    temporary directory that lasts as long as the run, so an objective that saves and
    resumes its model works in the benchmark as in ``FreezeThaw.optimize``.
    """
    check_settings([method], budget=budget, max_steps=max_steps, direction=direction)
    with contextlib.ExitStack() as stack:
        if artifacts_dir is None:
            artifacts_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pfnkit-"))
        return _run_method(
            method,
            objective,
            space,
            budget=budget,
            max_steps=max_steps,
            seed=seed,
            direction=direction,
            value_range=value_range,
            surrogate=surrogate,
            study_name=study_name,
            n_fresh=n_fresh,
            artifacts_dir=Path(artifacts_dir),
        )


def _run_method(
    method: str,
    objective: Callable[[Job], Any],
    space: dict[str, Any],
    *,
    budget: int,
    max_steps: int,
    seed: int,
    direction: str,
    value_range: tuple[float, float | None],
    surrogate: str | Path,
    study_name: str | None,
    n_fresh: int | None,
    artifacts_dir: Path,
) -> BenchRun:
    tracker = _Tracker(budget, max_steps, direction)
    ask_times: list[float] = []
    name = study_name or f"pfnkit-bench-{method}-{seed}"
    t0 = time.perf_counter()
    if method == "ft":
        from pfnkit.hpo.loop import FreezeThaw
        from pfnkit.hpo.surrogate import FreezeThawSurrogate

        options: dict[str, Any] = {} if n_fresh is None else {"n_fresh": n_fresh}
        ft = FreezeThaw(
            space,
            max_steps=max_steps,
            surrogate=FreezeThawSurrogate(_ft_model(str(surrogate)), seed=seed),
            study_name=name,
            direction=direction,
            value_range=value_range,
            seed=seed,
            artifacts_dir=artifacts_dir,
            **options,  # without n_fresh: FreezeThaw's default
        )
        _run_freeze_thaw(ft, objective, tracker, ask_times)
    else:
        _run_optuna(
            method, objective, space, tracker, seed, direction, value_range, name, artifacts_dir
        )
    run_time = time.perf_counter() - t0
    inc = tracker.incumbent[:budget]
    inc += [inc[-1] if inc else None] * (budget - len(inc))  # a loop that gave up early
    seen = tracker.anytime[:budget]
    seen += seen[-1:] * (budget - len(seen))
    return BenchRun(method, seed, inc, ask_times, run_time, seen)


def _run_freeze_thaw(
    ft: Any, objective: Callable[[Job], Any], tracker: _Tracker, ask_times: list[float]
) -> None:
    """Run the FreezeThaw loop ``ft`` for the tracker's budget, timing every ask that
    hands out a job (not the last one, which finds the budget spent)."""
    ask = ft.ask

    def timed_ask(**kwargs: Any) -> Job | None:
        t0 = time.perf_counter()
        job = ask(**kwargs)
        if job is not None:
            ask_times.append(time.perf_counter() - t0)
        return job

    def tracked(job: Job) -> Any:
        result = objective(job)
        try:
            vals = _values(job, result)
        except (TypeError, ValueError):
            return result  # not a step spent: FreezeThaw.tell fails the configuration
        for step, v in enumerate(vals, job.from_step + 1):
            tracker.spend(step, v)
        return result

    ft.ask = timed_ask  # type: ignore[method-assign]
    ft.optimize(tracked, tracker.budget)


def _run_optuna(
    method: str,
    objective: Callable[[Job], Any],
    space: dict[str, Any],
    tracker: _Tracker,
    seed: int,
    direction: str,
    value_range: tuple[float, float | None],
    name: str,
    artifacts_dir: Path,
) -> None:
    import optuna
    from optuna.trial import TrialState

    from pfnkit.hpo.loop import Job

    pruner: Any = optuna.pruners.NopPruner()
    if method == "tpe-hb":
        pruner = optuna.pruners.HyperbandPruner(1, tracker.max_steps, reduction_factor=3)
    elif method == "tpe-sh":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    elif method == "random-lcpfn":
        pruner = _lcpfn_pruner(tracker.max_steps, (value_range[0], value_range[1]))
    sampler: Any = (
        optuna.samplers.TPESampler(seed=seed)
        if method.startswith("tpe")
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(
        study_name=name,
        direction=direction,  # type: ignore[arg-type]
        sampler=sampler,
        pruner=pruner,
    )
    failures: list[str] = []
    done = False
    while not done:
        trial = study.ask(space)
        state, final = TrialState.PRUNED, None
        ckpt = artifacts_dir / f"trial-{trial.number}"
        ckpt.mkdir(parents=True, exist_ok=True)
        for step in range(1, tracker.max_steps + 1):
            job = Job(trial.number, dict(trial.params), step - 1, step, checkpoint_dir=ckpt)
            try:
                vals = _values(job, objective(job))
            except Exception as e:  # the user's code failed: fail the trial and go on
                failures.append(f"{type(e).__name__}: {e}")
                state = TrialState.FAIL
                break
            trial.report(vals[0], step)
            done = tracker.spend(step, vals[0])
            if step == tracker.max_steps:
                state, final = TrialState.COMPLETE, vals[0]
            elif done or trial.should_prune():
                break
        study.tell(trial, final, state=state)
        if state != TrialState.FAIL:
            failures.clear()
        elif len(failures) >= MAX_FAILURES:
            raise PfnkitError(
                f"The objective failed {len(failures)} times in a row; the last error: "
                f"{failures[-1]}."
            )


def table(runs: Sequence[BenchRun], methods: Sequence[str]) -> str:
    """A markdown table of the runs: mean over seeds of the incumbent at 25/50/100 % of
    the budget and of the steps until the first configuration finished ('-' when no seed
    had a finished one; "(k/n)" when k of n seeds had), median ask, mean run time."""

    def mean(xs: Sequence[float | None], fmt: str) -> str:
        got = [x for x in xs if x is not None]
        if not got:
            return "-"
        part = f" ({len(got)}/{len(xs)})" if len(got) < len(xs) else ""
        return f"{statistics.fmean(got):{fmt}}{part}"

    lines = [
        "| method | best @25% | best @50% | best @100% | steps to first finish "
        "| median ask (ms) | run time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [r for r in runs if r.method == m]
        if not rs:
            continue
        cells = [mean([r.at(f) for r in rs], ".4g") for f in FRACTIONS]
        cells.append(mean([r.first_finish() for r in rs], ".1f"))
        asks = [t for r in rs for t in r.ask_times]
        cells.append(f"{statistics.median(asks) * 1e3:.1f}" if asks else "-")
        cells.append(f"{statistics.fmean(r.run_time for r in rs):.3g}")
        lines.append(f"| {METHODS[m]} | {' | '.join(cells)} |")
    return "\n".join(lines)
