"""Treatment-effect benchmark: PFNTreatmentEffect against EconML's learners, AIPW and the
naive difference in means (issue 13, "Measured").

Install (a separate venv, or the ``bench`` extra; econml, doubleml and causalml are benchmark
dependencies only, never runtime ones of pfnkit)::

    python3 -m venv runs/bench-venv && . runs/bench-venv/bin/activate
    pip install torch                    # the CPU wheel is enough
    pip install -e '.[bench]'            # econml, doubleml, causalml

Data (every family offline: nothing is downloaded):
  * ``ihdp-B``: IHDP response surface B (Hill 2011) re-simulated by
    ``econml.data.dgps.ihdp_surface_B(random_state=seed)`` (747 rows, 25 covariates; the
    covariate table ships inside econml; its intercept column is dropped), ``--seeds`` seeds.
    CausalPFN's notebook reports IHDP PEHE 0.19 on the 100 standard realizations (the
    NPCI files of Shalit et al.), which cannot be had offline: ours is a re-simulation of the
    same response surface, so its figures are comparable in kind, not number for number.
  * ``nw-A`` .. ``nw-D``: ``causalml.dataset.synthetic_data(mode=1..4)``, Nie and Wager's
    setups A (hard nuisance, easy effect), B (randomised trial), C (easy propensity, hard
    baseline, constant effect) and D (unrelated arms); ``--n`` rows, ``--synth-p`` covariates
    (6, one of the paper's settings), noise sigma 1; ``--synth-seeds`` seeds.
  * ``doubleml-het``: doubleml's ``make_heterogeneous_data`` (Oprescu et al. 2019: 30
    uniform covariates, 5 relevant, tau(x) = exp(2 x0) + 3 sin(4 x0)), binary treatment,
    ``--n`` rows, ``--synth-seeds`` seeds.
  * ``prior``: held-out draws from pfnkit's own ``causal`` prior (``CausalPrior`` with its
    default settings, a generator seed far from training's): the context rows of one dataset
    (``--prior-rows``, up to 32 covariates with categoricals and NaN) are the observed table
    (X, t, y); the truth is tau = mu1 - mu0 of the prior's noise-free surfaces, in the units
    of y. ``--prior-seeds`` draws.
  Evaluation is in-sample, as is standard for IHDP: every method fits (X, t, y) and is
  scored on the same rows' true tau(x); the target ATE is the sample ATE, the mean of tau
  over those rows.

Methods (``--methods``, comma-separated; default all). Every base model is scikit-learn's
HistGradientBoosting with ``random_state=0``: outcome regressors at their defaults,
propensity classifiers (and the DR-learner's final model) with ``early_stopping=True`` (a
10 % validation split; the default 100 iterations overfit propensities at n <= 1000 and
made AIPW's ATE error ~5x and the DR-learner's PEHE ~10x larger). Baselines see X with NaN
imputed by the column median (only the prior's draws have NaN); the PFN sees X as is:
  * ``pfn``           PFNTreatmentEffect(checkpoint=--checkpoint) at its defaults;
  * ``pfn-ft``        the same with ``fine_tune=True`` (test-time adaptation: the outcome
                      surfaces trained on the study's factual outcomes, up to 60 s per
                      copy, and the tuned difference stacked by the R-loss of three
                      cross-fitted copies);
  * ``s-learner``     econml SLearner;
  * ``t-learner``     econml TLearner;
  * ``x-learner``     econml XLearner (HGB propensity);
  * ``dr-learner``    econml DRLearner (HGB propensity, regression and final model,
                      propensities clipped at 0.01; a non-parametric final model gives no
                      intervals);
  * ``causal-forest`` econml CausalForestDML (HGB nuisances, discrete treatment, 100 trees,
                      n_jobs=1): CATE intervals from its bootstrap of little bags, the ATE
                      and its interval from its doubly robust ``ate_`` / ``ate_stderr_``;
  * ``aipw``          cross-fitted AIPW (5 folds, HGB outcome model per arm and propensity
                      clipped to [0.01, 0.99]): the ATE and a normal 95 % interval only;
  * ``naive``         difference in means (a constant CATE) with a Welch normal interval.
  The ATE of the meta-learners is the mean of their CATE over the rows.

Metrics per data set: PEHE (root mean squared error of the CATE over the rows), absolute ATE
error, coverage of the 95 % CATE intervals (share of rows whose true tau lies inside) and of
the 95 % ATE interval (share of seeds), the scale about its centre that would make each
CATE interval cover 95 % of the rows (the 95th percentile of |tau - centre| / half-width:
below 1, the intervals are too wide), and fit + effect wall time (seconds, perf_counter;
intervals and the ATE are not timed). Tables (markdown on stdout, progress on stderr): per
family, mean +- standard error over seeds (median for time), best mean in bold; then a
summary of every family. ``--out`` appends one JSON line per data set x method;
``--report FILE`` prints the tables of such a file without running anything.

Run from the repository root, one thread (the machine is shared)::

    python benchmarks/causal.py --quick --checkpoint runs/treatment-effect  # smoke (~30 s)
    python benchmarks/causal.py --out runs/causal_bench.jsonl > runs/causal_bench.md  # ~8 min
    python benchmarks/causal.py --families ihdp-B --seeds 10 --methods pfn,causal-forest
    python benchmarks/causal.py --report runs/causal_bench.jsonl
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

Z95 = 1.959963984540054
FAMILIES = ("ihdp-B", "nw-A", "nw-B", "nw-C", "nw-D", "doubleml-het", "prior")
NW_MODES = {"nw-A": 1, "nw-B": 2, "nw-C": 3, "nw-D": 4}
METHODS = (
    "pfn",
    "pfn-ft",
    "s-learner",
    "t-learner",
    "x-learner",
    "dr-learner",
    "causal-forest",
    "aipw",
    "naive",
)
PRIOR_SEED_OFFSET = 7_000_000_000  # generator seeds of the prior's held-out draws
CAUSALPFN_NOTE = (
    "CausalPFN's notebook reports IHDP PEHE 0.19 on the 100 standard realizations of "
    "response surface B, which cannot be had offline; our ihdp-B is econml's "
    "re-simulation of the same surface (new coefficients and noise per seed), so compare "
    "in kind, not number for number."
)


# ---------------------------------------------------------------- data


@dataclass
class Study:
    """One observational data set with its true CATE (all rows are evaluation rows)."""

    family: str
    seed: int
    x: np.ndarray  # (n, d) float, NaN allowed
    t: np.ndarray  # (n,) 0/1
    y: np.ndarray  # (n,)
    tau: np.ndarray  # (n,) true CATE

    @property
    def ate(self) -> float:
        return float(self.tau.mean())


def ihdp(seed: int) -> Study:
    from econml.data.dgps import ihdp_surface_B

    y, t, x, tau = ihdp_surface_B(random_state=seed)
    # column 0 is the intercept econml adds for its coefficients: not a covariate
    return Study("ihdp-B", seed, np.asarray(x[:, 1:], float), t.astype(float), y, tau)


def nie_wager(family: str, seed: int, n: int, p: int) -> Study:
    from causalml.dataset import synthetic_data

    np.random.seed(seed)  # causalml draws from numpy's global generator
    y, x, w, tau, _b, _e = synthetic_data(mode=NW_MODES[family], n=n, p=p, sigma=1.0)
    return Study(family, seed, np.asarray(x, float), np.asarray(w, float), y, np.asarray(tau))


def doubleml_het(seed: int, n: int) -> Study:
    try:
        from doubleml.irm.datasets import make_heterogeneous_data
    except ImportError:  # older doubleml
        from doubleml.datasets import make_heterogeneous_data

    np.random.seed(seed)  # doubleml draws from numpy's global generator
    res = make_heterogeneous_data(n_obs=n, p=30, support_size=5, n_x=1, binary_treatment=True)
    data = res["data"]
    x = data[[c for c in data.columns if c.startswith("X_")]].to_numpy(float)
    return Study(
        "doubleml-het",
        seed,
        x,
        data["d"].to_numpy(float),
        data["y"].to_numpy(float),
        np.asarray(res["effects"], float),
    )


def prior_draw(seed: int, rows: int, n_features: int) -> Study:
    import torch

    from pfnkit.priors._base import BatchShape
    from pfnkit.priors.causal import CausalPrior

    gen = torch.Generator().manual_seed(PRIOR_SEED_OFFSET + seed)
    for _ in range(100):  # a draw with one arm only cannot be fitted: draw again
        b = CausalPrior().sample(BatchShape(1, rows + 1, n_features, rows), generator=gen)
        t = b.extras["treatment"][0, :rows].double().numpy()
        if 2 <= t.sum() <= rows - 2:
            break
    d = int(b.n_features[0]) if b.n_features is not None else n_features
    x = b.x[0, :rows, :d].double().numpy()
    y = b.y[0, :rows].double().numpy()
    tau = (b.extras["mu1"][0, :rows] - b.extras["mu0"][0, :rows]).double().numpy()
    return Study("prior", seed, x, t, y, tau)


def studies(args: argparse.Namespace) -> Iterator[Study]:
    for family in args.families:
        if family == "ihdp-B":
            for s in range(args.seeds):
                yield ihdp(s)
        elif family in NW_MODES:
            for s in range(args.synth_seeds):
                yield nie_wager(family, s, args.n, args.synth_p)
        elif family == "doubleml-het":
            for s in range(args.synth_seeds):
                yield doubleml_het(s, args.n)
        elif family == "prior":
            for s in range(args.prior_seeds):
                yield prior_draw(s, args.prior_rows, args.prior_features)


# ---------------------------------------------------------------- methods


@dataclass
class Estimate:
    cate: np.ndarray | None = None  # (n,)
    ate: float | None = None
    cate_interval: tuple[np.ndarray, np.ndarray] | None = None
    ate_interval: tuple[float, float] | None = None
    t_fit: float = float("nan")
    t_effect: float = float("nan")
    notes: list[str] = field(default_factory=list)


def hgb_reg() -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=0)


def hgb_clf() -> Any:
    """The propensity model: early stopping on a validation split (at these sizes the fixed
    100 iterations overfit the probabilities towards 0 and 1, and AIPW's ATE error grows
    fivefold)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(early_stopping=True, random_state=0)


