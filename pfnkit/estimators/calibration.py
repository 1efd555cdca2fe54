"""Softmax temperature of classifier checkpoints, and the figures that judge it.

A PFN classifier is trained to output its prior's posterior predictive, but a small network
trained briefly is not: the bundled one is underconfident (on digits its accuracy is 0.90
while its mean top probability is 0.52). Dividing the logits by a temperature T < 1 before
the softmax sharpens every member's prediction. Two ways to choose T:

* ``calibrate_temperature`` (``pfnkit calibrate`` for classifier checkpoints): once per
  checkpoint, on held-out draws of the checkpoint's own prior recipe, through
  ``PFNClassifier`` end to end; stored on the card as ``calibration.softmax_temperature``,
  which ``PFNClassifier(softmax_temperature="auto")`` (the default) then uses.
* ``TemperatureCV`` (``PFNClassifier(softmax_temperature="cv")``): on the user's table, by
  K-fold cross-validated log loss (what TabPFN's ``tuning_config`` does); costs K extra fits.

Both pick the grid value with the lowest mean log loss. ``expected_calibration_error`` is the
usual ECE: 15 equal-width bins of the top probability, the row-weighted mean gap between
accuracy and mean top probability per bin.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch

from pfnkit.exceptions import CheckpointError, InvalidConfigError

DEFAULT_TEMPERATURE = 0.9  # TabPFN v2's; used when a checkpoint's card has none
# 0.1, 0.15, ..., 1.5. On its own prior a checkpoint wants about 1; on real tables that are
# far easier than the prior's (digits, wine) 5-fold CV picked 0.1-0.2, which beat 0.3 there
TEMPERATURE_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(29))
ECE_BINS = 15
CALIBRATION_SEED = 30_000_000  # far from training's (seed, step, rank) streams
_EPS = 1e-15  # probabilities are clipped here in log losses (as sklearn's log_loss does)


# ---------------------------------------------------------------- figures


def expected_calibration_error(
    y_true: Any,
    proba: Any,
    *,
    classes: Any = None,
    n_bins: int = ECE_BINS,
    sample_weight: Any = None,
) -> float:
    """Expected calibration error of the top-class probability.

    Rows are put in ``n_bins`` equal-width bins of their largest probability (bin i holds
    (i/n, (i+1)/n], the first also 0); ECE is the (weighted) share of rows in each bin
    times |accuracy - mean top probability| there, summed over bins.

    Args:
        y_true: (n,) true labels.
        proba: (n, K) predicted probabilities, columns ordered as ``classes``.
        classes: (K,) the labels of the columns (default 0..K-1, as from a label encoder).
        n_bins: number of bins.
        sample_weight: (n,) optional row weights.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be (n_samples, n_classes). Got shape {proba.shape}.")
    labels = np.arange(proba.shape[1]) if classes is None else np.asarray(classes)
    pred = labels[np.argmax(proba, axis=1)]
    correct = pred == np.asarray(y_true)
    return _ece(proba.max(axis=1), correct, sample_weight, n_bins)


