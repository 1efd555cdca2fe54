"""Acquisition functions of the freeze-thaw loop: which configuration to advance next.

An acquisition sees every observed partial curve (values mapped to [0, 1], higher is
better) and a list of candidates: paused configurations at the steps they reached, and
fresh random configurations at step 0. It returns the index of the candidate to advance.
It never touches the study; the loop claims what it chose (``pfnkit.hpo.storage``).

``MFPIRandom`` is ifBO's MFPI-random: draw a horizon h uniformly in 1..max_steps and a
threshold tau = f_best + 10^U(-4, -1) * (1 - f_best) above the incumbent; score each
candidate by P(value at min(steps + h, max_steps) > tau) under the FT-PFN surrogate; take
the best (ties broken at random). To add another, implement ``Acquisition.select`` and
register a factory in ``ACQUISITIONS``; ``FreezeThaw(acquisition=...)`` takes its name or
an instance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pfnkit.exceptions import InvalidConfigError
from pfnkit.hpo.surrogate import Curve, FreezeThawSurrogate
from pfnkit.registry import Registry


@dataclass(frozen=True)
class Candidate:
    """A configuration that could be advanced: its encoded hyperparameters (in [0, 1]),
    curve tag and the steps it has been trained for (0 for a fresh one)."""

    h: np.ndarray
    tag: float
    steps: int


@runtime_checkable
class Acquisition(Protocol):
    """Chooses the candidate to advance next."""

    def select(
        self,
        curves: Sequence[Curve],
        candidates: Sequence[Candidate],
        *,
        max_steps: int,
        rng: np.random.Generator,
    ) -> int:
        """Index into ``candidates``. ``curves`` is not empty."""
        ...


class MFPIRandom:
    """ifBO's MFPI-random on a ``FreezeThawSurrogate`` (see the module docstring)."""

    def __init__(self, surrogate: FreezeThawSurrogate) -> None:
        self.surrogate = surrogate

    def select(
        self,
        curves: Sequence[Curve],
        candidates: Sequence[Candidate],
        *,
        max_steps: int,
        rng: np.random.Generator,
    ) -> int:
        f_best = float(max(c.values.max() for c in curves))
        f_best = min(max(f_best, 0.0), 1.0)
        tau = f_best + 10 ** rng.uniform(-4, -1) * (1.0 - f_best)
        horizon = int(rng.integers(1, max_steps + 1))
        qstep = np.minimum(np.asarray([c.steps for c in candidates]) + horizon, max_steps)
        logits = self.surrogate.logits(
            list(curves),
            np.asarray([c.h for c in candidates]),
            np.asarray([c.tag for c in candidates]),
            qstep.astype(float),
            max_steps,
        )
        score = self.surrogate.prob_above(logits, tau)
        best = np.flatnonzero(score >= score.max() - 1e-12)
        return int(rng.choice(best))


ACQUISITIONS: Registry[Callable[[FreezeThawSurrogate], Acquisition]] = Registry("acquisition")
ACQUISITIONS.register("mfpi-random", MFPIRandom)


def resolve_acquisition(acquisition: Any, surrogate: FreezeThawSurrogate) -> Acquisition:
    """An ``Acquisition`` from a registered name or an instance."""
    if isinstance(acquisition, str):
        return ACQUISITIONS.get(acquisition)(surrogate)
    if isinstance(acquisition, Acquisition):
        return acquisition
    raise InvalidConfigError(
        f"The 'acquisition' parameter must be one of {sorted(ACQUISITIONS.names())} or an "
        f"object with a select(curves, candidates, max_steps=, rng=) method. "
        f"Got {acquisition!r:.80}."
    )