def hgb_final() -> Any:
    """The DR-learner's final model: early-stopped, as its pseudo-outcomes are noisy."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(early_stopping=True, random_state=0)


def impute(x: np.ndarray) -> np.ndarray:
    """Column medians for NaN (baselines only; a column of NaN becomes 0)."""
    if not np.isnan(x).any():
        return x
    x = x.copy()
    for j in range(x.shape[1]):
        nan = np.isnan(x[:, j])
        if nan.any():
            x[nan, j] = np.median(x[~nan, j]) if (~nan).any() else 0.0
    return x


def run_pfn(s: Study, checkpoint: str, fine_tune: bool = False) -> Estimate:
    from pfnkit import PFNTreatmentEffect

    est = PFNTreatmentEffect(checkpoint=checkpoint, fine_tune=fine_tune, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(s.x, s.t, s.y)
        t1 = time.perf_counter()
        cate = est.effect(s.x)
        t2 = time.perf_counter()
        out = Estimate(
            cate,
            est.ate(),
            est.effect_interval(s.x, alpha=0.05),
            est.ate_interval(alpha=0.05),
            t1 - t0,
            t2 - t1,
        )
    out.notes = sorted({str(w.message).split(":")[0][:60] for w in caught})
    return out


def run_econml(s: Study, name: str) -> Estimate:
    from econml.dml import CausalForestDML
    from econml.dr import DRLearner
    from econml.metalearners import SLearner, TLearner, XLearner

    x = impute(s.x)
    if name == "s-learner":
        est: Any = SLearner(overall_model=hgb_reg())
    elif name == "t-learner":
        est = TLearner(models=hgb_reg())
    elif name == "x-learner":
        est = XLearner(models=hgb_reg(), propensity_model=hgb_clf())
    elif name == "dr-learner":
        est = DRLearner(
            model_propensity=hgb_clf(),
            model_regression=hgb_reg(),
            model_final=hgb_final(),
            min_propensity=0.01,
            random_state=0,
        )
    elif name == "causal-forest":
        est = CausalForestDML(
            model_y=hgb_reg(),
            model_t=hgb_clf(),
            discrete_treatment=True,
            n_estimators=100,
            n_jobs=1,
            random_state=0,
        )
    else:
        raise ValueError(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est.fit(s.y, s.t, X=x)
        t1 = time.perf_counter()
        cate = np.ravel(est.effect(x))
        t2 = time.perf_counter()
        out = Estimate(cate, float(cate.mean()), t_fit=t1 - t0, t_effect=t2 - t1)
        if name == "causal-forest":
            lo, hi = est.effect_interval(x, alpha=0.05)
            out.cate_interval = (np.ravel(lo), np.ravel(hi))
            ate, se = float(np.ravel(est.ate_)[0]), float(np.ravel(est.ate_stderr_)[0])
            out.ate, out.ate_interval = ate, (ate - Z95 * se, ate + Z95 * se)
    return out


def run_aipw(s: Study, folds: int = 5) -> Estimate:
    """Cross-fitted AIPW: per fold, an outcome model per arm and a propensity model are
    fitted on the other folds; the ATE is the mean of the efficient influence function's
    pseudo-outcomes, its standard error their std / sqrt(n)."""
    from sklearn.model_selection import StratifiedKFold

    x, t, y = impute(s.x), s.t.astype(int), s.y
    t0 = time.perf_counter()
    mu0, mu1, e = np.empty(len(y)), np.empty(len(y)), np.empty(len(y))
    k = max(2, min(folds, int(t.sum()), int((1 - t).sum())))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=0).split(x, t):
        xt, tt, yt = x[train], t[train], y[train]
        mu0[test] = hgb_reg().fit(xt[tt == 0], yt[tt == 0]).predict(x[test])
        mu1[test] = hgb_reg().fit(xt[tt == 1], yt[tt == 1]).predict(x[test])
        e[test] = hgb_clf().fit(xt, tt).predict_proba(x[test])[:, 1]
    e = np.clip(e, 0.01, 0.99)
    psi = mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)
    ate, se = float(psi.mean()), float(psi.std(ddof=1) / math.sqrt(len(psi)))
    t1 = time.perf_counter()
    return Estimate(None, ate, None, (ate - Z95 * se, ate + Z95 * se), t1 - t0, 0.0)


def run_naive(s: Study) -> Estimate:
    t0 = time.perf_counter()
    y1, y0 = s.y[s.t == 1], s.y[s.t == 0]
    ate = float(y1.mean() - y0.mean())
    se = math.sqrt(y1.var(ddof=1) / len(y1) + y0.var(ddof=1) / len(y0))
    t1 = time.perf_counter()
    return Estimate(
        np.full(len(s.y), ate), ate, None, (ate - Z95 * se, ate + Z95 * se), t1 - t0, 0.0
    )


def checkpoint_line(checkpoint: str) -> str:
    """Load the PFN's checkpoint once (a missing or wrong one stops the run here, not once
    per data set) and describe it: its training step, wall time and context limit."""
    from pfnkit.estimators.causal import DEFAULT_CHECKPOINT
    from pfnkit.train.checkpoint import bundled_checkpoint_path, load_pfn

    src: Any = checkpoint
    if checkpoint == "default":
        src = bundled_checkpoint_path(DEFAULT_CHECKPOINT, "treatment-effect")
    model, card = load_pfn(src, expect="treatment-effect", what="PFNTreatmentEffect")
    raw = getattr(model, "card", None) or {}
    wall = (raw.get("metrics") or {}).get("wall_time")
    wall_s = f", {float(wall) / 60:.0f} min of training" if wall is not None else ""
    cal = raw.get("calibration") or {}
    cal_s = (
        f", interval scales CATE {cal['cate_interval_scale']:g} / ATE {cal['ate_interval_scale']:g}"
        if cal
        else ", uncalibrated intervals"
    )
    return (
        f"checkpoint `{checkpoint}`: step {raw.get('step', '?')} of "
        f"{card.train.get('steps', '?')}{wall_s}, context limit {card.context_limit}{cal_s}"
    )


def runner(name: str, checkpoint: str) -> Callable[[Study], Estimate]:
    if name in ("pfn", "pfn-ft"):
        return lambda s: run_pfn(s, checkpoint, fine_tune=name == "pfn-ft")
    if name == "aipw":
        return run_aipw
    if name == "naive":
        return run_naive
    return lambda s: run_econml(s, name)


# ---------------------------------------------------------------- scoring


def score(s: Study, method: str, est: Estimate) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "family": s.family,
        "seed": s.seed,
        "method": method,
        "n": len(s.y),
        "d": s.x.shape[1],
        "ate_true": s.ate,
        "t_fit": est.t_fit,
        "t_effect": est.t_effect,
        "t_total": est.t_fit + est.t_effect,
    }
    if est.cate is not None:
        rec["pehe"] = float(np.sqrt(np.mean((est.cate - s.tau) ** 2)))
    if est.ate is not None:
        rec["ate_hat"] = est.ate
        rec["ate_err"] = abs(est.ate - s.ate)
    if est.cate_interval is not None:
        lo, hi = est.cate_interval
        rec["cate_cov"] = float(np.mean((lo <= s.tau) & (s.tau <= hi)))
        rec["cate_width"] = float(np.mean(hi - lo))
        # the scale about each interval's centre that would make it cover 95 % of the rows
        half = np.maximum((hi - lo) / 2, 1e-12)
        rec["cate_scale95"] = float(np.quantile(np.abs(s.tau - (hi + lo) / 2) / half, 0.95))
    if est.ate_interval is not None:
        lo_a, hi_a = est.ate_interval
        rec["ate_lo"], rec["ate_hi"] = float(lo_a), float(hi_a)
        rec["ate_cov"] = float(lo_a <= s.ate <= hi_a)
    if est.notes:
        rec["notes"] = est.notes
    return rec


# ---------------------------------------------------------------- tables


def values(recs: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r[key] for r in recs if r.get(key) is not None], dtype=float)


def mean_se(v: np.ndarray, digits: int = 3) -> str:
    if v.size == 0:
        return "-"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) / math.sqrt(v.size):.{digits}f}"


def pct(v: np.ndarray) -> str:
    return "-" if v.size == 0 else f"{100 * v.mean():.0f} %"


def scale_cell(v: np.ndarray) -> str:
    """Median and range over data sets of the interval scale that covers 95 % of rows."""
    return "-" if v.size == 0 else f"{np.median(v):.2f} ({v.min():.2f}-{v.max():.2f})"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bold_best(cells: list[str], means: list[float]) -> list[str]:
    finite = [m for m in means if math.isfinite(m)]
    if not finite:
        return cells
    best = min(finite)
    return [f"**{c}**" if m == best else c for c, m in zip(cells, means)]


def family_table(recs: list[dict[str, Any]], methods: list[str]) -> str:
    by = {m: [r for r in recs if r["method"] == m and "error" not in r] for m in methods}
    shown = [m for m in methods if by[m]]
    pehe = [values(by[m], "pehe") for m in shown]
    ate = [values(by[m], "ate_err") for m in shown]
    pehe_cells = bold_best(
        [mean_se(v) for v in pehe], [v.mean() if v.size else math.nan for v in pehe]
    )
    ate_cells = bold_best(
        [mean_se(v) for v in ate], [v.mean() if v.size else math.nan for v in ate]
    )
    rows = []
    for i, m in enumerate(shown):
        t = values(by[m], "t_total")
        rows.append(
            [
                m,
                pehe_cells[i],
                ate_cells[i],
                pct(values(by[m], "cate_cov")),
                pct(values(by[m], "ate_cov")),
                scale_cell(values(by[m], "cate_scale95")),
                "-" if t.size == 0 else f"{np.median(t):.2f}",
                str(len(by[m])),
            ]
        )
    header = ["method", "PEHE", "abs ATE error", "CATE 95 % cov", "ATE 95 % cov"]
    header += ["CATE scale for 95 % (median, range)", "fit+effect s (median)", "runs"]
    return md_table(header, rows)


def summary_tables(recs: list[dict[str, Any]], methods: list[str], families: list[str]) -> str:
    ok = [r for r in recs if "error" not in r]
    out = []
    for key, title in (("pehe", "PEHE (mean)"), ("ate_err", "abs ATE error (mean)")):
        rows = []
        cols: dict[str, list[str]] = {m: [] for m in methods}
        for fam in families:
            means = []
            for m in methods:
                v = values([r for r in ok if r["family"] == fam and r["method"] == m], key)
                means.append(v.mean() if v.size else math.nan)
            cells = bold_best(["-" if math.isnan(v) else f"{v:.3f}" for v in means], means)
            for m, c in zip(methods, cells):
                cols[m].append(c)
        for m in methods:
            ranks = []
            for fam in families:
                per = {
                    mm: values([r for r in ok if r["family"] == fam and r["method"] == mm], key)
                    for mm in methods
                }
                means = {mm: v.mean() for mm, v in per.items() if v.size}
                if m in means:
                    ranks.append(1 + sum(v < means[m] for v in means.values()))
            rank = f"{np.mean(ranks):.1f}" if ranks else "-"
            if any(c != "-" for c in cols[m]):
                rows.append([m, *cols[m], rank])
        out.append(f"**{title}**\n\n" + md_table(["method", *families, "mean rank"], rows))
    rows = []
    for m in methods:
        cells = []
        for fam in families:
            sel = [r for r in ok if r["family"] == fam and r["method"] == m]
            c, a = values(sel, "cate_cov"), values(sel, "ate_cov")
            cells.append("-" if c.size + a.size == 0 else f"{pct(c)} / {pct(a)}")
        if any(c != "-" for c in cells):
            rows.append([m, *cells])
    out.append(
        "**Coverage of 95 % intervals (CATE rows / ATE seeds)**\n\n"
        + md_table(["method", *families], rows)
    )
    rows = []
    for m in methods:
        cells = []
        for fam in families:
            t = values([r for r in ok if r["family"] == fam and r["method"] == m], "t_total")
            cells.append("-" if t.size == 0 else f"{np.median(t):.2f}")
        if any(c != "-" for c in cells):
            rows.append([m, *cells])
    out.append("**Fit + effect time, s (median)**\n\n" + md_table(["method", *families], rows))
    return "\n\n".join(out)


def report(recs: list[dict[str, Any]], methods: list[str] | None = None) -> str:
    methods = methods or [m for m in METHODS if any(r["method"] == m for r in recs)]
    families = [f for f in FAMILIES if any(r["family"] == f for r in recs)]
    families += sorted({r["family"] for r in recs} - set(families))
    parts = []
    for fam in families:
        sel = [r for r in recs if r["family"] == fam]
        seeds = len({r["seed"] for r in sel})
        ns = sorted({r["n"] for r in sel})
        head = f"### {fam} ({seeds} data sets, n = {', '.join(map(str, ns))})"
        parts.append(head + "\n\n" + family_table(sel, methods))
        if fam == "ihdp-B":
            parts.append(f"Note: {CAUSALPFN_NOTE}")
        errors = [r for r in sel if "error" in r]
        if errors:
            parts.append(
                "Failed runs: "
                + "; ".join(f"{r['method']} seed {r['seed']}: {r['error']}" for r in errors[:5])
            )
    parts.append("### Summary\n\n" + summary_tables(recs, methods, families))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default", help="PFNTreatmentEffect checkpoint")
    ap.add_argument("--seeds", type=int, default=50, help="IHDP-B seeds")
    ap.add_argument("--synth-seeds", type=int, default=10, help="seeds per synthetic family")
    ap.add_argument("--prior-seeds", type=int, default=20, help="held-out prior draws")
    ap.add_argument("--n", type=int, default=1000, help="rows of the synthetic families")
    ap.add_argument("--synth-p", type=int, default=6, help="covariates of nw-A..nw-D")
    ap.add_argument("--prior-rows", type=int, default=400, help="rows of a prior draw")
    ap.add_argument("--prior-features", type=int, default=32, help="most prior covariates")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--quick", action="store_true", help="2 IHDP seeds, 1 per family, n=300")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (BLAS/OMP: env)")
    ap.add_argument("--out", type=Path, help="append one JSON line per data set x method")
    ap.add_argument("--report", type=Path, help="print the tables of an --out file and exit")
    args = ap.parse_args(argv)
    for name, allowed in (("families", FAMILIES), ("methods", METHODS)):
        chosen = [v.strip() for v in getattr(args, name).split(",") if v.strip()]
        bad = [v for v in chosen if v not in allowed]
        if bad:
            ap.error(f"unknown --{name} {bad}; choose from {', '.join(allowed)}")
        setattr(args, name, chosen)
    if args.quick:
        args.seeds, args.synth_seeds, args.prior_seeds = 2, 1, 2
        args.n, args.prior_rows = 300, 200
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.report:
        recs = [json.loads(line) for line in args.report.read_text().splitlines() if line]
        print(report(recs, args.methods))
        return
    import torch

    torch.set_num_threads(args.threads)
    ckpt = f"checkpoint `{args.checkpoint}` (not used)"
    if {"pfn", "pfn-ft"} & set(args.methods):
        try:
            ckpt = checkpoint_line(args.checkpoint)
        except Exception as e:
            sys.exit(f"causal.py: --checkpoint {args.checkpoint!r} does not load: {e}")
    run_id = datetime.datetime.now().isoformat(timespec="seconds")
    cpu = platform.processor() or platform.machine()
    print(
        f"causal benchmark {run_id}: {ckpt}, {cpu}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s)",
        file=sys.stderr,
    )
    recs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for s in studies(args):
        line = [f"{s.family} seed {s.seed} n={len(s.y)} d={s.x.shape[1]}:"]
        for m in args.methods:
            try:
                rec = score(s, m, runner(m, args.checkpoint)(s))
            except Exception as e:  # a failed method is recorded; the run goes on
                rec = {"family": s.family, "seed": s.seed, "method": m, "n": len(s.y)}
                rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                traceback.print_exc(file=sys.stderr)
            rec["run"], rec["checkpoint"] = run_id, str(args.checkpoint)
            recs.append(rec)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            if "error" in rec:
                line.append(f"{m} ERR")
            elif "pehe" in rec:
                line.append(f"{m} {rec['pehe']:.3f}")
            else:
                line.append(f"{m} ate-err {rec.get('ate_err', math.nan):.3f}")
        elapsed = time.perf_counter() - start
        print(" ".join(line) + f" (PEHE) [{elapsed:.0f} s]", file=sys.stderr, flush=True)
    print(
        f"# Treatment-effect benchmark\n\n{ckpt}; run {run_id}, "
        f"{torch.get_num_threads()} torch thread(s), {time.perf_counter() - start:.0f} s in "
        "all. In-sample PEHE and ATE error; mean ± s.e. over data sets; best in bold.\n"
    )
    print(report(recs, args.methods))


if __name__ == "__main__":
    main()
