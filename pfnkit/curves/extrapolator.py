"""Learning-curve extrapolation with an LC-PFN, and the predictive early-stopping rule.

A curve is the values of a metric at steps 1, 2, ..., n (one value per epoch, say). The PFN
sees them as points (step / max_steps, value) with values mapped into [0, 1] through the
declared ``value_range`` (and flipped for ``direction="minimize"``, so losses work too), and
returns a predictive distribution of the value at any later step up to ``max_steps``.

Rescaling, documented: the network was trained on curves of ``min_horizon..max_horizon``
steps (10..200 for the bundled checkpoint). Longer curves work because steps enter as
step / max_steps; when more points are observed than the network's context holds, an evenly
spaced subset (always keeping the last point) is used.

Shape legend: C curves, A steps asked for, K bars.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pfnkit.exceptions import CheckpointError, InvalidConfigError

Direction = Literal["maximize", "minimize"]
DEFAULT_CHECKPOINT = "learning-curves.safetensors"


def bundled_curve_checkpoint() -> Path:
    """Path of the LC-PFN checkpoint shipped inside the package."""
    from pfnkit.train.checkpoint import bundled_checkpoint_path

    return bundled_checkpoint_path(DEFAULT_CHECKPOINT, "learning-curve")


@dataclass
class CurvePrediction:
    """Predictive distributions of curve values at the steps ``at``.

    For one curve every method returns an array of shape (A,); for a batch of C curves,
    shape (C, A). Values are in the curve's own units.
    """

    at: np.ndarray
    logits: torch.Tensor  # (C, A, K) over normalised values
    bars: Any  # BarDistribution
    low: np.ndarray  # (C,) value mapped to 0 ("maximize") or 1 ("minimize")
    span: np.ndarray  # (C,)
    direction: Direction  # which way is better (for prob_improvement)
    flip: bool  # the network's value is 1 - (value - low) / span
    clip: tuple[float, float] | None  # the declared value range, when finite
    single: bool

    def _out(self, z: torch.Tensor) -> np.ndarray:
        """Normalised values (C, A) -> the curve's units, squeezed for a single curve."""
        zz = z.detach().double().cpu().numpy()
        if self.flip:
            zz = 1.0 - zz
        v = self.low[:, None] + self.span[:, None] * zz
        return v[0] if self.single else v

    def _clip(self, v: np.ndarray) -> np.ndarray:
        return v if self.clip is None else np.clip(v, *self.clip)

    def _z(self, value: float | np.ndarray) -> torch.Tensor:
        v = np.asarray(value, dtype=np.float64)
        if not self.single and v.ndim == 1 and v.shape[0] == self.logits.shape[0]:
            v = v[:, None]  # one value per curve
        z = (v - self.low[:, None]) / self.span[:, None]
        if self.flip:
            z = 1.0 - z
        return torch.as_tensor(z, dtype=torch.float32).expand(self.logits.shape[:-1])

    def mean(self) -> np.ndarray:
        """Predictive mean."""
        return self._out(self.bars.mean(self.logits))

    def std(self) -> np.ndarray:
        """Predictive standard deviation."""
        s = self.bars.variance(self.logits).sqrt().double().cpu().numpy() * self.span[:, None]
        return s[0] if self.single else s

    def quantile(self, q: float) -> np.ndarray:
        """The q-quantile, q in (0, 1) (clipped to a finite declared value range)."""
        if not 0.0 < q < 1.0:
            raise InvalidConfigError(f"The quantile level q must lie in (0, 1). Got {q}.")
        level = 1.0 - q if self.flip else q
        return self._clip(self._out(self.bars.quantile(self.logits, level)))

    def median(self) -> np.ndarray:
        """Predictive median."""
        return self.quantile(0.5)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central predictive interval holding ``level`` of the probability."""
        if not 0.0 < level < 1.0:
            raise InvalidConfigError(f"The interval level must lie in (0, 1). Got {level}.")
        return self.quantile((1 - level) / 2), self.quantile((1 + level) / 2)

    def prob_exceeding(self, threshold: float | np.ndarray) -> np.ndarray:
        """P(value > threshold), in the curve's units, whatever the direction."""
        below_z = self.bars.cdf(self.logits, self._z(threshold))  # P(z <= z_t)
        p = below_z if self.flip else 1.0 - below_z
        out = p.double().cpu().numpy()
        return out[0] if self.single else out

    def prob_improvement(self, best: float | np.ndarray) -> np.ndarray:
        """P(value better than ``best``): above it when maximising, below when minimising."""
        p = self.prob_exceeding(best)
        return 1.0 - p if self.direction == "minimize" else p

    def logpdf(self, value: float | np.ndarray) -> np.ndarray:
        """Log predictive density of ``value`` (the curve's units)."""
        nll = self.bars.nll(self.logits, self._z(value))
        out = -nll.double().cpu().numpy() - np.log(self.span)[:, None]
        return out[0] if self.single else out


