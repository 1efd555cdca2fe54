"""Feature selection by the PFN's own held-out loss (``feature_selection="cv"``).

A PFN with row tokens reads every column it is given. The bundled networks are small, and
on tables with many weak columns the noise those columns add to every row's token costs
more than their signal. Trees shrug them off; the PFN does not (``food_delivery_time``:
three informative columns and 27 sparse item counts). The selection:

1. ranks the columns by the impurity importance of a small extra-trees model;
2. tries the top k columns for k = d, d/2, d/4, ... down to ``SMALLEST`` on two halves of
   (at most ``2 * HALF_ROWS``) training rows: each half is the context of a small clone
   of the estimator (``CV_MEMBERS`` members, no selection, no fine-tuning) and the other
   half its queries. The ranking is refitted on the context half of each fold (nested), so
   that the queries never choose the columns they are scored with;
3. keeps the k with the lowest held-out loss (squared error for regression, log loss for
   classification) if it beats all columns by more than ``Z_MARGIN`` standard errors of
   the paired per-row loss differences; otherwise every column stays.

The final columns are the top k of a ranking on all training rows.

``categorical_encoding="cv"`` uses the same held-out comparison (``choose_encoding``):
one-hot columns when they beat category codes by ``Z_MARGIN`` standard errors, codes
otherwise; it runs only when the table has nominal columns that one-hot would expand.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pfnkit.estimators.preprocessing import TableEncoder

SMALLEST = 3  # fewest columns tried
MIN_FEATURES = 4  # tables narrower than this keep every column
MIN_ROWS = 40  # fewer training rows than this: every column (halves too small to judge)
# Rows per half in the held-out comparisons: as many as the bundled networks read in one
# context (1,120). With 512 the paired test missed one-hot's gain on diamonds on two of
# five seeds (z 0.4 and 1.8); with 1,024 it found it on all five (z 2.6-6.2), for 0.5 s more.
HALF_ROWS = 1024
RANK_ROWS = 5000  # rows the final ranking is fitted on (a random subset beyond that)
RANK_TREES = 32
CV_MEMBERS = 2
Z_MARGIN = 2.0  # a smaller set must win by this many standard errors
ONEHOT_MAX_CATEGORIES = 10  # nominal columns with more categories stay codes under one-hot


@dataclass(frozen=True)
class TablePlan:
    """What ``fit`` reads of a table: ``columns`` of X (sorted indices), their fitted
    ``encoder``, the nominal ``encoding`` ("ordinal" or "onehot"), and the reports of the
    comparisons behind them (None where the estimator fixed the choice itself)."""

    columns: np.ndarray
    encoder: TableEncoder
    encoding: str
    selection_report: dict[str, Any] | None
    encoding_report: dict[str, Any] | None


def _quiet_encoder(X: np.ndarray) -> TableEncoder:
    with warnings.catch_warnings():  # the first fit warned about dates already
        warnings.simplefilter("ignore", UserWarning)
        return TableEncoder().fit(X)


def plan_table(est: Any, X: np.ndarray, y: np.ndarray, task: str, seed: int) -> TablePlan:
    """The columns and nominal encoding ``est`` reads of the validated table X (n, d):
    every column and ``est.categorical_encoding`` unless a parameter says "cv"."""
    encoder = TableEncoder().fit(X)
    columns = np.arange(X.shape[1])
    selection_report = None
    if est.feature_selection == "cv":
        columns, selection_report = select_features(est, X, y, encoder.transform(X), task, seed)
        if columns.size < X.shape[1]:
            encoder = _quiet_encoder(X[:, columns])
    encoding, encoding_report = est.categorical_encoding, None
    if encoding == "cv":
        expandable = any(
            c is not None and 2 < len(c) <= ONEHOT_MAX_CATEGORIES for c in encoder.categories_
        )
        if expandable:
            encoding, encoding_report = choose_encoding(est, X[:, columns], y, task, seed ^ 0x5EED)
        else:
            encoding = "ordinal"
            encoding_report = {
                "encoding": "ordinal",
                "losses": {},
                "reason": f"no nominal column of 3 to {ONEHOT_MAX_CATEGORIES} categories",
            }
    return TablePlan(columns, encoder, encoding, selection_report, encoding_report)


def candidate_sizes(d: int) -> list[int]:
    """Column counts tried: d, then halving down to SMALLEST (each at least SMALLEST)."""
    sizes = [d]
    k = d
    while k > SMALLEST:
        k = max(SMALLEST, -(-k // 2))
        sizes.append(k)
    return sizes


def feature_ranking(x: np.ndarray, y: np.ndarray, task: str, seed: int) -> np.ndarray:
    """Columns of the encoded table x (n, d), most important first (extra-trees impurity
    importance; missing cells read as a value below the column's range)."""
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    x = np.asarray(x, dtype=np.float64)
    low = np.nanmin(np.where(np.isnan(x), np.inf, x), axis=0)
    low = np.where(np.isfinite(low), low, 0.0) - 1.0
    filled = np.where(np.isnan(x), low[None, :], x)
    if task == "regression":
        trees: Any = ExtraTreesRegressor(
            n_estimators=RANK_TREES, min_samples_leaf=2, max_features=0.5, random_state=seed
        )
    else:
        trees = ExtraTreesClassifier(
            n_estimators=RANK_TREES, min_samples_leaf=2, max_features="sqrt", random_state=seed
        )
    trees.fit(filled, y)
    importance = np.nan_to_num(trees.feature_importances_)
    return np.argsort(-importance, kind="stable")


def _halves(y: np.ndarray, task: str, rng: np.random.RandomState) -> tuple[np.ndarray, ...]:
    """Two disjoint halves of at most HALF_ROWS rows each (stratified for classification)."""
    n = len(y)
    take = rng.permutation(n)[: 2 * HALF_ROWS]
    if task != "regression":
        from sklearn.model_selection import StratifiedKFold

        _, counts = np.unique(y[take], return_counts=True)
        if counts.min() >= 2:
            skf = StratifiedKFold(n_splits=2, shuffle=True, random_state=rng.randint(2**31))
            a, b = next(skf.split(np.zeros(len(take)), y[take]))
            return take[a], take[b]
    half = len(take) // 2
    return take[:half], take[half:]


def _row_losses(est: Any, X: np.ndarray, y: np.ndarray, task: str) -> np.ndarray:
    """Per-row held-out loss of a fitted clone on rows (X, y); NaN where undefined."""
    if task == "regression":
        err = est.predict(X) - y
        return err * err
    proba = est.predict_proba(X)
    col = np.searchsorted(est.classes_, y)
    col = np.clip(col, 0, len(est.classes_) - 1)
    seen = est.classes_[col] == y  # a class the context half never saw: no loss defined
    p = proba[np.arange(len(y)), col]
    return np.where(seen, -np.log(np.clip(p, 1e-12, 1.0)), np.nan)


def _small_clone(est: Any) -> Any:
    """The estimator for held-out comparisons: CV_MEMBERS members, zero-shot, no choices
    of its own (codes for nominal columns unless told otherwise, every column)."""
    from sklearn.base import clone

    small = clone(est).set_params(
        feature_selection="none", n_estimators=CV_MEMBERS, fine_tune=False, context="auto"
    )
    if est.categorical_encoding == "cv":
        small.set_params(categorical_encoding="ordinal")
    if est._task != "regression":
        small.set_params(softmax_temperature="auto")
    return small


def _winner(per_row: dict[Any, np.ndarray], baseline: Any) -> tuple[Any, dict[Any, float]]:
    """The candidate with the lowest mean loss among those that beat ``baseline`` by more
    than Z_MARGIN standard errors of the paired per-row differences (else baseline)."""
    ok = np.all([np.isfinite(v) for v in per_row.values()], axis=0)
    mean = {k: float(v[ok].mean()) for k, v in per_row.items()}
    best = baseline
    for k, v in per_row.items():
        if k == baseline:
            continue
        diff = per_row[baseline][ok] - v[ok]
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else np.inf
        if diff.mean() > Z_MARGIN * se and mean[k] < mean[best]:
            best = k
    return best, mean


def choose_encoding(
    est: Any, X: np.ndarray, y: np.ndarray, task: str, seed: int
) -> tuple[str, dict[str, Any]]:
    """ "onehot" or "ordinal" for the nominal columns of X, by held-out loss (see above)."""
    from sklearn.base import clone

    start = time.perf_counter()
    report: dict[str, Any] = {"encoding": "ordinal", "losses": {}, "reason": ""}
    rng = np.random.RandomState(seed)
    a, b = _halves(y, task, rng)
    if len(y) < MIN_ROWS or (
        task != "regression" and (len(np.unique(y[a])) < 2 or len(np.unique(y[b])) < 2)
    ):
        report["reason"] = f"codes: fewer than {MIN_ROWS} rows or a half with one class"
        report["seconds"] = time.perf_counter() - start
        return "ordinal", report
    small = _small_clone(est)
    per_row: dict[str, list[np.ndarray]] = {"ordinal": [], "onehot": []}
    for ctx, query in ((a, b), (b, a)):
        scale = float(np.var(y[query])) if task == "regression" else 1.0
        scale = scale if scale > 0 else 1.0
        member_seed = int(rng.randint(2**31))
        for encoding in per_row:
            fitted = clone(small).set_params(
                random_state=member_seed, categorical_encoding=encoding
            )
            with warnings.catch_warnings():  # too wide for one-hot: it warns, keeps codes
                warnings.simplefilter("ignore", UserWarning)
                fitted.fit(X[ctx], y[ctx])
            per_row[encoding].append(_row_losses(fitted, X[query], y[query], task) / scale)
    best, mean = _winner({k: np.concatenate(v) for k, v in per_row.items()}, "ordinal")
    report.update(encoding=best, losses=mean)
    report["reason"] = (
        "one-hot won on held-out rows" if best == "onehot" else "codes: one-hot did not win"
    )
    report["seconds"] = time.perf_counter() - start
    return best, report


def select_features(
    est: Any, X: np.ndarray, y: np.ndarray, x_enc: np.ndarray, task: str, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Columns of X to keep (sorted indices) and a report; see the module docstring.

    X is the validated table (raw cells, what ``fit`` takes), x_enc its encoded floats
    (for the ranking), y the targets (class labels or numbers).
    """
    from sklearn.base import clone

    start = time.perf_counter()
    n, d = X.shape
    everything = np.arange(d)
    report: dict[str, Any] = {"n_features": d, "k": d, "losses": {}, "reason": ""}
    if d < MIN_FEATURES or n < MIN_ROWS:
        report["reason"] = (
            f"kept every column: fewer than {MIN_FEATURES} columns or {MIN_ROWS} rows"
        )
        report["seconds"] = time.perf_counter() - start
        return everything, report
    rng = np.random.RandomState(seed)
    a, b = _halves(y, task, rng)
    if task != "regression" and (len(np.unique(y[a])) < 2 or len(np.unique(y[b])) < 2):
        report["reason"] = "kept every column: a half of the rows holds one class only"
        report["seconds"] = time.perf_counter() - start
        return everything, report
    sizes = candidate_sizes(d)
    small = _small_clone(est)
    losses: dict[int, list[np.ndarray]] = {k: [] for k in sizes}
    for ctx, query in ((a, b), (b, a)):
        order = feature_ranking(x_enc[ctx], y[ctx], task, int(rng.randint(2**31)))
        scale = float(np.var(y[query])) if task == "regression" else 1.0
        scale = scale if scale > 0 else 1.0
        member_seed = int(rng.randint(2**31))
        for k in sizes:
            cols = np.sort(order[:k])
            fitted = clone(small).set_params(random_state=member_seed)
            fitted.fit(X[ctx][:, cols], y[ctx])
            losses[k].append(_row_losses(fitted, X[query][:, cols], y[query], task) / scale)
    best, mean = _winner({k: np.concatenate(v) for k, v in losses.items()}, d)
    report["losses"] = mean
    report["k"] = best
    if best == d:
        report["reason"] = "kept every column: no smaller set won on held-out rows"
        report["seconds"] = time.perf_counter() - start
        return everything, report
    if n > RANK_ROWS:
        rows = rng.choice(n, RANK_ROWS, replace=False)
    else:
        rows = np.arange(n)
    order = feature_ranking(x_enc[rows], y[rows], task, int(rng.randint(2**31)))
    report["reason"] = f"the top {best} of {d} columns won on held-out rows"
    report["seconds"] = time.perf_counter() - start
    return np.sort(order[:best]), report
