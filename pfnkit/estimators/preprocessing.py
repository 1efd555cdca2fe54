"""Turning user tables into what a tabular PFN reads, and the per-member views of them.

``TableEncoder`` maps numeric, boolean, categorical and object columns (NumPy or pandas,
NaN for missing) to float32 with NaN for missing values; ``member_transform`` fits one of
the alternating preprocessings (quantile / power / none) on the training rows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

CATEGORICAL_MAX_UNIQUE = 10


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN, pd.NA-like
    except (TypeError, ValueError):
        return False


class TableEncoder:
    """Encodes an (n, d) array of any dtype column by column.

    Numeric columns pass through as float; columns that do not convert to float are
    categorical and get ordinal codes (categories sorted, unseen ones become NaN).
    ``categorical_`` marks the categorical columns, including numeric columns with at most
    ``CATEGORICAL_MAX_UNIQUE`` distinct integer values.
    """

    def fit(self, x: np.ndarray) -> TableEncoder:
        self.categories_: list[dict[Any, int] | None] = []
        numeric: list[np.ndarray | None] = []
        for j in range(x.shape[1]):
            col = x[:, j]
            as_float = _to_float(col)
            if as_float is None:
                for v in col:
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
            else:
                self.categories_.append(None)
                numeric.append(as_float)
        self.categorical_ = np.array([c is not None for c in self.categories_], dtype=bool)
        for j, num in enumerate(numeric):
            if num is not None:
                seen = np.unique(num[~np.isnan(num)])
                small = 0 < seen.size <= CATEGORICAL_MAX_UNIQUE
                self.categorical_[j] = bool(
                    small and np.all(seen == np.round(seen)) and seen.size > 2
                )
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.float64)
        for j, cats in enumerate(self.categories_):
            col = x[:, j]
            if cats is None:
                as_float = _to_float(col)
                if as_float is None:
                    raise ValueError(
                        f"Column {j} held numbers during fit but now holds values that are not "
                        "numbers; give the same column types at fit and predict."
                    )
                out[:, j] = as_float
            else:
                out[:, j] = [cats.get(v, np.nan) if not _is_missing(v) else np.nan for v in col]
        if np.isinf(out).any():
            raise ValueError(
                "Input X contains infinity. Replace it with NaN to treat it as a missing value, "
                "or clip it to a finite number."
            )
        return out.astype(np.float32)


def _to_float(col: np.ndarray) -> np.ndarray | None:
    if col.dtype.kind in "fiub":
        return col.astype(np.float64)
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
        from sklearn.preprocessing import PowerTransformer, QuantileTransformer

        if self.mode == "quantile":
            self.transformer = QuantileTransformer(
                output_distribution="normal",
                n_quantiles=max(2, min(1000, x.shape[0])),
                random_state=self.seed,
                subsample=100_000,
            )
        else:
            self.transformer = PowerTransformer(method="yeo-johnson", standardize=True)
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
