"""Causal prior: observational tables with a binary treatment, for treatment-effect PFNs.

Each dataset is one observational study. Covariates come from the tabular SCM prior
(``SCMPrior``: MLP or tree SCMs, categorical columns, missing values, skew). Every used
column gets a role: irrelevant, confounder (drives treatment and outcome), outcome-only or
treatment-only (an instrument). A random propensity function of the treatment columns
assigns the treatment; random potential-outcome surfaces mu0(x) and mu1(x) = mu0(x) + tau(x)
of the outcome columns give the outcome y = mu_t(x) + noise. Both functions read only the
observed covariates (a missing cell enters through a fill value, a category through a
random level effect), so ignorability given the observed x holds by construction.

What the network predicts, and how the treatment reaches it
-----------------------------------------------------------
The treatment is not a feature column: it reaches the network as a per-row input
(``Batch.extras["row_inputs"]``, (B, N, 3), read by ``PFN.embed`` through
``PFNConfig.n_row_inputs``), so feature normalisation, padding, ensembles' permutations
and preprocessing never touch it. The three numbers of a row are (w0, w1, ate):

- a context row with treatment t is (1 - t, t, 0); its y is the observed outcome
  w0 * mu0(x) + w1 * mu1(x) + noise;
- a query row asks for the noise-free contrast w0 * mu0(x) + w1 * mu1(x) at its x:
  (1, 0, 0) for mu0(x), (0, 1, 0) for mu1(x), (-1, 1, 0) for tau(x);
- (-1, 1, 1) asks for the average treatment effect over the context rows (the sample
  ATE of the fitted data); its x is ignored (training fills in a random context row's).

We train on all of them (``outcome_queries`` and ``ate_queries`` set the mix) rather than
on mu_t(x) alone, as CausalPFN does, because the estimator needs calibrated intervals for
the effect, and those do not follow from per-arm predictions: the bar-distribution head
gives each row a marginal distribution, and the distribution of mu1 - mu0 depends on the
joint posterior of both arms, which two marginals do not carry (independence or a
comonotone coupling both miscalibrate). Asking for tau(x) directly gives
``effect``/``effect_interval`` their exact posterior predictive; asking for mu0/mu1 gives
``predict_outcomes``; and the ATE query gives the posterior of an average over rows, which
per-row marginals cannot give either (CausalPFN's weak spot: its 95 % ATE intervals
under-cover); ``PFNTreatmentEffect(ate_from="network")`` answers from it (the default,
"dr", corrects the network's outcomes with doubly robust residuals instead). All targets
are noise-free surfaces, so an interval is about the effect, not about a new unit's noisy
outcome.

Scale: each dataset's outcomes are standardised with the mean and std of its observed y
(as the SCM regression prior and the regressor do), mu0 and mu1 by the same affine map,
tau and the ATE by the std alone; one bar distribution then covers every dataset.

Shape legend: B batch, N rows, F features (d of them used by a dataset), k columns read
by a random function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import (
    Batch,
    BatchShape,
    Choice,
    LogUniform,
    Param,
    Task,
    Uniform,
    draw,
)
from pfnkit.priors.scm import _ACTS, SCMPrior, _small

# query kinds in Batch.extras["query"]; the row inputs (w0, w1, ate) of each
CONTEXT, MU0, MU1, TAU, ATE = 0, 1, 2, 3, 4
ROW_INPUTS = {
    MU0: (1.0, 0.0, 0.0),
    MU1: (0.0, 1.0, 0.0),
    TAU: (-1.0, 1.0, 0.0),
    ATE: (-1.0, 1.0, 1.0),
}

# column roles
_IRRELEVANT, _CONFOUNDER, _OUTCOME, _TREATMENT = 0, 1, 2, 3


def _support(value: Param) -> tuple[float, float]:
    """The smallest and largest value a field (fixed, or a hyperprior) can take."""
    if isinstance(value, Uniform | LogUniform):
        return value.low, value.high
    if isinstance(value, Choice):
        return min(value.values), max(value.values)
    return float(value), float(value)


def _standardize(f: np.ndarray) -> np.ndarray:
    """Mean 0, std 1 over rows; a constant function becomes 0."""
    sd = f.std()
    return (f - f.mean()) / sd if sd > 1e-8 else np.zeros_like(f)


def prepare_covariates(
    x: np.ndarray, categorical: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """What the random functions read: the observed covariates (N, d) as finite numbers.

    Numeric columns are z-scored and clipped to [-4, 4]; a categorical column's levels get
    random effects; a missing cell gets its column's random fill value (so missingness can
    matter, as it does in real data). Everything is a function of the observed x only.
    """
    n, d = x.shape
    z = np.empty((n, d))
    for j in range(d):
        col = x[:, j].astype(np.float64)
        nan = np.isnan(col)
        if categorical[j]:
            codes = np.where(nan, 0, col).astype(np.int64)
            z[:, j] = rng.standard_normal(int(codes.max(initial=0)) + 1)[codes]
        else:
            seen = col[~nan]
            mean, sd = (seen.mean(), seen.std()) if seen.size else (0.0, 1.0)
            z[:, j] = np.clip((col - mean) / (sd if sd > 1e-8 else 1.0), -4.0, 4.0)
        z[nan, j] = rng.standard_normal()
    return z


def random_function(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A standardised random function (N,) of the columns z (N, k): linear, a small random
    MLP, a sum of oblivious trees, or a linear part plus one of those."""
    n, k = z.shape
    if k == 0:
        return np.zeros(n)
    kind = rng.choice(4, p=[0.3, 0.25, 0.25, 0.2])
    if kind == 0:
        return _standardize(_linear(z, rng))
    part = _mlp(z, rng) if kind == 1 or (kind == 3 and rng.random() < 0.5) else _trees(z, rng)
    if kind == 3:
        part = _standardize(part) + rng.uniform(0.3, 2.0) * _standardize(_linear(z, rng))
    return _standardize(part)