class CurveExtrapolator:
    """Extrapolate partial learning curves with a PFN in one forward pass.

    Args:
        checkpoint: "default" (the bundled LC-PFN), a run directory, a .pt or .safetensors
            file of a PFN trained on the ``learning_curve`` prior, or a loaded PFN.
        device: "cpu", "cuda", ...

    Example:
        >>> ex = CurveExtrapolator()
        >>> pred = ex.predict([0.52, 0.61, 0.66, 0.69], at=[20, 50], max_steps=50)
        >>> pred.mean(), pred.interval(0.9), pred.prob_exceeding(0.8)
    """

    def __init__(self, checkpoint: Any = "default", *, device: str = "cpu") -> None:
        from pfnkit.model import BarDistribution
        from pfnkit.train.checkpoint import load_pfn

        source = bundled_curve_checkpoint() if checkpoint == "default" else checkpoint
        model, info = load_pfn(
            source, expect="learning-curves", device=device, what="CurveExtrapolator"
        )
        if model.bar_distribution is None:
            raise CheckpointError(
                "CurveExtrapolator needs a regression PFN trained on the learning_curve prior."
            )
        self.model = model
        self.bars = BarDistribution(model.bar_distribution.borders.detach().cpu())
        self.device = device
        prior = info.prior
        self.max_context = info.context_limit or 100
        self.min_horizon = int(prior.get("min_horizon", 10))
        self.max_horizon = int(prior.get("max_horizon", 200))
        self.direction_trained: str = str(prior.get("direction", "maximize"))

    # ------------------------------------------------------------------ inputs

    def _curves(self, curve: Any) -> tuple[list[np.ndarray], bool]:
        if isinstance(curve, np.ndarray) and curve.ndim == 2:
            return [np.asarray(c, dtype=np.float64) for c in curve], False
        if isinstance(curve, np.ndarray | Sequence) and len(curve) > 0:
            first = curve[0]
            if isinstance(first, np.ndarray | Sequence) and not isinstance(first, str):
                return [np.asarray(c, dtype=np.float64).ravel() for c in curve], False
        try:
            arr = np.asarray(curve, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidConfigError(
                "The 'curve' parameter must be a sequence of numbers (one curve) or a list "
                f"of such sequences (a batch). Got {type(curve).__name__}."
            ) from None
        if arr.ndim != 1:
            raise InvalidConfigError(
                f"The 'curve' parameter must be 1-D (one curve) or a list of curves. Got an "
                f"array of shape {arr.shape}."
            )
        return [arr], True

    @staticmethod
    def _check_range(
        value_range: tuple[float | None, float | None], curves: list[np.ndarray], direction: str
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
        if direction not in ("maximize", "minimize"):
            raise InvalidConfigError(
                f"The 'direction' parameter must be 'maximize' or 'minimize'. Got {direction!r}."
            )
        try:
            lo, hi = value_range
        except (TypeError, ValueError):
            raise InvalidConfigError(
                "The 'value_range' parameter must be a pair (low, high); high may be None "
                f"(the largest observed value). Got {value_range!r}."
            ) from None
        if lo is None or not math.isfinite(float(lo)):
            raise InvalidConfigError(
                f"value_range's low end must be a finite number. Got {value_range!r}."
            )
        lows = np.full(len(curves), float(lo))
        if hi is None:
            highs = np.array([max(float(c.max()), float(lo)) for c in curves])
        else:
            highs = np.full(len(curves), float(hi))
        if not np.all(highs > lows):
            raise InvalidConfigError(
                f"value_range must have high > low. Got {value_range!r}"
                + (" (high = the largest observed value, which is <= low)." if hi is None else ".")
            )
        clip = (float(lo), float(hi)) if hi is not None else None
        return lows, highs, clip

    def _prepare(
        self,
        curve: Any,
        at: Any,
        max_steps: int | None,
        value_range: tuple[float | None, float | None],
        direction: str,
    ) -> tuple[list[np.ndarray], bool, np.ndarray, float, np.ndarray, np.ndarray, Any]:
        curves, single = self._curves(curve)
        if not curves:
            raise InvalidConfigError("The 'curve' parameter holds no curves.")
        at_arr = np.atleast_1d(np.asarray(at, dtype=np.float64))
        if at_arr.ndim != 1 or at_arr.size == 0 or not np.all(np.isfinite(at_arr)):
            raise InvalidConfigError(
                f"The 'at' parameter must be one or more finite steps. Got {at!r}."
            )
        if np.any(at_arr < 1):
            raise InvalidConfigError(
                f"Steps in 'at' count from 1 (the first observed value). Got {at_arr.min():g}."
            )
        horizon = float(max_steps) if max_steps is not None else float(at_arr.max())
        if not horizon >= 1:
            raise InvalidConfigError(f"The 'max_steps' parameter must be >= 1. Got {max_steps!r}.")
        if at_arr.max() > horizon:
            raise InvalidConfigError(
                f"Step {at_arr.max():g} in 'at' lies beyond max_steps={horizon:g}, the curve's "
                "horizon the prediction is scaled to. Raise max_steps to the full length of "
                "training, or drop the step."
            )
        for i, c in enumerate(curves):
            name = "curve" if single else f"curve {i}"
            if c.ndim != 1:
                raise InvalidConfigError(f"{name} must be 1-D. Got shape {c.shape}.")
            bad = np.flatnonzero(~np.isfinite(c))
            if bad.size:
                raise InvalidConfigError(
                    f"{name} has a non-finite value (NaN or inf) at step {int(bad[0]) + 1}. "
                    "Drop or fill missing epochs before extrapolating."
                )
            if c.size < 2:
                raise InvalidConfigError(
                    f"{name} has {c.size} observed value(s); extrapolation needs at least 2."
                )
            if c.size > horizon:
                raise InvalidConfigError(
                    f"{name} has {c.size} observed steps, more than max_steps={horizon:g}. "
                    "Pass the full training length as max_steps."
                )
        lows, highs, clip = self._check_range(value_range, curves, direction)
        for i, c in enumerate(curves):
            if c.min() < lows[i] or c.max() > highs[i]:
                raise InvalidConfigError(
                    f"{'curve' if single else f'curve {i}'} has values in "
                    f"[{c.min():g}, {c.max():g}], outside value_range=({lows[i]:g}, "
                    f"{highs[i]:g}). Declare the metric's range, e.g. value_range=(0, 100) for "
                    "percentages or (0, None) for a loss."
                )
        return curves, single, at_arr, horizon, lows, highs - lows, clip

    def _context(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Observed steps and values, thinned to the network's context size."""
        steps = np.arange(1, c.size + 1, dtype=np.float64)
        if c.size <= self.max_context:
            return steps, c
        idx = np.unique(np.round(np.linspace(0, c.size - 1, self.max_context)).astype(int))
        return steps[idx], c[idx]

    # ------------------------------------------------------------------ API

    @torch.no_grad()
    def predict(
        self,
        curve: Any,
        at: Any,
        *,
        max_steps: int | None = None,
        value_range: tuple[float | None, float | None] = (0.0, 1.0),
        direction: Direction = "maximize",
    ) -> CurvePrediction:
        """Predictive distributions of the curve(s) at the steps ``at``.

        Args:
            curve: values at steps 1..n: one sequence, or a list of sequences (a batch;
                lengths may differ) or a 2-D array.
            at: steps to predict (1-based; later than n to extrapolate).
            max_steps: the full training length the steps are scaled by (default: the
                largest step in ``at``).
            value_range: (low, high) of the metric, e.g. (0, 1) for accuracy, (0, 100) for
                percentages; high=None takes the largest observed value (for losses).
            direction: "maximize" for rising curves (accuracy), "minimize" for falling
                ones (loss).
        """
        curves, single, at_arr, horizon, low, span, clip = self._prepare(
            curve, at, max_steps, value_range, direction
        )
        flip = (direction == "minimize") != (self.direction_trained == "minimize")
        model = self.model
        logits = torch.empty(len(curves), at_arr.size, model.config.n_outputs)
        groups: dict[int, list[int]] = {}
        contexts = [self._context(c) for c in curves]
        for i, (s, _) in enumerate(contexts):
            groups.setdefault(s.size, []).append(i)
        x_test = torch.as_tensor(at_arr / horizon, dtype=torch.float32)
        for n_ctx, idx in groups.items():
            b = len(idx)
            x = torch.zeros(b, n_ctx + at_arr.size, model.config.n_features)
            y = torch.empty(b, n_ctx)
            for j, i in enumerate(idx):
                s, v = contexts[i]
                z = (v - low[i]) / span[i]
                if flip:
                    z = 1.0 - z
                x[j, :n_ctx, 0] = torch.as_tensor(s / horizon, dtype=torch.float32)
                y[j] = torch.as_tensor(z, dtype=torch.float32)
            x[:, n_ctx:, 0] = x_test
            n_feat = torch.ones(b, dtype=torch.int64)
            out = model(x.to(self.device), y.to(self.device), n_features=n_feat.to(self.device))
            logits[idx] = out.float().cpu()
        return CurvePrediction(
            at=at_arr,
            logits=logits,
            bars=self.bars,
            low=low,
            span=span,
            direction=direction,
            flip=flip,
            clip=clip,
            single=single,
        )

    def prob_improvement(
        self,
        curve: Any,
        best_so_far: float,
        max_steps: int,
        *,
        value_range: tuple[float | None, float | None] = (0.0, 1.0),
        direction: Direction = "maximize",
    ) -> float | np.ndarray:
        """P(the value at ``max_steps`` beats ``best_so_far``), per curve."""
        pred = self.predict(
            curve, [max_steps], max_steps=max_steps, value_range=value_range, direction=direction
        )
        p = pred.prob_improvement(best_so_far)
        return float(p[0]) if pred.single else p[:, 0]

    def should_stop(
        self,
        curve: Any,
        best_so_far: float | None,
        max_steps: int,
        *,
        threshold: float = 0.05,
        min_steps: int = 3,
        value_range: tuple[float | None, float | None] = (0.0, 1.0),
        direction: Direction = "maximize",
    ) -> bool:
        """LC-PFN's predictive early-stopping rule for one curve.

        Stop when the probability that the final value (at ``max_steps``) beats
        ``best_so_far`` is below ``threshold``. Never stops before ``min_steps``
        observations, when there is nothing to beat yet (``best_so_far`` None or NaN), or
        once the curve has reached ``max_steps``.
        """
        if not 0.0 < threshold < 1.0:
            raise InvalidConfigError(f"The 'threshold' must lie in (0, 1). Got {threshold}.")
        if min_steps < 2:
            raise InvalidConfigError(f"The 'min_steps' must be >= 2. Got {min_steps}.")
        n = len(curve)
        if best_so_far is None or not math.isfinite(best_so_far) or n < min_steps:
            return False
        if n >= max_steps:
            return False
        p = self.prob_improvement(
            curve, best_so_far, max_steps, value_range=value_range, direction=direction
        )
        return bool(float(np.asarray(p)) < threshold)


@functools.lru_cache(maxsize=1)
def _default() -> CurveExtrapolator:
    return CurveExtrapolator()


def should_stop(
    curve: Any,
    best_so_far: float | None,
    max_steps: int,
    *,
    threshold: float = 0.05,
    min_steps: int = 3,
    value_range: tuple[float | None, float | None] = (0.0, 1.0),
    direction: Direction = "maximize",
) -> bool:
    """``CurveExtrapolator().should_stop(...)`` with the bundled checkpoint."""
    return _default().should_stop(
        curve,
        best_so_far,
        max_steps,
        threshold=threshold,
        min_steps=min_steps,
        value_range=value_range,
        direction=direction,
    )
