"""PFNTreatmentEffect: heterogeneous and average treatment effects from a causal PFN.

``fit(X, t, y)`` stores an observational study (covariates X, binary treatment t, outcome y)
as the PFN's context; ``effect``, ``effect_interval``, ``predict_outcomes``, ``ate`` and
``ate_interval`` ask the network's query rows for tau(x), mu0(x)/mu1(x) and the study's
average effect (see ``pfnkit.priors.causal`` for what the network was trained to answer).
The method names follow EconML's estimators.

The treatment is never a feature: it reaches the network as a per-row input (w0, w1, ate),
so the ensemble's feature permutations and preprocessing never see it. Each member is a
view of X (``members.py``: preprocessing, feature order or subset) with its own context
rows; the members' predictive distributions are mixed.

Shape legend: B members, n training rows, M query rows, f features the PFN reads,
K bars, R = 3 per-row inputs.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from pfnkit.estimators._base import resolve_device
from pfnkit.estimators.members import (
    FEATURE_REDUCTIONS,
    Member,
    feature_map,
    fit_transforms,
    member_modes,
)
from pfnkit.estimators.preprocessing import MODES, TableEncoder, dates_as_objects
from pfnkit.exceptions import CheckpointError
from pfnkit.model.heads import BarDistribution
from pfnkit.priors.causal import factual_inputs
from pfnkit.tuning import (
    FineTune,
    FullContext,
    KNNContext,
    SubsampleContext,
    resolve_fine_tune,
)
from pfnkit.tuning._base import PREDICT_TOKENS, stratified_rows
from pfnkit.tuning.knn import DEFAULT_K, DistanceSpace
from pfnkit.tuning.outcomes import TREATMENT_FINE_TUNE, fine_tune_outcomes

DEFAULT_CHECKPOINT = "treatment-effect.safetensors"
CONTEXTS = ("auto", "subsample", "full", "knn")
# the row inputs (w0, w1, ate) of each query kind; a context row is (1 - t, t, 0)
QUERY_INPUTS = {
    "mu0": (1.0, 0.0, 0.0),
    "mu1": (0.0, 1.0, 0.0),
    "tau": (-1.0, 1.0, 0.0),
    "ate": (-1.0, 1.0, 1.0),
}
ATE_QUERIES = 16  # ATE query rows per member (their x is ignored; the mixture smooths noise)
OVERLAP_WARN_SHARE = 0.1  # warn when this share of rows (or more) has poor overlap
MAX_WIDENING = 10.0
PROPENSITY_FOLDS = 5
MAX_LEVELS = 30  # one-hot columns per categorical covariate in the propensity model
EFFECT_FROM = ("stacked", "both", "tau", "outcomes")
# fixed weights (c, a, b1, b0) of the non-stacked estimates c + a tau + b1 mu1 - b0 mu0
EFFECT_WEIGHTS = {
    "both": (0.0, 0.5, 0.5, 0.5),
    "tau": (0.0, 1.0, 0.0, 0.0),
    "outcomes": (0.0, 0.0, 1.0, 1.0),
}
# fewer fitted rows: "stacked" keeps the "both" weights (below ~400 rows the fitted
# weights' gains were within noise, and sometimes losses, on the benchmark's families)
STACK_MIN_ROWS = 400
TUNE_FOLDS = 3  # with fine_tune and "stacked": cross-fitted tunes that weigh the tuned answer
ATE_FROM = ("dr", "network")
DR_FOLDS = 5  # cross-fitting folds of the doubly robust ATE
DR_CLIP = 0.01  # propensities clipped to [DR_CLIP, 1 - DR_CLIP] in its weights
DR_TREE_ROWS = 50  # rows of each arm from which its propensities come from trees
# the CATE interval of an estimate that beats tau's posterior mean is narrowed by at most
# sqrt(WIDTH_RATIO_MIN) (see PFNTreatmentEffect.interval_narrowing_)
WIDTH_RATIO_MIN = 0.1
Z_975 = 1.959963984540054  # the standard normal's 97.5 % quantile
# Most context rows per member by default, when a checkpoint allows more (the bundled one
# stops at 448): on a network trained to 896 (docs/gpu.md, the warm start) contexts of 448
# and 896 rows gave the same PEHE on IHDP and NW-B (5 seeds each, 1.117 vs 1.103 and 0.376 vs
# 0.380; 512: 1.370 vs 1.383 on all 50 IHDP seeds), and 896 took 1.5x the time (2.21 s vs
# 1.42 s for fit + effect at 1,000 rows on 2 cores). max_context= or context="full" ask more.
AUTO_CONTEXT_ROWS = 512
KNN_K = DEFAULT_K  # kNN context rows in all (half per arm): see LocalTreatmentContext
_OWNER = "PFNTreatmentEffect"


# ---------------------------------------------------------------- propensity model


class PropensityModel:
    """A logistic regression of t on the encoded covariates, for overlap diagnostics (or,
    with ``trees``, gradient-boosted trees with early stopping, for the doubly robust
    ATE's weights: a logistic model misses a nonlinear assignment).

    The design matrix: numeric columns (robust-scaled by ``TableEncoder``) clipped to
    [-5, 5] with NaN as 0 (the median) plus a missing indicator per column that has NaN;
    categorical columns one-hot (their MAX_LEVELS most frequent levels, a missing level of
    its own, unseen or rarer levels all zero); then standardised. ``C=1``: an L2 penalty
    keeps separable data from giving exact 0 and 1.
    """

    def __init__(self, categorical: np.ndarray, seed: int, trees: bool = False) -> None:
        self.categorical = categorical
        self.seed = seed
        self.trees = trees

    def _design(self, x: np.ndarray) -> np.ndarray:
        cols = []
        for j in range(x.shape[1]):
            col = x[:, j].astype(np.float64)
            nan = np.isnan(col)
            if self.categorical[j]:
                for level in self.levels_[j]:
                    cols.append(nan if np.isnan(level) else col == level)
            else:
                cols.append(np.clip(np.where(nan, 0.0, col), -5.0, 5.0))
                if self.missing_[j]:
                    cols.append(nan)
        if not cols:
            return np.zeros((x.shape[0], 1))
        return np.stack(cols, axis=1).astype(np.float64)

    def fit(self, x: np.ndarray, t: np.ndarray) -> PropensityModel:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.missing_ = np.isnan(x).any(axis=0)
        self.levels_ = [
            _top_levels(x[:, j]) if self.categorical[j] else np.empty(0) for j in range(x.shape[1])
        ]
        self.pipeline_ = (
            HistGradientBoostingClassifier(early_stopping=True, random_state=self.seed)
            if self.trees
            else make_pipeline(
                StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=self.seed)
            )
        )
        self.pipeline_.fit(self._design(x), t.astype(np.int64))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(t = 1 | x) for encoded rows x (n, d)."""
        return np.asarray(self.pipeline_.predict_proba(self._design(x))[:, 1], dtype=np.float64)

    def cross_fit(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Out-of-fold propensities of the training rows (stratified folds; in-sample when
        an arm has a single row)."""
        from sklearn.model_selection import StratifiedKFold

        folds = min(PROPENSITY_FOLDS, int(min(t.sum(), (1 - t).sum())))
        if folds < 2:
            return self.predict(x)
        out = np.empty(x.shape[0])
        split = StratifiedKFold(folds, shuffle=True, random_state=self.seed % 2**31)
        for train, test in split.split(x, t):
            part = PropensityModel(self.categorical, self.seed, self.trees).fit(x[train], t[train])
            out[test] = part.predict(x[test])
        return out


def _top_levels(col: np.ndarray) -> np.ndarray:
    """The MAX_LEVELS most frequent levels of a categorical column, then NaN if it has one
    (rarer levels get no indicator: an id-like column cannot blow up the design)."""
    seen = col[~np.isnan(col)]
    values, counts = np.unique(seen, return_counts=True)
    keep = values[np.argsort(-counts, kind="stable")[:MAX_LEVELS]]
    return np.append(keep, np.nan) if seen.size < col.size else keep


def widening(propensity: np.ndarray, threshold: float) -> np.ndarray:
    """Interval scale factors (n,) for rows with propensities (n,): 1 inside
    [threshold, 1 - threshold]; outside, sqrt(e* (1 - e*) / (e (1 - e))) with e* the bound,
    capped at MAX_WIDENING.

    Why that form: near x, the data about the scarcer arm grow with e (1 - e) (the variance
    of an inverse-propensity contrast is proportional to 1 / (e (1 - e))), so an interval's
    width is scaled by how much less information a row has than one at the bound.
    """
    e = np.clip(propensity, 1e-12, 1 - 1e-12)
    info = e * (1 - e)
    bound = threshold * (1 - threshold)
    return np.clip(np.sqrt(bound / np.minimum(info, bound)), 1.0, MAX_WIDENING)


# ---------------------------------------------------------------- fitted contexts


@dataclass
class TreatmentContext:
    """Every member's context, encoded once at fit (keys/values with the treatment's row
    inputs), and the x of each member's ATE query rows (any context rows: x is ignored)."""

    model: Any
    cache: Any
    device: str
    n_context_rows: int
    ate_x: np.ndarray  # (B, ATE_QUERIES, f)

    def logits(self, x_test: np.ndarray, query: str) -> torch.Tensor:
        """(B, M, K) logits of query rows x_test (B, M, f) asking for ``query``."""
        b, m, _ = x_test.shape
        step = max(1, PREDICT_TOKENS // max(1, b))
        code = torch.tensor(QUERY_INPUTS[query], dtype=torch.float32, device=self.device)
        outs = []
        for start in range(0, m, step):
            xt = torch.as_tensor(
                np.ascontiguousarray(x_test[:, start : start + step]),
                dtype=torch.float32,
                device=self.device,
            )
            ri = code.expand(*xt.shape[:2], 3)
            outs.append(self.model.predict_cached(self.cache, xt, row_inputs=ri).float().cpu())
        if not outs:
            return torch.zeros(b, 0, self.model.config.n_outputs)
        return torch.cat(outs, dim=1)


@dataclass
class LocalTreatmentContext:
    """kNN contexts: a query row's context is its nearest treated and nearest control
    rows (in each member's view; distances as ``pfnkit.tuning.knn.DistanceSpace``), k in
    all, half per arm where both arms have enough rows. Every query row is its own small
    dataset, (k + 1) rows through the network, batched."""

    model: Any
    device: str
    views: list[np.ndarray]  # B x (n, f): the members' views of the training rows
    z: np.ndarray  # (n,) standardised outcomes
    t: np.ndarray  # (n,) treatments
    spaces: list[DistanceSpace]
    arms: list[tuple[np.ndarray, Any, int]]  # per arm: rows, per-member indexes, k_arm
    k: int

    @classmethod
    def fit(
        cls,
        model: Any,
        device: str,
        views: list[np.ndarray],
        z: np.ndarray,
        t: np.ndarray,
        k: int,
    ) -> LocalTreatmentContext:
        from sklearn.neighbors import NearestNeighbors

        treated, control = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
        k_t = min(treated.size, max(k // 2, k - control.size))
        k_c = min(control.size, k - k_t)
        no_cat = np.zeros(views[0].shape[1], dtype=bool)  # views are numeric codes
        spaces = [DistanceSpace(v, no_cat) for v in views]
        arms = []
        for rows, k_arm in ((treated, k_t), (control, k_c)):
            index = [
                NearestNeighbors(n_neighbors=k_arm).fit(sp(v[rows])) for sp, v in zip(spaces, views)
            ]
            arms.append((rows, index, k_arm))
        return cls(model, device, views, z, t, spaces, arms, k_t + k_c)

    @property
    def n_context_rows(self) -> int:
        return self.k

    def logits(self, x_test: np.ndarray, query: str) -> torch.Tensor:
        """(B, M, K) logits of query rows x_test (B, M, f) asking for ``query``."""
        b_n, m, _ = x_test.shape
        code = np.asarray(QUERY_INPUTS[query], dtype=np.float32)
        step = max(1, PREDICT_TOKENS // (self.k + 1))
        out = []
        for b in range(b_n):
            zq = self.spaces[b](x_test[b])
            rows = np.concatenate(
                [
                    rows_[index[b].kneighbors(zq, return_distance=False)]
                    for rows_, index, _ in self.arms
                ],
                axis=1,
            )  # (M, k)
            parts = []
            for s0 in range(0, m, step):
                r = rows[s0 : s0 + step]
                x = np.concatenate([self.views[b][r], x_test[b, s0 : s0 + step, None]], axis=1)
                tr = self.t[r]
                ri = np.concatenate(
                    [
                        factual_inputs(tr),
                        np.broadcast_to(code, (len(r), 1, 3)),
                    ],
                    axis=1,
                )
                with torch.no_grad():
                    logits = self.model(
                        _tensor(x, self.device),
                        _tensor(self.z[r], self.device),
                        row_inputs=_tensor(ri, self.device),
                    )
                parts.append(logits[:, -1].float().cpu())
            out.append(torch.cat(parts) if parts else torch.zeros(0, self.model.config.n_outputs))
        return torch.stack(out)


def _tensor(a: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)


# ---------------------------------------------------------------- the estimator


class PFNTreatmentEffect(BaseEstimator):
    """Conditional and average treatment effects of a binary treatment, in one forward pass
    of a PFN pretrained on simulated observational studies (the ``causal`` prior).

    ``fit(X, t, y)`` takes covariates X (a NumPy array or a pandas DataFrame: numeric,
    categorical and object columns, NaN for missing), a binary treatment t (0 control, 1
    treated) and an outcome y. Ignorability is assumed: X holds every confounder.

    Methods (all in y's units; standardisation of y is undone, effects by the scale only,
    outcomes by scale and shift):

    - ``effect(X)``: posterior mean of tau(x) = E[y(1) - y(0) | x] per row;
    - ``effect_interval(X, alpha=0.05)``: (lower, upper), the alpha/2 and 1 - alpha/2
      quantiles of tau(x)'s posterior (widened where overlap is poor, see below);
    - ``predict_outcomes(X)``: (mu0, mu1), posterior means of both noise-free outcome
      surfaces;
    - ``ate()`` and ``ate_interval(alpha=0.05)``: the average effect over the fitted rows
      (the sample ATE) and its interval, doubly robust by default (see ``ate_from``).

    Intervals: each member's bar distribution is a posterior predictive of the asked
    quantity; the members' distributions are mixed (the mean of their probabilities) and
    the interval is the mixture's quantiles, so members that disagree widen it. The network
    answers tau(x) and the ATE directly (not from the two outcome marginals, which do not
    carry their joint posterior); every target is noise-free, so an interval is about the
    effect, not a new unit's outcome.

    Overlap: a cross-fitted logistic regression of t on X estimates the propensity of each
    fitted row (``propensity_``); ``overlap_share_`` is the share of rows outside
    [overlap_threshold, 1 - overlap_threshold]. When that share is at least 10 % a
    UserWarning gives it. The effect interval of a row with propensity e outside the bounds
    is widened about its median by sqrt(e* (1 - e*) / (e (1 - e))) (e* the bound, at most
    10x): the information about the scarcer arm near x falls with e (1 - e). The ATE
    interval is widened by the root mean square of the fitted rows' factors. Past the
    context limit (n rows, n_ctx per member) the ATE interval is narrowed by
    sqrt(n_ctx / n): each member's ATE posterior is that of an average over its n_ctx
    rows, and the study's ATE averages n. When the
    propensities separate the arms (no overlap at all) fit raises a ValueError.

    Intervals of a stacked estimate: tau(x)'s posterior is an interval for its own mean
    tq(x), and the effect (``effect_from``) can be a better estimate than tq. Where the
    study's out-of-fold answers show it, the interval is narrowed about its median by
    ``interval_narrowing_`` = sqrt(r), r = (P - G) / P clipped to [0.1, 1]: P =
    mean((t - e)^2 s(x)^2) is the weighted squared error of tq that the posterior claims
    (s(x): its 95 % half-width over 1.96, cross-fitted), G = R(tq) - R(f) the drop in
    Nie and Wager's R-loss from tq to the estimate f (cross-fitted answers, f's stacked
    weights cross-validated), an estimate of mean((t - e)^2 ((tq - tau)^2 - (f -
    tau)^2)). So r estimates f's weighted squared error relative to the one the interval
    was made for. It is never widened (r <= 1), and it is 1 for ``effect_from="tau"`` and
    for a fine-tuned estimate with no out-of-fold answers (under 400 rows). On IHDP B the
    stacked estimate's errors are far below the posterior's (median sqrt(r) 0.74); on the
    prior's own draws they are not (0.93-0.99). The card's CATE scale is calibrated with it.

    Calibration: a checkpoint's card may carry interval scales chosen on held-out draws of
    its own prior (``pfnkit calibrate``, ``calibrate_intervals``): every CATE or ATE
    interval is scaled about its median by them (``interval_scale_``), so that 95 %
    intervals cover 95 % of held-out prior studies. The bundled checkpoint's are on its card.

    Args:
        checkpoint: "default" (the bundled ``treatment-effect.safetensors``), a run
            directory, a .pt or .safetensors file of a ``causal``-prior checkpoint, or a
            loaded PFN with ``n_row_inputs=3``.
        n_estimators: ensemble members (feature permutations, alternating quantile / power /
            no preprocessing of X, context subsamples); their distributions are mixed.
        context: how each member's context is chosen. Supported: "auto" (all rows when
            they fit the checkpoint's training context, else "subsample"), "subsample" (a
            random subset of at most the context limit per member, both arms kept),
            "full" (every row in one context; beyond the training limit the network
            extrapolates), "knn" (each row's effect and outcomes from its own context: its
            k / 2 nearest treated and k / 2 nearest control rows, k = 100 by default, the kNN
            matching of LoCalPFN and of matching estimators), or
            ``pfnkit.tuning.SubsampleContext(max_rows=...)`` / ``FullContext()`` /
            ``KNNContext(k=..., mode="exact")`` (k: context rows in all, half per arm
            where both arms have them). Learned prompts ("tuned") are not supported
            (they train on a classifier's or regressor's loss); see ``fine_tune``. The ATE is a
            mean over all rows, so it always comes from the subsample contexts: past the
            context limit each member's ATE query answers its subsample's ATE and the
            mixture over members averages these.
        max_context: most context rows per member (default: the checkpoint's limit, at
            most ``AUTO_CONTEXT_ROWS`` = 512: past it each member takes its own random
            subsample of 512 rows, both arms kept, silently while the study fits the
            checkpoint's limit; measured as accurate as full contexts and ~1.5x faster).
        preprocessing: "alternate" (quantile, power, none in turn) or one of them.
        feature_reduction: how X wider than the checkpoint is read: "subset" or "pca".
        overlap_threshold: rows with an estimated propensity outside [threshold,
            1 - threshold] count as poorly overlapped (diagnostics and widening).
        effect_from: how ``effect`` estimates tau(x): "tau" (the network's tau(x) query,
            its posterior mean), "outcomes" (mu1(x) - mu0(x) from its two outcome
            queries), "both" (their average) or "stacked" (the default): the network's
            answers combined with weights fitted to the study by the R-loss of Nie and
            Wager's stacking. On cross-fitted answers (``ate_from``'s folds) and
            cross-fitted tree propensities e(x), the residual of y on m(x) = e mu1 +
            (1 - e) mu0 is regressed, by non-negative least squares, on (t - e(x)) times
            the candidates of two forms: "pooled", c + a tau + b (mu1 - mu0), and "arms",
            c + a tau + b1 mu1 - b0 mu0 (c free, the rest >= 0). Of "both"'s fixed
            weights and the two fitted forms, the one with the lowest 5-fold
            cross-validated R-loss is kept (always "both"'s under STACK_MIN_ROWS = 400
            rows or with an arm of one row); ``effect_weights_`` says which. The
            network's answers are shrunk towards the prior's typical effects; stacking
            undoes this where the study's data show it (see the README's benchmark).
            Costs 5 more context encodings at fit. With ``context="knn"`` the weights
            (fitted on the shared contexts' answers) are applied to the kNN answers.
            ``effect_interval`` is tau(x)'s posterior interval moved to the estimate and
            narrowed by ``interval_narrowing_`` (see "Intervals of a stacked estimate").
        ate_from: how ``ate`` and ``ate_interval`` are formed. "dr" (the default): the
            augmented inverse-propensity (AIPW) estimate with the network as the outcome
            model, cross-fitted: in 5 stratified folds each fold's mu0(x), mu1(x) come
            from contexts of the other folds' rows, and the mean of
            mu1 - mu0 + t (y - mu1) / e - (1 - t) (y - mu0) / (1 - e) over the rows (e the
            cross-fitted propensities, clipped to [0.01, 0.99]) is the ATE, with a normal
            interval from its standard error. The residual term removes the bias of the
            network's outcome surfaces (smoothing, a prior that differs from the data) to
            first order, which a mean of its effects keeps. When the effect is stacked
            (``effect_weights_["stacked"]``), a second outcome model is formed from the
            stacked effect f (arms m(x) - e f(x) and m(x) + (1 - e) f(x), m as in
            ``effect_from``), and of the two score sets the one with the smaller
            variance (the more efficient estimate) gives the ATE and its interval. The
            propensities here are cross-fitted gradient-boosted trees (the logistic
            ``propensity_`` when an arm has under 50 rows). The cross-fit (5 more
            context encodings) is shared with the stacking and runs at fit, or at the
            first call when nothing is stacked. "network": the network's own ATE query
            and posterior interval (one pass, calibrated on its prior, widened for poor
            overlap), a Bayesian answer that is only as good as the prior's fit.
        device: "auto", "cpu", "cuda", ...
        fine_tune: False (the default), True, or ``pfnkit.tuning.FineTune(...)``: test-time
            adaptation of the outcome surfaces. A copy of the network is trained on the
            study's factual outcomes (random contexts of training rows; other rows ask for
            their own arm's outcome; squared error of the predictive mean, whose minimiser
            is mu_t(x)), with early stopping on a validation split stratified by arm
            (``pfnkit.tuning.outcomes``); ``predict_outcomes`` gives its surfaces. With
            ``effect_from="stacked"`` (the default) and 400 rows or more, three more copies
            are each tuned on two thirds of the rows and answer the third they never saw;
            on these out-of-fold answers (m(x) from their surfaces) the R-loss stacking
            weighs the tuned difference mu1(x) - mu0(x) next to the zero-shot answers and
            a constant (forms "pooled", "arms", "tuned", "arms+tuned", "constant"; the
            plain tuned difference when none beats it), and ``effect`` applies the weights
            to the full tune's difference: a tuned difference that only fits the two
            arms' noise (a constant effect) gets no weight. With any other
            ``effect_from`` (or fewer rows) ``effect`` is the tuned mu1(x) - mu0(x).
            tau(x)'s interval (moved to the new estimate), the ATE query and the doubly
            robust ATE stay the zero-shot network's (the DR residuals must come from rows
            the outcome model never trained on), so ``ate()`` and ``ate_interval()`` do
            not change. True means ``TREATMENT_FINE_TUNE``: at most 60 s and 300 steps
            per tuned copy, lr 1e-4. When the tuned network does not beat the zero-shot
            one on the validation rows (or the study has under ``FineTune.min_rows``
            rows, or 4 per arm) a warning says so and nothing changes. Not with
            ``context="knn"``. Costs up to four trainings at fit (IHDP's 747 rows: about
            a minute on one thread); the README's benchmark gives what it buys.
        random_state: seeds the members, their contexts and the propensity folds.

    Attributes:
        propensity_: (n,) cross-fitted propensities of the fitted rows.
        interval_scale_: {"cate": s, "ate": s}, the checkpoint's calibrated interval scales
            (1.0 where its card has none).
        ate_subsample_factor_: sqrt(n_ctx / n), the ATE interval's narrowing past the
            context limit (1.0 when every row is in context).
        overlap_share_: share of fitted rows with poor overlap.
        y_mean_, y_std_: the standardisation of y.
        effect_weights_: {"intercept": c, "tau": a, "mu1": b1, "mu0": b0, "tuned": g,
            "stacked": False or the form}: ``effect`` is c + a tau(x) + b1 (mu1(x) -
            y_mean_) - b0 (mu0(x) - y_mean_) + g (the fine-tuned network's mu1(x) -
            mu0(x); g = 0 without ``fine_tune``), all in y's units (see ``effect_from``
            and ``fine_tune``); the tuned difference alone is c = a = b1 = b0 = 0, g = 1.
        fine_tune_report_: with ``fine_tune``, what happened: "kept" ("fine-tuned" or
            "zero-shot", with a "reason"), the validation error (standardised y) before
            and at best, the best step, the steps and the seconds; with the stacking,
            "folds" (each cross-fitted copy's kept / steps / seconds) and "stacked" (the
            chosen form, or False for the plain tuned difference); None without.
        n_features_in_, feature_names_in_: as in scikit-learn.
    """

    effect_weights_: dict[str, Any]  # set at fit (see Attributes)
    _parameter_constraints: dict[str, list[Any]] = {
        "checkpoint": [str, os.PathLike, torch.nn.Module],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "context": [StrOptions(set(CONTEXTS)), SubsampleContext, FullContext, KNNContext],
        "max_context": [Interval(Integral, 1, None, closed="left"), None],
        "preprocessing": [StrOptions({"alternate", *MODES})],
        "feature_reduction": [StrOptions(set(FEATURE_REDUCTIONS))],
        "overlap_threshold": [Interval(Real, 0.0, 0.5, closed="neither")],
        "effect_from": [StrOptions(set(EFFECT_FROM))],
        "ate_from": [StrOptions(set(ATE_FROM))],
        "fine_tune": ["boolean", FineTune],
        "device": [str],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        checkpoint: Any = "default",
        n_estimators: int = 8,
        context: Any = "auto",
        max_context: int | None = None,
        preprocessing: str = "alternate",
        feature_reduction: str = "subset",
        overlap_threshold: float = 0.05,
        effect_from: str = "stacked",
        ate_from: str = "dr",
        fine_tune: Any = False,
        device: str = "auto",
        random_state: Any = 0,
    ) -> None:
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.context = context
        self.max_context = max_context
        self.preprocessing = preprocessing
        self.feature_reduction = feature_reduction
        self.overlap_threshold = overlap_threshold
        self.effect_from = effect_from
        self.ate_from = ate_from
        self.fine_tune = fine_tune
        self.device = device
        self.random_state = random_state

    # ---------------------------------------------------------------- fit

    def fit(self, X: Any, t: Any, y: Any) -> PFNTreatmentEffect:
        """Store the study (X, t, y) as the PFN's context and diagnose overlap."""
        self._validate_params()
        t_arr = _vector(t, "t")
        y_arr = _vector(y, "y")
        n_x = _n_rows(X)
        if not n_x == t_arr.size == y_arr.size:
            raise ValueError(
                f"X, t and y of {_OWNER}.fit must have one entry per row. Got {n_x} rows of "
                f"X, {t_arr.size} of t and {y_arr.size} of y; pass aligned arrays."
            )
        t_arr = _binary_treatment(t_arr)
        if self.fine_tune is not False and (
            self.context == "knn" or isinstance(self.context, KNNContext)
        ):
            raise ValueError(
                f"The 'fine_tune' parameter of {_OWNER} works with the shared contexts "
                f"('auto', 'subsample', 'full'), not context={self.context!r} (a row's kNN "
                "context is not what the network is tuned on); drop one of the two."
            )
        if not np.all(np.isfinite(y_arr)):
            raise ValueError(
                f"The 'y' parameter of {_OWNER}.fit contains "
                f"{int((~np.isfinite(y_arr)).sum())} NaN or infinite value(s); drop those "
                "rows (or impute y) before fitting."
            )
        X = validate_data(
            self,
            dates_as_objects(X),
            dtype=None,
            ensure_all_finite="allow-nan",
            ensure_min_samples=2,
        )
        self.encoder_ = TableEncoder().fit(X)
        x = self.encoder_.transform(X)
        rng = check_random_state(self.random_state)
        self._fit_overlap(x, t_arr, int(rng.randint(2**31)))
        self._load()
        # standardise y as the prior does (mean and std of the observed outcomes), in units
        # of a power of two near max|y| so that huge or tiny y neither overflow nor vanish
        top = float(np.abs(y_arr).max())
        unit = float(np.ldexp(1.0, int(np.frexp(top)[1]) - 1)) if top > 0 else 1.0
        u = y_arr / unit
        mean, std = float(u.mean()), float(u.std())
        if std == 0.0:  # a constant outcome: any positive spread (every effect is 0)
            std = 1.0
        self.y_mean_, self.y_std_ = mean * unit, std * unit
        z = ((u - mean) / std).astype(np.float32)
        self._dr_cache: np.ndarray | None = None
        self._cross_fit_cache: np.ndarray | None = None
        self._dr_e_cache: np.ndarray | None = None
        self._narrowing_cache: float | None = None
        # (r_y, per-row R-loss of the estimate), set where the effect is stacked
        self._effect_loss: tuple[np.ndarray, np.ndarray] | None = None
        self._fit_members(x, t_arr, z, rng)
        self._fit_effect_weights()
        self._fit_tuned()
        return self

    def _fit_tuned(self) -> None:
        """With ``fine_tune``: a copy of the network trained on the study's factual
        outcomes (``pfnkit.tuning.outcomes``) and its contexts (the zero-shot members'
        rows). The zero-shot network stays for tau(x)'s interval, the ATE query and the
        doubly robust cross-fit, whose residuals must come from rows it never trained on.
        With ``effect_from="stacked"`` the tuned difference is stacked (``_stack_tuned``)."""
        self.fine_tune_report_: dict[str, Any] | None = None
        self.tuned_context_: TreatmentContext | None = None
        self._tuned_oof: np.ndarray | None = None
        options = resolve_fine_tune(self.fine_tune, default=TREATMENT_FINE_TUNE)
        if options is None:
            return
        x, t, z = self._fit_data
        views = self._member_views(x)
        tuned, self.fine_tune_report_ = fine_tune_outcomes(
            self.model_,
            views,
            t,
            z,
            self.context_.n_context_rows,
            options,
            seed=self.members_[0].seed + 3,
            device=self.device_,
        )
        if self.fine_tune_report_["kept"] == "zero-shot":
            reason = self.fine_tune_report_.get("reason", "")
            warnings.warn(
                f"fine_tune kept the zero-shot network ({reason}): effect and "
                "predict_outcomes are those of fine_tune=False.",
                UserWarning,
                stacklevel=3,
            )
            return
        self.tuned_context_ = self._encode(views, self._context_rows, t, z, model=tuned)
        self._effect_loss = None  # the zero-shot stacking's loss is not the tuned estimate's
        # the tuned difference alone, unless the stacking below weighs it
        self.effect_weights_ = {
            **dict.fromkeys(("intercept", "tau", "mu1", "mu0"), 0.0),
            "tuned": 1.0,
            "stacked": False,
        }
        arms = int(min(t.sum(), (1 - t).sum()))
        if self.effect_from == "stacked" and t.size >= STACK_MIN_ROWS and arms >= TUNE_FOLDS:
            self._stack_tuned(views, options)

    def _stack_tuned(self, views: np.ndarray, options: FineTune) -> None:
        """Stack the tuned network's outcome difference with the zero-shot answers.

        The full-data tune has seen every row's outcome, so its answers cannot weigh
        themselves: TUNE_FOLDS more copies are each tuned on the other folds' rows
        (stratified folds, the same options) and answer their own fold's mu0(x), mu1(x)
        from contexts of the rows they trained on. These out-of-fold surfaces give the
        R-loss's m(x) and the candidate d(x) = mu1(x) - mu0(x); ``r_loss_stack`` picks the
        form (``TUNED_STACK_FORMS``, or the plain tuned difference when none beats it) and
        its weights, which ``effect`` applies to the full-data tune's difference. On a
        constant effect the tuned difference is mostly the two arms' fitted noise, and
        the cross-validated R-loss then keeps a constant (causalml's setup C, 10 seeds:
        PEHE 0.282 -> 0.075; see docs/causal.md)."""
        from sklearn.model_selection import StratifiedKFold

        x, t, z = self._fit_data
        n = t.size
        seed = self.members_[0].seed
        limit = self.context_.n_context_rows
        dist = self._bars()
        oof = np.empty((2, n))
        folds = StratifiedKFold(TUNE_FOLDS, shuffle=True, random_state=(seed + 5) % 2**31)
        reports = []
        for k, (own, other) in enumerate(folds.split(x, t)):
            net, rep = fine_tune_outcomes(
                self.model_,
                views[:, own],
                t[own],
                z[own],
                limit,
                options,
                seed=seed + 6 + k,
                device=self.device_,
            )
            reports.append({key: rep[key] for key in ("kept", "steps", "seconds") if key in rep})
            fold = self._encode(views, self._fold_rows(own, t, limit, 6 + k), t, z, model=net)
            for a, query in enumerate(("mu0", "mu1")):
                logp = self._mixture(fold.logits(views[:, other], query))
                oof[a, other] = dist.mean(logp).double().numpy()
        self._tuned_oof = oof
        mu0, mu1, tau = self._cross_fit()
        e = np.clip(self._dr_e(), DR_CLIP, 1 - DR_CLIP)
        d = oof[1] - oof[0]
        r_y = z - (e * oof[1] + (1 - e) * oof[0])
        # the plain tuned difference unless a form beats it
        self._effect_loss = (r_y, (r_y - (t - e) * d) ** 2)
        fit = r_loss_stack(
            r_y,
            t - e,
            {"tau": tau, "mu1": mu1, "mu0": mu0, "tuned": d},
            TUNED_STACK_FORMS,
            d,
            seed,
        )
        assert self.fine_tune_report_ is not None
        self.fine_tune_report_["folds"] = reports
        if fit is None:
            self.fine_tune_report_["stacked"] = False
            return
        form, w, loss = fit
        self._effect_loss = (r_y, loss)
        self.fine_tune_report_["stacked"] = form
        self.effect_weights_ = {
            "intercept": w["intercept"] * self.y_std_,
            "tau": w["tau"],
            "mu1": w["mu1"],
            "mu0": w["mu0"],
            "tuned": w["tuned"],
            "stacked": form,
        }

    def _fit_effect_weights(self) -> None:
        """``effect_weights_``: fixed by ``effect_from``, or stacked by the R-loss (the
        doubly robust ATE's second outcome model keeps these zero-shot weights)."""
        c, a, b1, b0 = EFFECT_WEIGHTS.get(self.effect_from, EFFECT_WEIGHTS["both"])
        stacked: Any = False
        x, t, z = self._fit_data
        arms = int(min(t.sum(), (1 - t).sum()))
        if self.effect_from == "stacked" and x.shape[0] >= STACK_MIN_ROWS and arms >= 2:
            mu0, mu1, tau = self._cross_fit()
            e = np.clip(self._dr_e(), DR_CLIP, 1 - DR_CLIP)
            fit = stack_effect_weights(z, t, e, mu0, mu1, tau, self.members_[0].seed)
            if fit is not None:
                c, a, b1, b0, stacked, loss = fit
                self._effect_loss = (z - (e * mu1 + (1 - e) * mu0), loss)
        self.effect_weights_ = {
            "intercept": float(c) * self.y_std_,
            "tau": float(a),
            "mu1": float(b1),
            "mu0": float(b0),
            "tuned": 0.0,
            "stacked": stacked,
        }
        self._zero_shot_weights = dict(self.effect_weights_)

    def _fit_overlap(self, x: np.ndarray, t: np.ndarray, seed: int) -> None:
        model = PropensityModel(self.encoder_.categorical_, seed)
        self.propensity_ = model.cross_fit(x, t)
        self.propensity_model_ = model.fit(x, t)
        thr = float(self.overlap_threshold)
        e = self.propensity_
        poor = (e < thr) | (e > 1 - thr)
        self.overlap_share_ = float(poor.mean())
        separated = e[t == 1].min() > e[t == 0].max()
        if self.overlap_share_ == 1.0 or (separated and self.overlap_share_ >= 0.5):
            raise ValueError(
                f"The treatment 't' has no overlap with X: the estimated propensities "
                f"separate the arms ({self.overlap_share_:.0%} of rows outside "
                f"[{thr:g}, {1 - thr:g}]), so no treated row has comparable controls; drop "
                "the covariates that determine t, or restrict the rows to a population "
                "where both treatments occur."
            )
        self.ate_widening_ = float(np.sqrt(np.mean(widening(e, thr) ** 2)))
        if self.overlap_share_ >= OVERLAP_WARN_SHARE:
            warnings.warn(
                f"Little overlap between treated and control rows: {self.overlap_share_:.0%} "
                f"of rows ({int(poor.sum())} of {poor.size}) have an estimated propensity "
                f"outside [{thr:g}, {1 - thr:g}] (cross-fitted logistic regression on X). "
                "Their effects extrapolate from the other arm: their intervals are widened "
                f"(up to {widening(e, thr).max():.1f}x; the ATE interval "
                f"{self.ate_widening_:.2f}x). See propensity_ and overlap_share_; consider "
                "restricting to rows with overlap.",
                UserWarning,
                stacklevel=3,
            )

    def _load(self) -> None:
        from pfnkit.model import PFN
        from pfnkit.train.checkpoint import bundled_checkpoint_path, load_pfn

        self.device_ = resolve_device(self.device, _OWNER)
        source: Any = self.checkpoint
        if isinstance(source, PFN):
            if any(p.requires_grad for p in source.parameters()):
                source = copy.deepcopy(source).requires_grad_(False)
        elif isinstance(source, str) and source == "default":
            source = bundled_checkpoint_path(DEFAULT_CHECKPOINT, "treatment-effect")
        elif not isinstance(source, str | os.PathLike):
            raise TypeError(
                f"The 'checkpoint' parameter of {_OWNER} must be 'default', a path or a PFN. "
                f"Got {type(source).__name__}."
            )
        self.model_, self.card_ = load_pfn(
            source, expect="treatment-effect", device=self.device_, what=_OWNER
        )
        self.interval_scale_ = interval_scales(self.model_)
        cfg = self.model_.config
        if cfg.task != "regression" or cfg.n_row_inputs != len(QUERY_INPUTS["ate"]):
            raise CheckpointError(
                f"The 'checkpoint' of {_OWNER} must be a causal-prior PFN (a regression head "
                f"and n_row_inputs=3). Got task {cfg.task!r} with n_row_inputs="
                f"{cfg.n_row_inputs}; train one with `pfnkit train-prior "
                "priors/treatment-effect.toml`."
            )

    def _context_limit(self) -> int:
        if self.max_context is not None:
            return int(self.max_context)
        return min(_trained_limit(self.card_), AUTO_CONTEXT_ROWS)

    def _fit_members(
        self, x: np.ndarray, t: np.ndarray, z: np.ndarray, rng: np.random.RandomState
    ) -> None:
        n = x.shape[0]
        limit = self._context_limit()
        spec = self.context
        if spec == "full" or isinstance(spec, FullContext):
            strategy: Any = FullContext()
            n_ctx = n
        else:  # "auto" and "subsample" coincide: all rows when they fit, else a subsample
            strategy = spec if isinstance(spec, SubsampleContext) else SubsampleContext()
            n_ctx = min(n, strategy.max_rows if strategy.max_rows is not None else limit)
        self.context_strategy_ = strategy
        if spec == "knn" or isinstance(spec, KNNContext):
            knn = spec if isinstance(spec, KNNContext) else KNNContext(k=KNN_K)
            if knn.mode != "exact":
                raise ValueError(
                    f"The 'context' parameter of {_OWNER} supports KNNContext(mode='exact') "
                    f"only (a row's context must hold both arms' nearest rows). Got "
                    f"mode={knn.mode!r}; use KNNContext(k=..., mode='exact')."
                )
            self.context_strategy_ = knn
        trained = _trained_limit(self.card_)
        past_limit = self.max_context is not None or n > trained
        if n_ctx < n and past_limit and not isinstance(self.context_strategy_, KNNContext):
            # (with "knn" every row's effect has its own context; only the ATE subsamples)
            warnings.warn(
                f"X has {n} rows, more than the context limit of "
                + (
                    f"{limit} (max_context)"
                    if self.max_context is not None
                    else f"{trained} (the checkpoint's training contexts)"
                )
                + f"; each ensemble member uses a random subset of {n_ctx} rows (both arms "
                "kept). Use context='knn' to give every row its nearest rows of each arm, "
                "or context='full' to put every row in one context.",
                UserWarning,
                stacklevel=3,
            )
        # members: preprocessing and feature maps of X only (the treatment is no column)
        modes = member_modes(self.preprocessing, self.n_estimators)
        categorical = self.encoder_.categorical_
        self.transforms_ = fit_transforms(modes, categorical, x, rng)
        pre = {mode: tr.transform(x) for mode, tr in self.transforms_.items()}
        f_model = self.model_.config.n_features
        self.members_: list[Member] = []
        for mode in modes:
            fmap = feature_map(pre[mode], categorical, f_model, self.feature_reduction, rng)
            self.members_.append(Member(mode, fmap, None, int(rng.randint(2**31))))
        rows = []
        for mb in self.members_:
            member_rng = np.random.RandomState(mb.seed)
            rows.append(stratified_rows(t, n_ctx, True, member_rng))
        self._fit_data = (x, t, z)  # for the cross-fitted ATE (ate_from="dr"), on demand
        self._context_rows = np.stack(rows)
        self.context_ = self._encode(self._member_views(x), self._context_rows, t, z)
        dev = self.device_
        # past the context limit each member's ATE posterior is that of its n_ctx rows; the
        # ATE of all n rows is known to ~sqrt(n_ctx / n) of that spread (an average over n)
        self.ate_subsample_factor_ = float(np.sqrt(n_ctx / n))
        self.local_context_: LocalTreatmentContext | None = None
        if isinstance(self.context_strategy_, KNNContext):
            k = self.context_strategy_.k
            k = min(int(k) if k is not None else KNN_K, limit, n)
            full = [mb.features.apply(pre[mb.mode]).astype(np.float32) for mb in self.members_]
            self.local_context_ = LocalTreatmentContext.fit(self.model_, dev, full, z, t, k)

    def _member_views(self, x: np.ndarray) -> np.ndarray:
        """Every member's view (B, n, f) of encoded rows x (n, d)."""
        pre = {mode: tr.transform(x) for mode, tr in self.transforms_.items()}
        views = [mb.features.apply(pre[mb.mode]) for mb in self.members_]
        return np.stack(views).astype(np.float32)

    def _encode(
        self,
        views: np.ndarray,
        ctx: np.ndarray,
        t: np.ndarray,
        z: np.ndarray,
        model: Any = None,
    ) -> TreatmentContext:
        """The members' contexts: rows ctx (B, Nc) of their views (B, n, f), encoded once
        (by ``model``, default the zero-shot ``model_``)."""
        model = self.model_ if model is None else model
        x_ctx = np.take_along_axis(views, ctx[:, :, None], axis=1)  # (B, Nc, f)
        row_inputs = factual_inputs(t[ctx])
        n_ctx = ctx.shape[1]
        ate_rows = np.stack(
            [
                np.random.RandomState(mb.seed + 1).randint(0, n_ctx, ATE_QUERIES)
                for mb in self.members_
            ]
        )
        ate_x = np.take_along_axis(x_ctx, ate_rows[:, :, None], axis=1)
        dev = self.device_
        cache = model.encode_context(
            _tensor(x_ctx, dev), _tensor(z[ctx], dev), row_inputs=_tensor(row_inputs, dev)
        )
        return TreatmentContext(model, cache, dev, n_ctx, ate_x)

    def _cate_context(self) -> Any:
        """Where the per-row queries (tau, mu0, mu1) go: the kNN contexts or the shared."""
        return self.local_context_ if self.local_context_ is not None else self.context_

    # ---------------------------------------------------------------- prediction

    def _views(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Members' views (B, M, f) of X and the encoded rows (M, d)."""
        check_is_fitted(self, "context_")
        X = validate_data(
            self, dates_as_objects(X), dtype=None, ensure_all_finite="allow-nan", reset=False
        )
        x = self.encoder_.transform(X)
        return self._member_views(x), x

    def _mixture(self, logits: torch.Tensor) -> torch.Tensor:
        """Log of the members' mixture (M, K) from their logits (B, M, K)."""
        return torch.softmax(logits.float(), dim=-1).mean(0).clamp_min(1e-30).log()

    def _bars(self) -> BarDistribution:
        # a CPU copy of the head: the model itself may live on a GPU
        return BarDistribution(self.model_.bar_distribution.borders.detach().cpu())

    def _interval(
        self, logp: torch.Tensor, alpha: float, scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised (lower, upper) of the mixture, widened by ``scale`` about its median."""
        _check_alpha(alpha)
        lo, mid, hi = self._quantiles(logp, float(alpha))
        return mid - scale * (mid - lo), mid + scale * (hi - mid)

    def _quantiles(
        self, logp: torch.Tensor, alpha: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised alpha/2 quantile, median and 1 - alpha/2 quantile of the mixture."""
        dist = self._bars()
        lo = dist.quantile(logp, alpha / 2).double().numpy()
        hi = dist.quantile(logp, 1 - alpha / 2).double().numpy()
        return lo, dist.median(logp).double().numpy(), hi

    def _effect_posterior(
        self, X: Any, alpha: float | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Standardised estimate of tau(x) per row and, for an alpha, tau(x)'s posterior
        (lower, median, upper), widened for poor overlap, narrowed by
        ``interval_narrowing_`` and shifted by the estimate's difference from tau's own
        posterior mean (not yet scaled by the calibration)."""
        views, x = self._views(X)
        return self._posterior(views, x, alpha, self._cate_context())

    def _posterior(
        self, views: np.ndarray, x: np.ndarray, alpha: float | None, ctx: Any
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """``_effect_posterior`` of the members' views (B, M, f) and encoded rows x (M, d),
        answered by ``ctx`` (the study's contexts, or any ``_encode`` of other outcomes)."""
        dist = self._bars()
        w = self.effect_weights_
        tuned = self.tuned_context_
        # only the queries the estimate (and, for an alpha, tau's interval) needs
        needed = {"tau"} if alpha is not None else set()
        needed |= {q for q in ("tau", "mu0", "mu1") if w[q] != 0.0}
        logp = {q: self._mixture(ctx.logits(views, q)) for q in sorted(needed)}
        mean = {q: dist.mean(lp).double().numpy() for q, lp in logp.items()}
        zero = np.zeros(views.shape[1])
        diff = zero
        if tuned is not None and w["tuned"] != 0.0:  # the fine-tuned outcome difference
            mu0, mu1 = (dist.mean(self._mixture(tuned.logits(views, q))) for q in ("mu0", "mu1"))
            diff = (mu1 - mu0).double().numpy()
        estimate = self._weighted_effect(
            mean.get("tau", zero), mean.get("mu0", zero), mean.get("mu1", zero), diff
        )
        if alpha is None:
            return estimate, None
        tau_mean = mean["tau"]
        lo, mid, hi = self._quantiles(logp["tau"], alpha)
        wide = widening(self.propensity_model_.predict(x), float(self.overlap_threshold))
        wide = wide * self.interval_narrowing_
        shift = estimate - tau_mean
        lo, hi = mid - wide * (mid - lo), mid + wide * (hi - mid)
        return estimate, (lo + shift, mid + shift, hi + shift)

    def _weighted_effect(
        self,
        tau: np.ndarray,
        mu0: np.ndarray,
        mu1: np.ndarray,
        tuned: Any = 0.0,
        weights: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """c + a tau + b1 mu1 - b0 mu0 + g tuned with ``effect_weights_`` (or ``weights``),
        all standardised (``tuned``: the fine-tuned network's mu1 - mu0)."""
        w = self.effect_weights_ if weights is None else weights
        effect = w["intercept"] / self.y_std_ + w["tau"] * tau + w["mu1"] * mu1 - w["mu0"] * mu0
        return effect + w["tuned"] * tuned

    @property
    def interval_narrowing_(self) -> float:
        """sqrt(r): how much narrower than tau(x)'s posterior the CATE intervals are, r the
        estimate's cross-validated error relative to that posterior's (see the class
        docstring, "Intervals of a stacked estimate"). 1.0 where the estimate is tau's
        posterior mean or nothing out of fold shows it to be better. Computed at the first
        interval (with the cross-fit, when fit has not run it), then cached."""
        check_is_fitted(self, "context_")
        cached = getattr(self, "_narrowing_cache", None)
        if cached is None:
            cached = self._narrowing_cache = float(np.sqrt(self._width_ratio()))
        return cached

    def _width_ratio(self) -> float:
        """r = W_f / P, clipped to [WIDTH_RATIO_MIN, 1]. P = mean((t - e)^2 s(x)^2), s(x)
        the spread of tau(x)'s cross-fitted posterior as its 95 % interval states it: the
        weighted squared error of its mean tq(x) that the interval claims. W_f = P - G,
        G = R(tq) - R(f), R the R-loss of Nie and Wager, mean((r_y - (t - e) g)^2), of tq
        and of the estimate f, both out of fold (f's stacked weights cross-validated); G
        estimates mean((t - e)^2 ((tq - tau)^2 - (f - tau)^2))."""
        w = self.effect_weights_
        effect_loss = getattr(self, "_effect_loss", None)
        if self.tuned_context_ is not None and effect_loss is None:
            return 1.0  # a tuned estimate with no out-of-fold answers to weigh it
        if effect_loss is None and not any(w[k] for k in ("intercept", "mu0", "mu1", "tuned")):
            return 1.0  # effect_from="tau": the estimate is tau's posterior mean
        _, t, z = self._fit_data
        mu0, mu1, tau = self._cross_fit()
        e = np.clip(self._dr_e(), DR_CLIP, 1 - DR_CLIP)
        r_t = t - e
        if effect_loss is not None:
            r_y, loss = effect_loss
        else:  # fixed weights: the out-of-fold answers' loss is already out of sample
            r_y = z - (e * mu1 + (1 - e) * mu0)
            loss = (r_y - r_t * self._weighted_effect(tau, mu0, mu1)) ** 2
        p = float(np.mean(r_t**2 * self._cross_fit_tau_var))
        gain = float(np.mean((r_y - r_t * tau) ** 2) - np.mean(loss))
        if not (p > 0 and np.isfinite(gain)):
            return 1.0
        return float(np.clip((p - max(gain, 0.0)) / p, WIDTH_RATIO_MIN, 1.0))

    def effect(self, X: Any) -> np.ndarray:
        """Conditional average treatment effect tau(x) (posterior mean) per row, (n,); see
        ``effect_from`` for how it is formed."""
        estimate, _ = self._effect_posterior(X)
        return estimate * self.y_std_

    def effect_interval(self, X: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of tau(x) per row: the 1 - alpha posterior interval, widened for
        rows with poor overlap and scaled by the checkpoint's calibration (see the class
        docstring)."""
        _check_alpha(alpha)
        _, q = self._effect_posterior(X, float(alpha))
        assert q is not None
        lo, mid, hi = q
        s = self.interval_scale_["cate"]
        return (mid - s * (mid - lo)) * self.y_std_, (mid + s * (hi - mid)) * self.y_std_

    def predict_outcomes(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mu0, mu1): posterior means of the noise-free outcomes under control and
        treatment per row, each (n,), in y's units."""
        views, _ = self._views(X)
        dist = self._bars()
        ctx = self.tuned_context_ if self.tuned_context_ is not None else self._cate_context()
        out = []
        for query in ("mu0", "mu1"):
            logp = self._mixture(ctx.logits(views, query))
            out.append(dist.mean(logp).double().numpy() * self.y_std_ + self.y_mean_)
        return out[0], out[1]

    def _ate_logp(self) -> torch.Tensor:
        check_is_fitted(self, "context_")
        logits = self.context_.logits(self.context_.ate_x, "ate")  # (B, Q, K)
        return self._mixture(logits.reshape(1, -1, logits.shape[-1]))[0][None]  # (1, K)

    def _cross_fit(self) -> np.ndarray:
        """Out-of-fold (mu0, mu1, tau) (3, n) of the fitted rows, standardised: stratified
        folds; each fold's rows are queried against contexts drawn from the other folds'
        rows (at most the fit's context size, both arms kept). In-sample when an arm has
        one row. Computed once (for stacking and the doubly robust ATE), then cached."""
        from sklearn.model_selection import StratifiedKFold

        cached = getattr(self, "_cross_fit_cache", None)
        if cached is not None:
            return cached

        x, t, z = self._fit_data
        n = x.shape[0]
        views = self._member_views(x)
        dist = self._bars()
        n_ctx = self.context_.n_context_rows
        folds = min(DR_FOLDS, int(min(t.sum(), (1 - t).sum())))
        if folds < 2:
            splits = [(np.arange(n), np.arange(n))]
        else:
            seed = self.members_[0].seed % 2**31
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, t))
        mu = np.empty((3, n))
        var = np.empty(n)
        for k, (train, test) in enumerate(splits):
            fold = self._encode(views, self._fold_rows(train, t, n_ctx, 2 + k), t, z)
            for a, query in enumerate(("mu0", "mu1", "tau")):
                logp = self._mixture(fold.logits(views[:, test], query))
                mu[a, test] = dist.mean(logp).double().numpy()
            # tau(x)'s posterior spread, as its central 95 % interval implies: (half-width /
            # 1.96)^2 (the bars' tails inflate the variance past what the interval says)
            half = (dist.quantile(logp, 0.975) - dist.quantile(logp, 0.025)).double().numpy()
            var[test] = (half / (2 * Z_975)) ** 2
        self._cross_fit_cache = mu
        self._cross_fit_tau_var = var
        return mu

    def _fold_rows(self, rows: np.ndarray, t: np.ndarray, n_ctx: int, offset: int) -> np.ndarray:
        """Each member's context (B, <= n_ctx) drawn from ``rows`` (both arms kept), seeded
        by the member's seed + ``offset``."""
        k = min(n_ctx, rows.size)
        return np.stack(
            [
                rows[
                    stratified_rows(
                        t[rows], k, True, np.random.RandomState((mb.seed + offset) % 2**32)
                    )
                ]
                for mb in self.members_
            ]
        )

    def _dr_scores(self) -> np.ndarray:
        """Per-row doubly robust (AIPW) scores of the ATE, standardised, computed once: the
        network's cross-fitted outcomes corrected by the inverse-propensity weighted
        residuals (``_dr_propensity``, clipped to [DR_CLIP, 1 - DR_CLIP])."""
        check_is_fitted(self, "context_")
        cached = getattr(self, "_dr_cache", None)
        if cached is not None:
            return cached
        _, t, z = self._fit_data
        mu0, mu1, tau = self._cross_fit()
        e = np.clip(self._dr_e(), DR_CLIP, 1 - DR_CLIP)

        def scores(m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
            return m1 - m0 + t * (z - m1) / e - (1 - t) * (z - m0) / (1 - e)

        psi = scores(mu0, mu1)
        zs = self._zero_shot_weights
        if zs["stacked"]:
            # the outcome model of the stacked effect f: the same m(x), arms m -+ e f
            f = self._weighted_effect(tau, mu0, mu1, weights=zs)
            m = e * mu1 + (1 - e) * mu0
            alt = scores(m - e * f, m + (1 - e) * f)
            if alt.var() < psi.var():
                psi = alt
        self._dr_cache = psi
        return psi

    def _dr_e(self) -> np.ndarray:
        """``_dr_propensity`` of the fitted rows, computed once."""
        cached = getattr(self, "_dr_e_cache", None)
        if cached is None:
            x, t, _ = self._fit_data
            cached = self._dr_e_cache = self._dr_propensity(x, t)
        return cached

    def _dr_propensity(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Cross-fitted propensities for the doubly robust weights: gradient-boosted trees
        (``PropensityModel(trees=True)``) when each arm has DR_TREE_ROWS rows or more, else
        the overlap diagnostics' logistic ``propensity_``. On causalml's setup A (a sine
        propensity) logistic weights gave the DR estimate 3x the ATE error of trees."""
        if min(t.sum(), (1 - t).sum()) < DR_TREE_ROWS:
            return np.asarray(self.propensity_)
        seed = self.members_[0].seed % 2**31
        return PropensityModel(self.encoder_.categorical_, seed, trees=True).cross_fit(x, t)

    def ate(self) -> float:
        """The average treatment effect over the fitted rows; see ``ate_from``."""
        if self.ate_from == "dr":
            return float(self._dr_scores().mean()) * self.y_std_
        logp = self._ate_logp()
        return float(self._bars().mean(logp)[0]) * self.y_std_

    def ate_interval(self, alpha: float = 0.05) -> tuple[float, float]:
        """(lower, upper): the 1 - alpha interval of the ATE (see ``ate_from``): a normal
        interval from the doubly robust scores' standard error, or the network's posterior
        interval widened when overlap is poor (see the class docstring)."""
        _check_alpha(alpha)
        if self.ate_from == "dr":
            from scipy.stats import norm

            psi = self._dr_scores()
            half = float(norm.ppf(1 - float(alpha) / 2)) * float(psi.std(ddof=1))
            half /= np.sqrt(psi.size)
            mid = float(psi.mean())
            return (mid - half) * self.y_std_, (mid + half) * self.y_std_
        scale = np.array(
            [self.ate_widening_ * self.ate_subsample_factor_ * self.interval_scale_["ate"]]
        )
        lo, hi = self._interval(self._ate_logp(), alpha, scale)
        return float(lo[0]) * self.y_std_, float(hi[0]) * self.y_std_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags


# ---------------------------------------------------------------- input checks


def stack_effect_weights(
    z: np.ndarray,
    t: np.ndarray,
    e: np.ndarray,
    mu0: np.ndarray,
    mu1: np.ndarray,
    tau: np.ndarray,
    seed: int,
    folds: int = 5,
) -> tuple[float, float, float, float, str, np.ndarray] | None:
    """R-loss stacking (Nie and Wager 2021) of a network's answers about one study.

    All (n,), the answers out-of-fold: standardised outcomes z, treatment t, propensities
    e (clipped away from 0 and 1), the network's mu0(x), mu1(x) and tau(x). With
    m(x) = e mu1 + (1 - e) mu0, the R-loss of an effect estimate f is
    mean((z - m - (t - e) f)^2). Two forms are fitted by non-negative least squares (c
    free): "pooled", f = c + a tau + b (mu1 - mu0), and "arms", f = c + a tau + b1 mu1 -
    b0 mu0 (each arm's answer scaled on its own). Returns (c, a, b1, b0, form, loss) of
    the form whose ``folds``-fold cross-validated R-loss is lowest (loss: its per-row
    cross-validated losses), or None when neither beats the
    fixed blend f = (tau + mu1 - mu0) / 2: the study does not show that fitted weights
    do better.
    """
    c, a, b1, b0 = EFFECT_WEIGHTS["both"]
    fit = r_loss_stack(
        z - (e * mu1 + (1 - e) * mu0),
        t - e,
        {"tau": tau, "mu1": mu1, "mu0": mu0},
        STACK_FORMS,
        c + a * tau + b1 * mu1 - b0 * mu0,
        seed,
        folds,
    )
    if fit is None:
        return None
    form, w, loss = fit
    return w["intercept"], w["tau"], w["mu1"], w["mu0"], form, loss


# the forms of the R-loss stacking: each a list of (answer, sign) columns next to a free
# intercept; "mu1-mu0" is one column (one weight for both arms), the rest one each
STACK_FORMS: dict[str, list[tuple[str, float]]] = {
    "pooled": [("tau", 1.0), ("mu1-mu0", 1.0)],
    "arms": [("tau", 1.0), ("mu1", 1.0), ("mu0", -1.0)],
}
# with fine_tune: the tuned network's outcome difference d (cross-fitted) joins them, and
# a constant effect is a form of its own (it is the one a noisy difference must beat)
TUNED_STACK_FORMS: dict[str, list[tuple[str, float]]] = {
    **STACK_FORMS,
    "tuned": [("tuned", 1.0)],
    "arms+tuned": [("tau", 1.0), ("mu1", 1.0), ("mu0", -1.0), ("tuned", 1.0)],
    "constant": [],
}


def r_loss_stack(
    r_y: np.ndarray,
    r_t: np.ndarray,
    answers: dict[str, np.ndarray],
    forms: dict[str, list[tuple[str, float]]],
    baseline: np.ndarray,
    seed: int,
    folds: int = 5,
) -> tuple[str, dict[str, float], np.ndarray] | None:
    """The form of effect f = c + sum_j w_j s_j answer_j (c free, w_j >= 0, s_j the
    column's sign) with the lowest ``folds``-fold cross-validated R-loss
    mean((r_y - r_t f)^2), refitted on all rows: (form, {"intercept": c, answer: w, ...};
    "mu1-mu0" pools the weight of "mu1" and "mu0"). None when no form beats the fixed
    ``baseline`` effect (n,). r_y: outcome residuals z - m(x); r_t: t - e(x). The third
    entry is the chosen form's per-row cross-validated loss (n,)."""
    from scipy.optimize import nnls
    from sklearn.model_selection import KFold

    one = np.ones_like(r_y)

    def column(name: str) -> np.ndarray:
        if name == "mu1-mu0":
            return answers["mu1"] - answers["mu0"]
        return answers[name]

    designs = {
        form: r_t[:, None]
        * np.stack([one, -one] + [sign * column(name) for name, sign in cols], axis=1)
        for form, cols in forms.items()
    }
    splits = list(KFold(folds, shuffle=True, random_state=seed % 2**31).split(r_y))
    best, best_loss, best_rows = None, float(np.mean((r_y - r_t * baseline) ** 2)), r_y
    for form, design in designs.items():
        loss = np.empty_like(r_y)
        for train, test in splits:
            coef, _ = nnls(design[train], r_y[train])
            loss[test] = (r_y[test] - design[test] @ coef) ** 2
        if loss.mean() < best_loss:
            best, best_loss, best_rows = form, float(loss.mean()), loss
    if best is None:
        return None
    coef, _ = nnls(designs[best], r_y)
    if not np.all(np.isfinite(coef)):
        return None
    weights = {"intercept": float(coef[0] - coef[1])}
    weights.update({name: 0.0 for name in answers})
    for (name, _), w in zip(forms[best], coef[2:], strict=True):
        for key in ("mu1", "mu0") if name == "mu1-mu0" else (name,):
            weights[key] = float(w)
    return best, weights, best_rows


def _trained_limit(card: Any) -> int:
    """The most context rows a checkpoint was trained on (1,024 for a card without it)."""
    return int(card.context_limit or 1024)


def _check_alpha(alpha: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < float(alpha) < 1:
        raise ValueError(
            f"The 'alpha' parameter of {_OWNER} must be a number in (0, 1) (0.05 gives "
            f"95 % intervals). Got {alpha!r}."
        )


def _n_rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        raise ValueError(
            f"The 'X' parameter of {_OWNER}.fit must be a 2-D array or DataFrame. "
            f"Got {type(X).__name__}."
        ) from None


def _vector(v: Any, name: str) -> np.ndarray:
    """A 1-D float array of t or y (a single column is flattened)."""
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"The '{name}' parameter of {_OWNER}.fit must be numeric"
            + (" (0 control, 1 treated)." if name == "t" else ".")
            + f" Got values that do not convert to numbers ({type(v).__name__})."
        ) from None
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(
            f"The '{name}' parameter of {_OWNER}.fit must be one column (n,). Got shape "
            f"{a.shape}; pass one {'treatment' if name == 't' else 'outcome'} per row."
        )
    return a


def _binary_treatment(t: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(t)):
        raise ValueError(
            f"The 't' parameter of {_OWNER}.fit contains {int((~np.isfinite(t)).sum())} NaN "
            "or infinite value(s); drop the rows whose treatment is unknown."
        )
    values = np.unique(t)
    if not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise ValueError(
            f"The 't' parameter of {_OWNER}.fit must be binary: 0 (control) or 1 (treated). "
            f"Got values {shown}; encode the treatment as 0/1 (one estimator per contrast "
            "for several treatments)."
        )
    if values.size < 2:
        arm = "treated (1)" if values[0] == 1 else "control (0)"
        raise ValueError(
            f"The 't' parameter of {_OWNER}.fit holds only {arm} rows; an effect needs "
            "both arms: add rows of the other treatment."
        )
    return t


# ---------------------------------------------------------------- interval calibration

CALIBRATION_ALPHA = 0.05


def interval_scales(model: Any) -> dict[str, float]:
    """The calibrated interval scales on a model's card ({"cate": s, "ate": s}; 1.0 where
    the card has none)."""
    card = getattr(model, "card", None)
    cal = card.get("calibration", {}) if isinstance(card, dict) else {}
    out = {}
    for key in ("cate", "ate"):
        v = cal.get(f"{key}_interval_scale", 1.0) if isinstance(cal, dict) else 1.0
        if isinstance(v, bool) or not isinstance(v, Real) or not 0 < float(v) < 100:
            raise CheckpointError(
                f"The checkpoint's calibration.{key}_interval_scale must be a number in "
                f"(0, 100). Got {v!r}; recalibrate with `pfnkit calibrate`."
            )
        out[key] = float(v)
    return out


def _excess(truth: np.ndarray, lo: np.ndarray, mid: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How far the truth lies from the median, in units of the interval's half on its side:
    the interval scaled by s about the median covers the truth exactly when this is <= s."""
    half = np.where(truth >= mid, hi - mid, mid - lo)
    dist = np.abs(truth - mid)
    return np.where(half > 0, dist / np.maximum(half, 1e-300), np.where(dist > 0, np.inf, 0.0))


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(int(np.searchsorted(cum, q)), v.size - 1)])


def calibrate_intervals(
    checkpoint: Any,
    *,
    draws: int = 300,
    seed: int = 20_000_000,
    min_rows: int = 50,
    max_rows: int | None = None,
    n_estimators: int = 8,
    progress: Any = None,
) -> dict[str, Any]:
    """Interval scales that make a treatment-effect checkpoint's 95 % intervals cover 95 %
    of held-out draws of its own prior.

    Each draw is one study from the checkpoint's prior recipe (a generator seeded far from
    training's streams) with a log-uniform number of rows in [min_rows, max_rows]
    (default: twice the checkpoint's context limit, so that subsampled contexts are
    calibrated too). ``PFNTreatmentEffect`` (its defaults, no
    calibration) fits it and gives 95 % intervals for every row's tau(x) and for the ATE;
    per interval, the truth's distance from the median in units of the interval's half on
    that side is recorded. The ATE scale is the 95th percentile of these over draws; the
    CATE scale that of the rows, each study weighted equally. Coverage before and after is
    returned with the scales (the "calibration" entry of a card).
    """
    from pfnkit.priors import BatchShape, build_prior
    from pfnkit.train.checkpoint import bundled_checkpoint_path, load_pfn

    if isinstance(checkpoint, str) and checkpoint == "default":
        checkpoint = bundled_checkpoint_path(DEFAULT_CHECKPOINT, "treatment-effect")
    loaded, card = load_pfn(checkpoint, expect="treatment-effect", what="calibrate_intervals")
    model = copy.copy(loaded)  # a shallow copy (shared weights) with its own card:
    raw = dict(loaded.card) if isinstance(getattr(loaded, "card", None), dict) else {}
    raw.pop("calibration", None)  # measure the network itself, uncalibrated
    model.card = raw
    prior = build_prior(card.prior)
    # beyond the context limit too (subsampled contexts): both regimes are calibrated
    limit = min(_trained_limit(card), AUTO_CONTEXT_ROWS)  # the estimator's default
    top = int(max_rows if max_rows is not None else 2 * limit)
    low = int(min(min_rows, top))
    gen = torch.Generator().manual_seed(int(seed))
    n_features = model.config.n_features
    ate_r: list[float] = []
    cate_r: list[np.ndarray] = []
    cate_w: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap and context warnings: expected here
        while len(ate_r) < draws:
            u = float(torch.rand((), generator=gen))
            rows = int(round(math.exp(math.log(low) + u * (math.log(top) - math.log(low)))))
            b = prior.sample(BatchShape(1, rows + 1, n_features, rows), generator=gen)
            t = b.extras["treatment"][0, :rows].double().numpy()
            if not 2 <= t.sum() <= rows - 2:
                continue
            d = int(b.n_features[0]) if b.n_features is not None else n_features
            x = b.x[0, :rows, :d].double().numpy()
            y = b.y[0, :rows].double().numpy()
            tau = (b.extras["mu1"][0, :rows] - b.extras["mu0"][0, :rows]).double().numpy()
            est = PFNTreatmentEffect(checkpoint=model, n_estimators=n_estimators)
            try:
                est.fit(x, t, y)
            except ValueError:  # no overlap at all: not a study the estimator answers
                continue
            _, q = est._effect_posterior(x, CALIBRATION_ALPHA)
            assert q is not None
            lo, mid, hi = q
            r = _excess(tau / est.y_std_, lo, mid, hi)
            cate_r.append(r)
            cate_w.append(np.full(r.size, 1.0 / r.size))
            a_lo, a_mid, a_hi = (v[0] for v in est._quantiles(est._ate_logp(), CALIBRATION_ALPHA))
            s = est.ate_widening_ * est.ate_subsample_factor_
            ate = np.array([tau.mean() / est.y_std_])
            r_ate = _excess(
                ate,
                np.array([a_mid - s * (a_mid - a_lo)]),
                np.array([a_mid]),
                np.array([a_mid + s * (a_hi - a_mid)]),
            )
            ate_r.append(float(r_ate[0]))
            if progress is not None:
                progress(len(ate_r), draws)
    cr, cw, ar = np.concatenate(cate_r), np.concatenate(cate_w), np.asarray(ate_r)
    level = 1 - CALIBRATION_ALPHA
    cate_scale = _weighted_quantile(cr, cw, level)
    ate_scale = float(np.quantile(ar, level, method="higher"))  # covers >= 95 %
    if not (np.isfinite(cate_scale) and np.isfinite(ate_scale)) or min(cate_scale, ate_scale) <= 0:
        raise CheckpointError(
            f"Interval calibration failed: scales cate {cate_scale}, ate {ate_scale} (the "
            "network's intervals have zero width where the truth is elsewhere); the "
            "checkpoint is probably damaged or untrained."
        )

    def cover(r: np.ndarray, w: np.ndarray, s: float) -> float:
        return round(float((w * (r <= s)).sum() / w.sum()), 4)

    ones = np.ones_like(ar)
    return {
        "cate_interval_scale": round(cate_scale, 4),
        "ate_interval_scale": round(ate_scale, 4),
        "alpha": CALIBRATION_ALPHA,
        "draws": int(draws),
        "seed": int(seed),
        "rows": [low, top],
        "cate_coverage_before": cover(cr, cw, 1.0),
        "cate_coverage_after": cover(cr, cw, cate_scale),
        "ate_coverage_before": cover(ar, ones, 1.0),
        "ate_coverage_after": cover(ar, ones, ate_scale),
    }
