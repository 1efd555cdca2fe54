"""PFNRegressor: in-context regression with a full predictive distribution per row."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import StrOptions

from pfnkit.estimators._base import PFNEstimatorBase
from pfnkit.model.heads import BarDistribution

OUTPUT_TYPES = ("mean", "median", "quantiles", "full")
# target_bounds="train": the training targets' range, widened by this share of it each side
TRAIN_RANGE_MARGIN = 0.1


class PFNRegressor(RegressorMixin, PFNEstimatorBase):
    """Regressor that predicts a bar distribution for every row in one forward pass.

    Parameters are those of PFNClassifier (``checkpoint``, ``n_estimators``,
    ``softmax_temperature``, ``device``, ``random_state``, ``ignore_pretraining_limits``,
    ``max_context``, ``preprocessing``, ``context``, ``fine_tune``, ``feature_reduction``,
    ``categorical_encoding``, ``feature_selection``, ``append_original``),
    except that ``softmax_temperature`` defaults to
    1.0 (the PFN's posterior predictive as trained) and ``feature_selection`` to "cv": the
    bundled regressor loses much of its accuracy to weak columns (friedman1's five noise
    columns: nRMSE 0.47 with them, 0.33 without), so the columns that the PFN's own
    held-out loss says help are kept (every column when no smaller set wins clearly).
    Nominal columns go in as codes or one-hot by the same held-out comparison
    (``categorical_encoding="cv"``, as for the classifier; by squared error here):
    diamonds' cut, colour and clarity one-hot take its nRMSE from 0.31 to 0.25. Members
    differ in preprocessing, feature order and context subsample; their predictive
    distributions are averaged.

    ``predict(X)`` returns the predictive mean; ``predict(X, output_type="median")`` the
    median, ``output_type="quantiles"`` an array (n_samples, len(quantiles)) for the given
    ``quantiles``, and ``output_type="full"`` a dict with "mean", "median", "borders"
    (n_bars + 1,) and "probabilities" (n_samples, n_bars) of the bar distribution.

    ``target_bounds`` bounds the point predictions: "train" (default) the training
    targets' range widened by ``TRAIN_RANGE_MARGIN`` (a tenth) of it on each side, a pair
    ``(low, high)`` known bounds (None for an open side: ``(0, None)`` for non-negative
    targets), None no bound. The mean is then that of the predictive distribution with
    its mass beyond a bound moved onto the bound, E[clip(Y, low, high)]; the median and
    quantiles are clipped. The bar distribution's outer buckets are half-normal tails
    reaching far past any target the table has shown (on diamonds, whose prices stop at
    18,800, the upper tail's mean is about 40,000), so a few percent of mass there pulls
    the plain mean up; trees never predict beyond the training range for the same reason.
    ``output_type="full"``'s "borders" and "probabilities" and ``nll`` are those of the
    unbounded distribution.
    """

    _task = "regression"
    _parameter_constraints: dict[str, list[Any]] = {
        **PFNEstimatorBase._parameter_constraints,
        # the pair's values are checked in fit (_resolve_bounds)
        "target_bounds": [StrOptions({"train"}), tuple, list, np.ndarray, None],
    }

    def __init__(
        self,
        checkpoint: Any = "default",
        n_estimators: int = 8,
        softmax_temperature: float = 1.0,
        device: str = "auto",
        random_state: Any = 0,
        ignore_pretraining_limits: bool = False,
        max_context: int | None = None,
        preprocessing: str = "alternate",
        context: Any = "auto",
        fine_tune: Any = False,
        feature_reduction: str = "subset",
        categorical_encoding: str = "cv",
        feature_selection: str = "cv",
        append_original: bool = False,
        target_bounds: Any = "train",
    ) -> None:
        # temperature 1: the PFN's output is a posterior predictive; sharpening it would
        # trade calibration (NLL) for nothing a point prediction needs
        super().__init__(
            checkpoint=checkpoint,
            n_estimators=n_estimators,
            softmax_temperature=softmax_temperature,
            device=device,
            random_state=random_state,
            ignore_pretraining_limits=ignore_pretraining_limits,
            max_context=max_context,
            preprocessing=preprocessing,
            context=context,
            fine_tune=fine_tune,
            feature_reduction=feature_reduction,
            categorical_encoding=categorical_encoding,
            feature_selection=feature_selection,
            append_original=append_original,
        )
        self.target_bounds = target_bounds

    def fit(self, X: Any, y: Any) -> PFNRegressor:
        self._validate_params()
        table, y = self._validate_fit_X(X, y)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(
                f"PFNRegressor takes one target column; y has shape {y.shape}. Fit one "
                "regressor per target (sklearn.multioutput.MultiOutputRegressor)."
            )
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity; drop those rows first.")
        self.target_bounds_ = self._resolve_bounds(y)
        x = self._encode_fit(table, y)
        self._load()
        # standardise in units of a power of two near max|y| (exact): no overflow of y.std()
        # for |y| up to 1e308, no underflow for tiny y
        top = float(np.abs(y).max())
        self.y_unit_ = float(np.ldexp(1.0, int(np.frexp(top)[1]) - 1)) if top > 0 else 1.0
        u = y / self.y_unit_
        mean, std = float(u.mean()), float(u.std())
        if std == 0.0:  # a constant target: any positive spread
            std = 1.0 / self.y_unit_ if self.y_unit_ > 1e-300 else 1.0
        self.y_mean_, self.y_std_ = mean * self.y_unit_, std * self.y_unit_
        self._fit_ensemble(x, (u - mean) / std, self.n_estimators)
        return self

    def _resolve_bounds(self, y: np.ndarray) -> tuple[float, float]:
        """(low, high) of ``target_bounds`` for targets y (infinite where unbounded)."""
        spec = self.target_bounds
        if spec is None:
            return -np.inf, np.inf
        if isinstance(spec, str) and spec == "train":
            lo, hi = float(y.min()), float(y.max())
            with np.errstate(over="ignore"):
                pad = TRAIN_RANGE_MARGIN * (hi - lo)
            pad = pad if np.isfinite(pad) else np.inf
            return lo - pad, hi + pad
        bad = (
            "The 'target_bounds' parameter of PFNRegressor must be 'train', None or a pair "
            f"(low, high) with low < high, None for no bound on a side. Got {spec!r} instead. "
            "For non-negative targets, for example, pass (0, None)."
        )
        if isinstance(spec, str) or not hasattr(spec, "__len__") or len(spec) != 2:
            raise ValueError(bad)
        try:
            lo = -np.inf if spec[0] is None else float(spec[0])
            hi = np.inf if spec[1] is None else float(spec[1])
        except (TypeError, ValueError):
            raise ValueError(bad) from None
        if np.isnan(lo) or np.isnan(hi) or not lo < hi:
            raise ValueError(bad)
        if y.min() < lo or y.max() > hi:
            raise ValueError(
                f"The 'target_bounds' parameter of PFNRegressor is ({lo:g}, {hi:g}), but y "
                f"holds values from {y.min():g} to {y.max():g}. Widen the bounds or use "
                "target_bounds='train'."
            )
        return lo, hi

    def _to_y(self, z: Any) -> np.ndarray:
        """Standardised values -> y's units (scaled in y_unit_: no overflow on the way)."""
        unit = getattr(self, "y_unit_", 1.0)  # models pickled before y_unit_ existed
        z = np.asarray(z, dtype=np.float64)
        with np.errstate(over="ignore"):  # only a result beyond float64 overflows
            return (z * (self.y_std_ / unit) + self.y_mean_ / unit) * unit

    def _to_z(self, v: float) -> float:
        """A value in y's units -> standardised (float32-safe: clamped to +-1e30)."""
        unit = getattr(self, "y_unit_", 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (v / unit - self.y_mean_ / unit) / (self.y_std_ / unit)
        return float(np.clip(z, -1e30, 1e30))

    def _distribution(self, X: Any) -> tuple[torch.Tensor, Any]:
        x = self._validate_predict_X(X)
        logits = self._member_logits(x) / self.softmax_temperature  # (members, M, bars)
        probs = torch.softmax(logits, dim=-1).mean(0)  # the members' mixture
        # a CPU copy of the head: the model itself may live on a GPU
        dist = BarDistribution(self.model_.bar_distribution.borders.detach().cpu())
        return probs.clamp_min(1e-30).log(), dist

    def predict(self, X: Any, output_type: str = "mean", quantiles: Any = (0.1, 0.5, 0.9)) -> Any:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(
                f"The 'output_type' parameter of PFNRegressor.predict must be one of "
                f"{OUTPUT_TYPES}. Got {output_type!r} instead."
            )
        logp, dist = self._distribution(X)
        low, high = getattr(self, "target_bounds_", (-np.inf, np.inf))  # older pickles

        def bounded(v: np.ndarray) -> np.ndarray:
            return np.clip(v, low, high)

        def mean() -> np.ndarray:
            if np.isinf(low) and np.isinf(high):
                return self._to_y(dist.mean(logp).numpy())
            z_low, z_high = self._to_z(low), self._to_z(high)
            return bounded(self._to_y(dist.clipped_mean(logp, z_low, z_high).numpy()))

        if output_type == "mean":
            return mean()
        if output_type == "median":
            return bounded(self._to_y(dist.median(logp).numpy()))
        if output_type == "quantiles":
            qs = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
            if qs.size == 0 or np.any((qs <= 0) | (qs >= 1)):
                raise ValueError(
                    "The 'quantiles' parameter must hold levels strictly between 0 and 1. "
                    f"Got {quantiles!r}."
                )
            cols = [dist.quantile(logp, float(q)).numpy() for q in qs]
            return bounded(self._to_y(np.stack(cols, axis=1)))
        return {
            "mean": mean(),
            "median": bounded(self._to_y(dist.median(logp).numpy())),
            "borders": self._to_y(dist.borders.numpy()),
            "probabilities": logp.exp().numpy(),
        }

    def nll(self, X: Any, y: Any) -> np.ndarray:
        """Negative log density of each y under its predictive distribution (in y's units)."""
        logp, dist = self._distribution(X)
        unit = getattr(self, "y_unit_", 1.0)
        y_std = (np.asarray(y, dtype=np.float64) / unit - self.y_mean_ / unit) / (
            self.y_std_ / unit
        )
        nll = dist.nll(logp, torch.as_tensor(y_std, dtype=torch.float32)).numpy()
        return nll.astype(np.float64) + np.log(self.y_std_)