def _ece(conf: np.ndarray, correct: np.ndarray, weight: Any, n_bins: int) -> float:
    w = np.ones_like(conf) if weight is None else np.asarray(weight, dtype=np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = w.sum()
    if total <= 0:
        return math.nan
    hits = np.bincount(idx, weights=w * correct, minlength=n_bins)
    confs = np.bincount(idx, weights=w * conf, minlength=n_bins)
    return float(np.abs(hits - confs).sum() / total)


# ---------------------------------------------------------------- validation


def check_grid(owner: str, grid: Any, name: str = "grid") -> np.ndarray:
    """The grid as a sorted float array; a one-line error naming the parameter unless it
    holds at least one finite temperature > 0 and nothing else."""
    try:
        values = np.asarray(grid, dtype=np.float64).ravel()
        ok = (
            not isinstance(grid, str | bytes)
            and np.ndim(grid) == 1
            and values.size >= 1
            and bool(np.all(np.isfinite(values)))
            and bool(np.all(values > 0))
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = repr(grid)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InvalidConfigError(
            f"The '{name}' parameter of {owner} must be a non-empty sequence of finite "
            f"temperatures > 0 (e.g. {TEMPERATURE_GRID[0]}..{TEMPERATURE_GRID[-1]}). "
            f"Got {shown} instead."
        )
    return np.unique(values)


def _check_int(owner: str, name: str, value: Any, low: int) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise InvalidConfigError(
            f"The '{name}' parameter of {owner} must be an int >= {low}. Got {value!r} instead."
        )


def card_temperature(card: Any) -> float | None:
    """The calibrated softmax temperature on a checkpoint's card (a ``PFNCard`` or a raw
    card dict), or None when it has none."""
    cal = getattr(card, "calibration", None)
    if cal is None and isinstance(card, dict):
        cal = card.get("calibration")
    if not isinstance(cal, dict) or "softmax_temperature" not in cal:
        return None
    v = cal["softmax_temperature"]
    if isinstance(v, bool) or not isinstance(v, Real) or not 0 < float(v) < 100:
        raise CheckpointError(
            "The checkpoint's calibration.softmax_temperature must be a number in (0, 100). "
            f"Got {v!r}; recalibrate with `pfnkit calibrate`."
        )
    return float(v)


# ---------------------------------------------------------------- tuning on the user's data


@dataclass(frozen=True)
class TemperatureCV:
    """How ``PFNClassifier(softmax_temperature=TemperatureCV(...))`` tunes the temperature
    on the training table (``softmax_temperature="cv"`` is ``TemperatureCV()``).

    The table is split into ``folds`` stratified folds (shuffled with the estimator's
    ``random_state``); a copy of the estimator with the same parameters is fitted on each
    fold's other rows and its members' logits for the fold's rows kept; the grid value with
    the lowest out-of-fold log loss is chosen. Cost: ``folds`` more fits and one prediction
    of every training row; trying the temperatures is free. A fold trains whatever the
    estimator trains: with ``fine_tune``, or ``context="auto"`` on a table above the
    checkpoint's context limit (learned prompts for half the members), every fold trains
    too (measured: 0.6 s -> 2.6 s median over the benchmark's tables, up to 77 s on 2,700
    rows); ``context="subsample"`` makes the folds cheap there.

    Args:
        folds: number of folds (>= 2).
        grid: the temperatures tried.
        context: the folds' context strategy (a ``context=`` value of the estimator);
            None (default): the estimator's own.
    """

    folds: int = 5
    grid: tuple[float, ...] = TEMPERATURE_GRID
    context: Any = None

    def __post_init__(self) -> None:
        from pfnkit.tuning import CONTEXTS, STRATEGY_TYPES

        _check_int("TemperatureCV", "folds", self.folds, 2)
        grid = check_grid("TemperatureCV", self.grid)
        object.__setattr__(self, "grid", tuple(float(t) for t in grid))
        c = self.context
        if not (
            c is None or (isinstance(c, str) and c in CONTEXTS) or isinstance(c, STRATEGY_TYPES)
        ):
            raise InvalidConfigError(
                "The 'context' parameter of TemperatureCV must be None (the estimator's own), "
                f"one of {sorted(CONTEXTS)} or a context strategy object. Got {c!r} instead."
            )


def tune_temperature_cv(
    estimator: Any, X: Any, y: np.ndarray, options: TemperatureCV
) -> dict[str, Any]:
    """Out-of-fold log loss of a fitted ``PFNClassifier``'s parameters at every grid
    temperature on (X, y); returns the report ``temperature_cv_`` holds."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    from sklearn.utils import _safe_indexing, check_random_state

    t0 = time.perf_counter()
    owner = type(estimator).__name__
    n = len(y)
    counts = np.unique(y, return_counts=True)[1]
    if n < 2 * options.folds or counts.max() < options.folds:
        raise ValueError(
            f"The 'softmax_temperature' parameter of {owner} asks for {options.folds}-fold "
            f"cross-validation, which needs at least {2 * options.folds} training rows and a "
            f"class with {options.folds} rows; got {n} rows (largest class {counts.max()}). "
            "Use fewer folds (TemperatureCV(folds=...)) or a fixed temperature."
        )
    grid = np.asarray(options.grid)
    seed = int(check_random_state(estimator.random_state).randint(2**31))
    splitter = StratifiedKFold(n_splits=options.folds, shuffle=True, random_state=seed)
    nll = np.zeros((grid.size, n))
    classes = estimator.classes_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # context and small-class notices, once per fold
        for train, test in splitter.split(np.zeros((n, 1)), y):
            if np.unique(y[train]).size < 2:
                # a rare class held out leaves one class: that fold predicts it for sure,
                # whatever the temperature (it adds the same loss to every grid value)
                nll[:, test] = np.where(y[test] == y[train][0], 0.0, -np.log(_EPS))
                continue
            fold = clone(estimator).set_params(softmax_temperature=1.0)
            if options.context is not None:
                fold.set_params(context=options.context)
            fold.fit(_safe_indexing(X, train), y[train])
            logits = fold._meta_logits(fold._validate_predict_X(_safe_indexing(X, test)))
            cols = np.searchsorted(classes, fold.classes_)
            truth = np.searchsorted(classes, y[test])
            for g, t in enumerate(grid):
                p = np.zeros((test.size, classes.size))
                p[:, cols] = fold._proba_from_logits(logits, float(t))
                nll[g, test] = -np.log(np.clip(p[np.arange(test.size), truth], _EPS, None))
    mean = nll.mean(axis=1)
    best = int(np.argmin(mean))
    return {
        "softmax_temperature": float(grid[best]),
        "folds": options.folds,
        "temperatures": [float(t) for t in grid],
        "log_loss": [round(float(v), 5) for v in mean],
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------- calibration on the prior


def calibrate_temperature(
    checkpoint: Any = "default",
    *,
    draws: int = 300,
    seed: int = CALIBRATION_SEED,
    min_rows: int = 32,
    max_rows: int | None = None,
    test_rows: int = 128,
    n_estimators: int = 8,
    grid: Any = TEMPERATURE_GRID,
    progress: Any = None,
) -> dict[str, Any]:
    """The softmax temperature that minimises a classifier checkpoint's log loss on
    held-out draws of its own prior.

    Each draw is one table from the checkpoint's prior recipe (a generator seeded far from
    training's streams) with a log-uniform number of training rows in [min_rows, max_rows]
    (default: the checkpoint's context limit) and ``test_rows`` query rows; query rows of a
    class absent from the training rows are dropped (no classifier can predict them).
    ``PFNClassifier`` (``n_estimators`` members, its other defaults, including how it
    averages them) fits the training rows;
    its members' logits for the query rows are kept, and every grid temperature is scored
    on them. The temperature with the lowest mean log loss (each table weighted equally)
    is chosen.

    Returns:
        The "calibration" entry of a card: ``softmax_temperature`` and the log loss (nats
        per query row), ECE (15 bins) and accuracy on the draws at the old default
        (``*_before``, T = 0.9), at the chosen temperature (``*_after``) and at T = 1
        (``*_t1``, the network as trained), the log loss at every grid temperature, and how
        it was measured (draws, seed, rows, ...).
    """
    from pfnkit.estimators._base import bundled_checkpoint
    from pfnkit.estimators.classifier import PFNClassifier
    from pfnkit.priors import BatchShape, build_prior
    from pfnkit.train.checkpoint import load_pfn

    owner = "calibrate_temperature"
    temps = check_grid(owner, grid)
    for name, value, low in (
        ("draws", draws, 1),
        ("min_rows", min_rows, 2),
        ("test_rows", test_rows, 1),
        ("n_estimators", n_estimators, 1),
    ):
        _check_int(owner, name, value, low)
    if max_rows is not None:
        _check_int(owner, "max_rows", max_rows, 2)
    if isinstance(checkpoint, str) and checkpoint == "default":
        checkpoint = bundled_checkpoint("classification")
    model, card = load_pfn(checkpoint, expect="classifier", what=owner)
    if any(p.requires_grad for p in model.parameters()):
        model = copy.deepcopy(model).requires_grad_(False)  # else every fit copies it
    if not card.prior:
        raise CheckpointError(
            f"{owner} draws tables from the checkpoint's prior recipe, and this checkpoint's "
            "card has none (a PFN built in memory?). Pass a checkpoint file or run directory."
        )
    prior = build_prior(card.prior)
    top = int(max_rows if max_rows is not None else (card.context_limit or 256))
    low = int(min(min_rows, top))
    gen = torch.Generator().manual_seed(int(seed))
    n_features = model.config.n_features
    # the old default and T = 1 are scored too (for the report), but only the grid is chosen from
    scored = np.unique(np.concatenate([temps, [DEFAULT_TEMPERATURE, 1.0]]))
    t0 = time.perf_counter()
    nll: list[np.ndarray] = []  # per draw: (S,) mean log loss at each scored temperature
    conf: list[np.ndarray] = []  # per draw: (S, m) top probability of each query row
    hit: list[np.ndarray] = []  # per draw: (S, m) whether the top class is right
    tries = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # context and feature notices: expected here
        while len(nll) < draws:
            tries += 1
            if tries > 20 * draws + 100:
                raise CheckpointError(
                    f"{owner}: only {len(nll)} of {tries} prior draws had two classes among "
                    "their training rows; the prior recipe on the card cannot be calibrated on."
                )
            u = float(torch.rand((), generator=gen))
            rows = int(round(math.exp(math.log(low) + u * (math.log(top) - math.log(low)))))
            b = prior.sample(BatchShape(1, rows + test_rows, n_features, rows), generator=gen)
            d = int(b.n_features[0]) if b.n_features is not None else n_features
            x = b.x[0, :, :d].double().numpy()
            y = b.target_y[0].round().long().numpy()
            y_ctx, y_q = y[:rows], y[rows:]
            seen = np.isin(y_q, y_ctx)
            if np.unique(y_ctx).size < 2 or not seen.any():
                continue
            est = PFNClassifier(
                checkpoint=model,
                n_estimators=n_estimators,
                softmax_temperature=1.0,
                device="cpu",
                random_state=len(nll),
            ).fit(x[:rows], y_ctx)
            logits = est._meta_logits(est._validate_predict_X(x[rows:][seen]))
            truth = np.searchsorted(est.classes_, y_q[seen])
            idx = np.arange(truth.size)
            per_t = [est._proba_from_logits(logits, float(t)) for t in scored]
            nll.append(
                np.array([-np.log(np.clip(p[idx, truth], _EPS, None)).mean() for p in per_t])
            )
            conf.append(np.stack([p.max(axis=1) for p in per_t]))
            hit.append(np.stack([p.argmax(axis=1) == truth for p in per_t]))
            if progress is not None:
                progress(len(nll), draws)
    curve = np.mean(nll, axis=0)  # (S,) each table weighted equally
    on_grid = np.isin(scored, temps)
    best = int(np.argmin(np.where(on_grid, curve, np.inf)))
    weight = np.concatenate([np.full(c.shape[1], 1.0 / c.shape[1]) for c in conf])
    c_all, h_all = np.concatenate(conf, axis=1), np.concatenate(hit, axis=1)

    def figures(t: float) -> tuple[float, float, float]:
        """(log loss, ECE, accuracy) at scored temperature t; rows weighted 1 / (query
        rows of their table), so that each table counts equally here too."""
        g = int(np.argmin(np.abs(scored - t)))
        acc = float((weight * h_all[g]).sum() / weight.sum())
        return float(curve[g]), _ece(c_all[g], h_all[g], weight, ECE_BINS), acc

    chosen = float(scored[best])
    before, after, t1 = figures(DEFAULT_TEMPERATURE), figures(chosen), figures(1.0)
    return {
        "softmax_temperature": chosen,
        "nll_before": round(before[0], 4),
        "nll_after": round(after[0], 4),
        "nll_t1": round(t1[0], 4),
        "ece_before": round(before[1], 4),
        "ece_after": round(after[1], 4),
        "ece_t1": round(t1[1], 4),
        "accuracy_before": round(before[2], 4),
        "accuracy_after": round(after[2], 4),
        "before_temperature": DEFAULT_TEMPERATURE,
        "nll_by_temperature": {
            f"{t:g}": round(float(v), 4) for t, v, g in zip(scored, curve, on_grid) if g
        },
        "draws": int(draws),
        "seed": int(seed),
        "rows": [low, top],
        "test_rows": int(test_rows),
        "n_estimators": int(n_estimators),
        # how the members were averaged (PFNClassifier's default when calibrated)
        "average_before_softmax": bool(est.average_before_softmax),
        "grid": [float(temps.min()), float(temps.max()), int(temps.size)],
        "seconds": round(time.perf_counter() - t0, 1),
    }
