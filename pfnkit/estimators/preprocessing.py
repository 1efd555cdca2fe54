"""Turning user tables into what a tabular PFN reads, and the per-member views of them.

``TableEncoder`` maps numeric, boolean, categorical and object columns (NumPy or pandas,
NaN for missing) to float32 with NaN for missing values; ``member_transform`` fits one of
the alternating preprocessings (quantile / power / none) on the training rows.
"""

from __future__ import annotations

import datetime
import warnings
from typing import Any

import numpy as np

from pfnkit.estimators.power import YeoJohnson

CATEGORICAL_MAX_UNIQUE = 10


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, pd.NA-like
    except (TypeError, ValueError):
        return False


# robust units a scaled value may reach: far beyond the PFN's own clamp (30 standard
# deviations), small enough that float32 sums of squares over a context stay finite
SCALED_LIMIT = 1e15
# integer codes of numeric categorical columns stay as they are up to float32's exact range
EXACT_FLOAT32_INT = 2.0**24
EPOCH = np.datetime64(0, "s")


def _is_datetime_cell(v: Any) -> bool:
    return isinstance(v, datetime.date | np.datetime64)


def _seconds(v: Any) -> float:
    """Seconds since 1970-01-01 UTC of a date/time cell; naive times are read as UTC."""
    if isinstance(v, np.datetime64):
        return float((v - EPOCH) / np.timedelta64(1, "s"))
    if not isinstance(v, datetime.datetime):  # a date: its midnight
        v = datetime.datetime(v.year, v.month, v.day)
    if v.tzinfo is None:
        v = v.replace(tzinfo=datetime.timezone.utc)
    return float(v.timestamp())


def _datetime_seconds(col: np.ndarray) -> np.ndarray | None:
    """A column of dates/times as seconds since the epoch (NaT -> NaN); None otherwise."""
    if col.dtype.kind == "M":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaT arithmetic
            return ((col - EPOCH) / np.timedelta64(1, "s")).astype(np.float64)
    if col.dtype.kind != "O":
        return None
    present = [v for v in col if not _is_missing(v)]
    if not present or not any(_is_datetime_cell(v) for v in present):
        return None
    if not all(_is_datetime_cell(v) for v in present):
        return None
    return np.array([np.nan if _is_missing(v) else _seconds(v) for v in col], dtype=np.float64)


def dates_as_objects(X: Any) -> Any:
    """A pandas DataFrame with its date/time columns as object (Timestamp) columns.

    scikit-learn's validation cannot merge datetime64 with other column dtypes; as objects
    they reach ``TableEncoder``, which reads them as seconds since the epoch.
    """
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "astype") or not hasattr(dtypes, "items"):
        return X
    dates = {
        c: object
        for c, t in dtypes.items()
        if getattr(t, "kind", "") == "M" or str(t).startswith("datetime64")
    }
    return X.astype(dates) if dates else X


