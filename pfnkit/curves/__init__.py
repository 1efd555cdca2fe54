"""Learning curves: extrapolation with uncertainty (LC-PFN) and predictive early stopping.

from pfnkit.curves import CurveExtrapolator
ex = CurveExtrapolator()                      # the bundled LC-PFN, offline
pred = ex.predict(accuracies, at=[52], max_steps=52)
pred.mean(), pred.interval(0.9), pred.prob_exceeding(0.9)
ex.should_stop(accuracies, best_so_far=0.91, max_steps=52)
"""

from pfnkit.curves.extrapolator import (
    CurveExtrapolator,
    CurvePrediction,
    bundled_curve_checkpoint,
    should_stop,
)

__all__ = ["CurveExtrapolator", "CurvePrediction", "bundled_curve_checkpoint", "should_stop"]