def _linear(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = z.shape[1]
    keep = np.asarray(rng.random(k) < rng.uniform(0.3, 1.0), dtype=np.float64)
    w = np.asarray(rng.standard_normal(k)) * keep
    if not w.any():
        w[rng.integers(k)] = 1.0
    return z @ w


def _mlp(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h = z
    for _ in range(_small(2, rng)):
        width = int(rng.integers(4, 33))
        w = rng.standard_normal((h.shape[1], width)) / math.sqrt(h.shape[1])
        h = _ACTS[int(rng.integers(len(_ACTS)))](h @ w + 0.5 * rng.standard_normal(width))
    return h @ rng.standard_normal(h.shape[1])


def _trees(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sum of T oblivious trees of depth D; thresholds are values of the data."""
    n, k = z.shape
    t, depth = _small(8, rng), _small(4, rng)
    cols = rng.integers(0, k, (t, depth))
    thr = z[rng.integers(0, n, (t, depth)), cols]  # (T, D)
    leaf = ((z[:, cols] > thr) << np.arange(depth)).sum(-1)  # (N, T)
    values = rng.standard_normal((t, 2**depth))
    return np.take_along_axis(values, leaf.T, 1).sum(0)


def iid_covariates(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """d independent covariate columns (n, d), as simulation studies draw them: standard
    normal, uniform, binary with a random rate, or skewed (log-normal); with probability
    0.3 the normal columns share a latent factor (correlated covariates)."""
    kind = rng.choice(4, size=d, p=[0.4, 0.25, 0.25, 0.1])
    x = np.empty((n, d))
    normal = rng.standard_normal((n, d))
    if rng.random() < 0.3:
        rho = rng.uniform(0.2, 0.8)
        normal = math.sqrt(1 - rho) * normal + math.sqrt(rho) * rng.standard_normal((n, 1))
    x[:, kind == 0] = normal[:, kind == 0]
    x[:, kind == 1] = rng.uniform(0.0, 1.0, (n, int((kind == 1).sum())))
    rate = rng.uniform(0.05, 0.95, int((kind == 2).sum()))
    x[:, kind == 2] = rng.random((n, rate.size)) < rate
    x[:, kind == 3] = np.exp(rng.uniform(0.3, 1.0) * normal[:, kind == 3])
    return x


def _warp(
    mu0: np.ndarray, mu1: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Both surfaces (or one, at random) through one random monotone warp: exp(a m),
    softplus or a signed power; then shifted and scaled back to the pooled mean and std of
    the unwarped pair, so noise and effect scales keep their meaning."""
    kind = int(rng.integers(3))
    a = rng.uniform(0.3, 1.2)
    sign = 1.0 if rng.random() < 0.5 else -1.0

    def warp(m: np.ndarray) -> np.ndarray:
        m = np.clip(m, -6.0, 6.0)
        if kind == 0:
            return sign * np.exp(a * sign * m)
        if kind == 1:
            return np.logaddexp(0.0, 2.0 * a * m) / (2.0 * a)
        return np.sign(m) * np.abs(m) ** (1.0 + a)

    arms = (
        (True, True)
        if rng.random() < 0.5
        else ((True, False) if rng.random() < 0.5 else (False, True))
    )
    w0 = warp(mu0) if arms[0] else mu0
    w1 = warp(mu1) if arms[1] else mu1
    pooled, warped = np.concatenate([mu0, mu1]), np.concatenate([w0, w1])
    sd = warped.std()
    if not np.isfinite(sd) or sd < 1e-8:
        return mu0, mu1
    k = pooled.std() / sd
    return (w0 - warped.mean()) * k + pooled.mean(), (w1 - warped.mean()) * k + pooled.mean()


@dataclass(frozen=True)
class CausalPrior:
    """Observational studies with a binary treatment and known potential outcomes.

    Shares and scales below are per dataset, drawn from their hyperpriors. Outcome scales
    are in units of the std of mu0 (before the dataset is standardised).

    Args:
        task: always "regression" (the head is a bar distribution).
        min_features: each dataset uses d in [min_features, F] covariates.
        tree_fraction: share of covariate tables from tree SCMs (see ``SCMPrior``).
        categorical_share: share of covariates turned categorical.
        max_categories: most levels of a categorical covariate.
        missing_datasets: probability that a dataset has missing covariate values.
        missing_share: share of covariate cells made missing.
        irrelevant_share: probability that a covariate affects neither treatment nor
            outcome.
        outcome_only_share: probability that a covariate affects only the outcome.
        treatment_only_share: probability that a covariate affects only the treatment;
            the other covariates are confounders. The three shares' upper ends sum to <= 1.
        confounding: std of the propensity logit across rows: 0 is a randomised trial,
            3 is strong confounding with little overlap.
        randomized_datasets: probability that a dataset is a randomised trial
            (confounding 0 whatever was drawn).
        treated_share: treated share at the propensity function's centre.
        propensity_clip: propensities are clipped to [clip, 1 - clip] (overlap).
        effect_size: magnitude of the average effect (its sign is random).
        heterogeneity: std of tau(x) across rows.
        constant_effect_datasets: probability that a dataset has a constant effect.
        noise_std: std of the outcome noise.
        iid_covariates: probability that a dataset's covariates are independent columns
            (normal, uniform, binary or skewed, as simulation studies draw them) instead of
            an SCM table.
        separate_surfaces: probability that mu1 is its own random function, c * mu0 +
            heterogeneity * g(x) + effect with c in [0, 1] (at c = 0 the arms share nothing,
            as in IHDP's surface B or a T-learner's world).
        outcome_warp: probability that the outcome surfaces pass through a random monotone
            warp (exponential, softplus or a signed power): skewed, heavy-tailed outcomes;
            half the time one arm only.
        heavy_noise: probability that the noise is Student-t (2.5 to 6 degrees of freedom).
        heteroscedastic: probability that the noise std varies with x.
        outcome_queries: share of query rows that ask for mu0(x) or mu1(x) (half each).
        ate_queries: share of query rows that ask for the ATE; the rest ask for tau(x).
    """

    name: ClassVar[str] = "causal"
    n_row_inputs: ClassVar[int] = 3  # (w0, w1, ate): see the module docstring
    task: Task = "regression"
    min_features: int = 1
    tree_fraction: float = 0.3
    categorical_share: Param = Uniform(0.0, 0.4)
    max_categories: int = 10
    missing_datasets: float = 0.3
    missing_share: Param = Uniform(0.01, 0.3)
    irrelevant_share: Param = Uniform(0.0, 0.3)
    outcome_only_share: Param = Uniform(0.0, 0.4)
    treatment_only_share: Param = Uniform(0.0, 0.3)
    confounding: Param = Uniform(0.0, 3.0)
    randomized_datasets: float = 0.15
    treated_share: Param = Uniform(0.15, 0.85)
    propensity_clip: float = 0.02
    effect_size: Param = Uniform(0.0, 1.5)
    heterogeneity: Param = LogUniform(0.05, 3.0)
    constant_effect_datasets: float = 0.2
    noise_std: Param = LogUniform(0.05, 1.5)
    iid_covariates: float = 0.3
    separate_surfaces: float = 0.25
    outcome_warp: float = 0.25
    heavy_noise: float = 0.15
    heteroscedastic: float = 0.2
    outcome_queries: float = 0.4
    ate_queries: float = 0.1

    def __post_init__(self) -> None:
        if self.task != "regression":
            raise InvalidConfigError(
                f"CausalPrior.task must be 'regression' (a bar-distribution head). "
                f"Got {self.task!r}."
            )
        if self.min_features < 1 or self.max_categories < 2:
            name = "min_features" if self.min_features < 1 else "max_categories"
            raise InvalidConfigError(
                f"CausalPrior.{name} must be >= {1 if name == 'min_features' else 2}. "
                f"Got {getattr(self, name)}."
            )
        unit = (
            "tree_fraction",
            "categorical_share",
            "missing_datasets",
            "missing_share",
            "irrelevant_share",
            "outcome_only_share",
            "treatment_only_share",
            "randomized_datasets",
            "treated_share",
            "constant_effect_datasets",
            "iid_covariates",
            "separate_surfaces",
            "outcome_warp",
            "heavy_noise",
            "heteroscedastic",
            "outcome_queries",
            "ate_queries",
        )
        for name in unit:
            lo, hi = _support(getattr(self, name))
            if not (lo >= 0.0 and hi <= 1.0):
                raise InvalidConfigError(
                    f"CausalPrior.{name} must lie in [0, 1] (fixed or every value of its "
                    f"hyperprior). Got {getattr(self, name)!r}."
                )
        for name in ("confounding", "effect_size", "heterogeneity", "noise_std"):
            lo, hi = _support(getattr(self, name))
            if not (lo >= 0.0 and math.isfinite(hi)):
                raise InvalidConfigError(
                    f"CausalPrior.{name} must be a finite number >= 0 (fixed or every value "
                    f"of its hyperprior). Got {getattr(self, name)!r}."
                )
        lo, hi = _support(self.treated_share)
        if lo <= 0.0 or hi >= 1.0:
            raise InvalidConfigError(
                f"CausalPrior.treated_share must lie in (0, 1) so that both arms occur. "
                f"Got {self.treated_share!r}."
            )
        if not 0.0 < self.propensity_clip < 0.5:
            raise InvalidConfigError(
                "CausalPrior.propensity_clip must be in (0, 0.5): propensities are clipped "
                f"to [clip, 1 - clip] to keep some overlap. Got {self.propensity_clip}."
            )
        roles = ("irrelevant_share", "outcome_only_share", "treatment_only_share")
        top = sum(_support(getattr(self, r))[1] for r in roles)
        if top > 1.0 + 1e-9:
            raise InvalidConfigError(
                f"CausalPrior.{', '.join(roles)} can sum to {top:g}; their largest values "
                "must sum to <= 1 (the rest of the covariates are confounders)."
            )
        if self.outcome_queries + self.ate_queries > 1.0:
            raise InvalidConfigError(
                "CausalPrior.outcome_queries + ate_queries must be <= 1 (the rest ask for "
                f"tau(x)). Got {self.outcome_queries} + {self.ate_queries}."
            )

    def covariate_prior(self) -> SCMPrior:
        """The tabular SCM prior that draws the covariates."""
        return SCMPrior(
            task="regression",
            tree_fraction=self.tree_fraction,
            min_features=self.min_features,
            categorical_share=self.categorical_share,
            max_categories=self.max_categories,
            missing_datasets=self.missing_datasets,
            missing_share=self.missing_share,
        )

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n, sep = shape.batch_size, shape.n_rows, shape.single_eval_pos
        cov = self.covariate_prior().sample(shape, generator=generator)
        categorical = cov.extras["categorical"]
        assert cov.n_features is not None
        drawn = {
            k: draw(getattr(self, k), b, generator).double().numpy()
            for k in (
                "irrelevant_share",
                "outcome_only_share",
                "treatment_only_share",
                "confounding",
                "treated_share",
                "effect_size",
                "heterogeneity",
                "noise_std",
            )
        }
        seeds = torch.randint(0, 2**62, (b,), generator=generator).tolist()
        x_np = cov.x.numpy()
        out = {
            k: np.zeros((b, n), dtype=np.float32)
            for k in ("y", "target", "treatment", "propensity", "mu0", "mu1")
        }
        query = np.zeros((b, n), dtype=np.int64)
        ate = np.zeros(b, dtype=np.float32)
        confounding = np.zeros(b, dtype=np.float32)
        heterogeneity = np.zeros(b, dtype=np.float32)
        x = x_np  # cov.x's memory: ours to change (iid covariates, ATE queries' x)
        for i in range(b):
            rng = np.random.default_rng(seeds[i])
            d = int(cov.n_features[i])
            if rng.random() < self.iid_covariates:
                x_np[i, :, :d] = iid_covariates(n, d, rng)
                categorical[i, :d] = False
            s = {k: float(v[i]) for k, v in drawn.items()}
            if rng.random() < self.randomized_datasets:
                s["confounding"] = 0.0
            if rng.random() < self.constant_effect_datasets:
                s["heterogeneity"] = 0.0
            study = self._study(x_np[i, :, :d], categorical[i, :d].numpy(), s, rng)
            for k in ("y", "treatment", "propensity", "mu0", "mu1"):
                out[k][i] = study[k]
            confounding[i], heterogeneity[i] = s["confounding"], s["heterogeneity"]
            # queries: what each row after the context asks for, and its target
            tau = study["mu1"] - study["mu0"]
            ate[i] = tau[:sep].mean()
            u = rng.random(n - sep)
            kinds = np.where(
                u < self.ate_queries,
                ATE,
                np.where(
                    u < self.ate_queries + self.outcome_queries,
                    np.where(rng.random(n - sep) < 0.5, MU0, MU1),
                    TAU,
                ),
            )
            query[i, sep:] = kinds
            target = {MU0: study["mu0"][sep:], MU1: study["mu1"][sep:], TAU: tau[sep:]}
            tgt = np.select([kinds == k for k in target], list(target.values()), ate[i])
            out["target"][i, :sep] = study["y"][:sep]
            out["target"][i, sep:] = tgt
            is_ate = np.flatnonzero(kinds == ATE) + sep
            x[i, is_ate] = x[i, rng.integers(0, sep, is_ate.size)]  # x of an ATE query: any
        t = out["treatment"]
        row_inputs = np.zeros((b, n, 3), dtype=np.float32)
        row_inputs[:, :sep] = factual_inputs(t[:, :sep])
        for kind, code in ROW_INPUTS.items():
            row_inputs[query == kind] = code
        return Batch(
            x=torch.from_numpy(x),
            y=torch.from_numpy(out["y"]),
            target_y=torch.from_numpy(out["target"]),
            single_eval_pos=sep,
            n_features=cov.n_features,
            extras={
                "row_inputs": torch.from_numpy(row_inputs),
                "query": torch.from_numpy(query),
                "treatment": torch.from_numpy(t),
                "propensity": torch.from_numpy(out["propensity"]),
                "mu0": torch.from_numpy(out["mu0"]),
                "mu1": torch.from_numpy(out["mu1"]),
                "ate": torch.from_numpy(ate),
                "confounding": torch.from_numpy(confounding),
                "heterogeneity": torch.from_numpy(heterogeneity),
                "categorical": categorical,
            },
        )

    def _study(
        self,
        x: np.ndarray,
        categorical: np.ndarray,
        s: dict[str, float],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """One observational study on covariates x (N, d): treatment, propensity, the
        standardised potential outcomes (noise-free) and the observed outcome."""
        n, d = x.shape
        z = prepare_covariates(x, categorical, rng)
        cut = np.cumsum([s["irrelevant_share"], s["outcome_only_share"]])
        cut = np.append(cut, cut[-1] + s["treatment_only_share"])
        u = rng.random(d)
        role = np.where(
            u < cut[0],
            _IRRELEVANT,
            np.where(u < cut[1], _OUTCOME, np.where(u < cut[2], _TREATMENT, _CONFOUNDER)),
        )
        # treatment: a random propensity function of the confounders and instruments
        g = random_function(z[:, (role == _CONFOUNDER) | (role == _TREATMENT)], rng)
        logit = math.log(s["treated_share"] / (1.0 - s["treated_share"])) + s["confounding"] * g
        clip = self.propensity_clip
        e = np.clip(1.0 / (1.0 + np.exp(-logit)), clip, 1.0 - clip)
        t = (rng.random(n) < e).astype(np.float64)
        # outcomes: mu0 of the confounders and outcome-only columns, tau of some of them
        outcome_cols = np.flatnonzero((role == _CONFOUNDER) | (role == _OUTCOME))
        mu0 = random_function(z[:, outcome_cols], rng)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        effect = sign * s["effect_size"]
        het = s["heterogeneity"]
        if het > 0 and outcome_cols.size and rng.random() < self.separate_surfaces:
            # the treated surface is its own function; the effect is whatever differs
            c = rng.uniform(0.0, 1.0)
            mu1 = c * mu0 + het * random_function(z[:, outcome_cols], rng) + effect
        else:
            tau = np.full(n, effect)
            if het > 0 and outcome_cols.size:
                if rng.random() < 0.25 and mu0.any():  # the effect grows with the baseline
                    modifier = mu0 * (1.0 if rng.random() < 0.5 else -1.0)
                else:
                    k = _small(outcome_cols.size, rng)
                    cols = rng.choice(outcome_cols, k, replace=False)
                    modifier = random_function(z[:, cols], rng)
                tau = tau + het * modifier
            mu1 = mu0 + tau
        if rng.random() < self.outcome_warp:
            mu0, mu1 = _warp(mu0, mu1, rng)
        noise: np.ndarray = np.asarray(rng.standard_normal(n))
        if rng.random() < self.heavy_noise:  # Student-t, scaled to unit variance
            df = rng.uniform(2.5, 6.0)
            noise = np.asarray(rng.standard_t(df, n)) / math.sqrt(df / (df - 2.0))
        if rng.random() < self.heteroscedastic and d:
            h = random_function(z[:, rng.choice(d, _small(d, rng), replace=False)], rng)
            spread = np.exp(rng.uniform(0.2, 0.8) * h)
            noise = noise * spread / math.sqrt(float(np.mean(spread**2)))
        y = np.where(t > 0, mu1, mu0) + s["noise_std"] * noise
        mean, sd = y.mean(), max(float(y.std()), 1e-3)
        return {
            "y": (y - mean) / sd,
            "treatment": t,
            "propensity": e,
            "mu0": (mu0 - mean) / sd,
            "mu1": (mu1 - mean) / sd,
        }


def factual_inputs(t: np.ndarray) -> np.ndarray:
    """Row inputs (..., 3) of rows with treatments t (...): (1 - t, t, 0), each row's own
    arm (a context row's, or a query for its factual outcome)."""
    t = np.asarray(t, dtype=np.float32)
    return np.stack([1.0 - t, t, np.zeros_like(t)], axis=-1)