class TableEncoder:
    """Encodes an (n, d) array of any dtype column by column.

    Numeric columns are scaled robustly in float64 (``(x / 2**k - median) / spread``, the
    spread from the interquartile range) before the cast to float32, so that any finite
    magnitude (up to float64's 1e308) reads the same as the table in its usual units;
    the PFN z-scores each feature itself, so the scaling changes nothing else. Date/time
    columns (datetime64, datetime or pandas Timestamp cells) become seconds since
    1970-01-01 UTC, with a warning. Columns that do not convert to float are categorical
    and get ordinal codes (categories sorted, unseen ones become NaN). ``categorical_``
    marks the categorical columns, including numeric columns with at most
    ``CATEGORICAL_MAX_UNIQUE`` distinct integer values (which keep their values, or get
    ordinal codes when beyond float32's exact integers). A column with no value at fit
    (``empty_``: every cell missing) reads as missing at transform, whatever it holds then:
    the context never showed a value of it to relate to.
    """

    def fit(self, x: np.ndarray) -> TableEncoder:
        self.categories_: list[dict[Any, int] | None] = []
        self.datetime_ = np.zeros(x.shape[1], dtype=bool)
        self.empty_ = np.zeros(x.shape[1], dtype=bool)
        numeric: list[np.ndarray | None] = []
        for j in range(x.shape[1]):
            col = x[:, j]
            as_float = _datetime_seconds(col)
            if as_float is not None:
                self.datetime_[j] = True
            else:
                as_float = _to_float(col)
            if as_float is None:
                for v in col:
                    if _is_datetime_cell(v):
                        raise TypeError(
                            f"Column {j} of X mixes dates/times with other values: give a "
                            "column only dates (read as seconds since 1970-01-01 UTC) or "
                            "only numbers and strings."
                        )
                    if not isinstance(
                        v, str | bytes | bool | int | float | np.generic
                    ) and not _is_missing(v):
                        raise TypeError(
                            f"Column {j} of X holds a {type(v).__name__}: every cell must be a "
                            "string or a number (argument must be a string or a number)."
                        )
                values = sorted({v for v in col if not _is_missing(v)}, key=lambda v: str(v))
                self.categories_.append({v: i for i, v in enumerate(values)})
                numeric.append(None)
                self.empty_[j] = not values
            else:
                self.categories_.append(None)
                numeric.append(as_float)
                self.empty_[j] = bool(np.isnan(as_float).all())
        if self.datetime_.any():
            cols = ", ".join(str(j) for j in np.flatnonzero(self.datetime_))
            warnings.warn(
                f"Column(s) {cols} of X hold dates/times: they are read as seconds since "
                "1970-01-01 UTC (times without a time zone as UTC). Convert them yourself "
                "(e.g. to day of week or hour) to give the model other features.",
                UserWarning,
                stacklevel=4,
            )
        self.categorical_ = np.array([c is not None for c in self.categories_], dtype=bool)
        d = x.shape[1]
        # per column: x -> (x / power - center) / scale; codes for huge integer categories
        self.power_, self.center_, self.scale_ = np.ones(d), np.zeros(d), np.ones(d)
        self.codes_: list[dict[float, int] | None] = [None] * d
        for j, num in enumerate(numeric):
            if num is None:
                continue
            with np.errstate(invalid="ignore"):  # inf compares as non-integer: no category
                seen = np.unique(num[~np.isnan(num)])
                small = 0 < seen.size <= CATEGORICAL_MAX_UNIQUE
                self.categorical_[j] = bool(
                    small and np.all(seen == np.round(seen)) and seen.size > 2
                )
            if self.categorical_[j]:
                if np.abs(seen).max() > EXACT_FLOAT32_INT:
                    self.codes_[j] = {float(v): i for i, v in enumerate(seen)}
            else:
                self.power_[j], self.center_[j], self.scale_[j] = _robust_scale(num)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.float64)
        empty = getattr(self, "empty_", np.zeros(x.shape[1], dtype=bool))  # older pickles
        for j, cats in enumerate(self.categories_):
            col = x[:, j]
            if empty[j]:
                out[:, j] = np.nan
            elif cats is None:
                as_float = _datetime_seconds(col) if self.datetime_[j] else _to_float(col)
                if as_float is None:
                    held = "dates/times" if self.datetime_[j] else "numbers"
                    raise ValueError(
                        f"Column {j} held {held} during fit but now holds other values; "
                        "give the same column types at fit and predict."
                    )
                out[:, j] = as_float
            else:
                out[:, j] = [cats.get(v, np.nan) if not _is_missing(v) else np.nan for v in col]
        if np.isinf(out).any():
            raise ValueError(
                "Input X contains infinity. Replace it with NaN to treat it as a missing value, "
                "or clip it to a finite number."
            )
        for j, codes in enumerate(self.codes_):
            if codes is not None:
                out[:, j] = [codes.get(float(v), np.nan) for v in out[:, j]]
        numeric = np.array([c is None for c in self.categories_]) & ~self.categorical_
        with np.errstate(over="ignore"):  # beyond the limit at predict: clipped below
            z = (out[:, numeric] / self.power_[numeric] - self.center_[numeric]) / self.scale_[
                numeric
            ]
        out[:, numeric] = np.clip(z, -SCALED_LIMIT, SCALED_LIMIT)
        return out.astype(np.float32)


def _robust_scale(num: np.ndarray) -> tuple[float, float, float]:
    """(power, center, scale) with ``(x / power - center) / scale`` of order 1 and at most
    SCALED_LIMIT in magnitude, computed without overflow for any finite x."""
    v = num[np.isfinite(num)]
    if v.size == 0:
        return 1.0, 0.0, 1.0
    top = float(np.abs(v).max())
    if top == 0.0:
        return 1.0, 0.0, 1.0
    # a power of two (exact division) with top / power in [1, 2)
    power = float(np.ldexp(1.0, int(np.frexp(top)[1]) - 1))
    u = v / power
    center = float(np.median(u))
    q25, q75 = np.percentile(u, [25, 75])
    dev = np.abs(u - center)
    spread = float(q75 - q25) / 1.349 or float(dev.mean()) or 1.0  # normal-consistent IQR
    scale = max(spread, float(dev.max()) / SCALED_LIMIT)
    return power, center, scale


def _to_float(col: np.ndarray) -> np.ndarray | None:
    if col.dtype.kind in "fiub":
        return col.astype(np.float64)
    if col.dtype.kind in "Mm" or any(_is_datetime_cell(v) for v in col):
        return None
    try:
        return np.array([np.nan if _is_missing(v) else float(v) for v in col], dtype=np.float64)
    except (TypeError, ValueError):
        return None


MODES = ("quantile", "power", "none")


class MemberTransform:
    """One ensemble member's preprocessing of the non-categorical columns."""

    def __init__(self, mode: str, categorical: np.ndarray, seed: int) -> None:
        self.mode = mode
        self.categorical = categorical
        self.seed = seed
        self.transformer: Any = None

    def fit(self, x: np.ndarray) -> MemberTransform:
        cols = ~self.categorical
        if self.mode == "none" or not cols.any():
            return self
        from sklearn.preprocessing import QuantileTransformer

        if self.mode == "quantile":
            self.transformer = QuantileTransformer(
                output_distribution="normal",
                n_quantiles=max(2, min(1000, x.shape[0])),
                random_state=self.seed,
                subsample=100_000,
            )
        else:
            # scikit-learn's PowerTransformer model, fitted for all columns at once (faster)
            self.transformer = YeoJohnson()
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                self.transformer.fit(x[:, cols].astype(np.float64))
                probe = self.transformer.transform(x[:, cols].astype(np.float64))
            if not np.all(np.isfinite(probe[~np.isnan(probe)])):
                raise FloatingPointError("non-finite output")
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            self.transformer = None  # e.g. power transform overflow: fall back to raw values
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.transformer is None:
            return x
        out = x.astype(np.float64).copy()
        cols = ~self.categorical
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out[:, cols] = self.transformer.transform(out[:, cols])
        out[np.isinf(out)] = np.nan
        return out.astype(np.float32)
