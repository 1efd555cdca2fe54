"""An optuna pruner built on the LC-PFN's predictive early-stopping rule."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.pruners import BasePruner

from pfnkit.curves import CurveExtrapolator


class LCPFNPruner(BasePruner):
    """Prune a trial when its curve is unlikely to beat the best finished trial.

    The trial's intermediate values at steps 1, 2, ... are its learning curve; the LC-PFN
    predicts the value at ``max_steps`` and the trial is pruned when the probability that
    it beats the best final value so far is below ``threshold``.

    Args:
        max_steps: the full training length (the step whose value the study optimises).
        threshold: prune below this probability of improvement (LC-PFN used 0.05).
        min_steps: never prune before this many reported steps.
        value_range: (low, high) of the reported values (high None: largest observed).
        checkpoint: "default" (bundled LC-PFN) or a checkpoint path.

    Example:
        >>> study = optuna.create_study(direction="maximize",
        ...                             pruner=LCPFNPruner(max_steps=50))
    """

    def __init__(
        self,
        max_steps: int,
        *,
        threshold: float = 0.05,
        min_steps: int = 3,
        value_range: tuple[float, float | None] = (0.0, 1.0),
        checkpoint: Any = "default",
    ) -> None:
        self.max_steps = max_steps
        self.threshold = threshold
        self.min_steps = min_steps
        self.value_range = value_range
        self.extrapolator = CurveExtrapolator(checkpoint)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        iv = trial.intermediate_values
        if not iv:
            return False
        curve = [iv[s] for s in sorted(iv)]
        if len(curve) < self.min_steps or not all(math.isfinite(v) for v in curve):
            return False
        direction = "maximize" if study.direction.name == "MAXIMIZE" else "minimize"
        done = [
            t.value
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None
        ]
        if not done:
            return False
        best = max(done) if direction == "maximize" else min(done)
        return self.extrapolator.should_stop(
            curve,
            best,
            self.max_steps,
            threshold=self.threshold,
            min_steps=self.min_steps,
            value_range=self.value_range,
            direction=direction,  # type: ignore[arg-type]
        )
