"""Tabular benchmark: PFNClassifier / PFNRegressor against default scikit-learn baselines.

Classification runs on the 18 KEEL data sets in ``<repo>/../shared/data/keel_dev/*.dat``
(comma-separated, no header, last column the class; ``--data`` points elsewhere, and they
are skipped with a note when the directory is absent) plus scikit-learn's bundled
breast_cancer, wine, iris and digits (named ``sk-...``). Regression runs on
``load_diabetes``, a synthetic ``make_friedman1(n_samples=500, noise=1.0, random_state=0)``
and the 8 regression tables of ``<repo>/../shared/data/tabular_more/`` (``--more-data``
points elsewhere; read by ``benchmarks/_large_data_sets.py``, see that folder's README.md):
diamonds, cps1988_wages, hotel_rates, food_delivery_time, computer_prices, ames_housing,
saratoga_houses and islr_wage, 1,728 to 53,940 rows, 6 to 79 features with categorical
string columns (cast to object, as the KEEL reader does) and missing cells; skipped with a
note when the folder is absent. Their targets are mostly prices and wages, right-skewed, and
are used raw (no log transform). Nothing is downloaded and no data is copied into the
repository.

Protocol: for every data set, ``--splits`` (default 5) random 50/50 train/test splits
(``train_test_split`` with seeds 0, 1, ...; stratified for classification); a training half
of more than 3,000 rows is subsampled (stratified) to 3,000, and a test half of more than
5,000 rows to 5,000 (same seed), so that the large tabular_more sets stay affordable (no
classification set reaches that cap). All models see the same splits in the same run. Every
model uses its default settings; ``random_state`` is set to the split seed where a model has
one (PFNs, random forests, gradient boosting), for reproducibility.

Models (``--models``, keys in brackets):
  * [pfn]    ``pfnkit.PFNClassifier(checkpoint=--checkpoint)`` /
             ``PFNRegressor(checkpoint=--reg-checkpoint)``; they take the pandas DataFrame
             as is (object columns and NaN included). ``--checkpoint`` may name several
             classification checkpoints: each gets its own column ("PFN <file stem>"), on
             the same splits, and its own entry in the speed line. ``--n-estimators N``
             sets their ensemble size (speed line included), ``--append-original``
             gives them ``append_original=True`` (speed line included). ``--fine-tune
             SECONDS`` (and ``--fine-tune-lr``) fine-tunes them on each training half
             first (``fine_tune=FineTune(time_budget=SECONDS)``; the speed line stays the
             default's);
  * [linear] LogisticRegression(max_iter=1000) / Ridge();
  * [rf]     RandomForestClassifier() / RandomForestRegressor();
  * [hgb]    HistGradientBoostingClassifier() / HistGradientBoostingRegressor();
  * [knn]    KNeighborsClassifier() / KNeighborsRegressor().
  The baselines get a ColumnTransformer: object columns -> SimpleImputer(most_frequent) +
  OneHotEncoder(handle_unknown="ignore"), numeric columns -> SimpleImputer() (mean);
  linear and kNN models are followed by a StandardScaler.

Classification metrics, averaged over splits: ROC AUC (binary: probability of
``classes_[1]``; multiclass: one-vs-rest macro, ``roc_auc_score(..., multi_class="ovr",
labels=model.classes_)``, over the classes present in the test half if one is missing),
accuracy, log loss (``labels=model.classes_``), expected calibration error (ECE: 15
equal-width bins of the top probability, ``pfnkit.estimators.calibration``) and the wall time
of fit + predict_proba. ``--softmax-temperature`` sets the PFNClassifier's (default "auto":
the checkpoint card's calibrated value, else 0.9; "cv": tuned by 5-fold CV on the training
half; or a number).

Regression metrics: RMSE of the point prediction (the predictive mean; for the PFN within
its default ``target_bounds``, and with ``--unbounded-mean`` also that of the plain mean of
the same fit, column "PFN, unbounded mean", which shares its NLL), nRMSE = RMSE /
standard deviation of that split's test targets (comparable across data sets: 1.0 is the
test mean's RMSE), and NLL, the mean negative log-likelihood per test point (nats, in the
target's units):
  * pfn: ``PFNRegressor.nll(X, y)`` (the PFN's bar-distribution predictive);
  * every baseline: a Gaussian centred on its prediction, with variance
      - linear, hgb, knn: the mean squared 5-fold out-of-fold residual on the training half;
      - rf: the variance of the trees' predictions for that test point plus that
        out-of-fold residual variance;
    floored at 1e-6 * var(y_train).
Across data sets the NLL is averaged as the NLL of the standardised target, NLL - log
sd(y_test) per split (unit-free; model differences are the same as for the raw NLL).

Warnings of the models are silenced; the PFNs' UserWarnings about too many training
rows (context subsampling) or too many features (feature subsets) are counted and the data
sets that triggered them are listed once. PyTorch (``--threads``) and the OpenMP/BLAS pools
of the baselines (threadpoolctl) are limited to the same number of threads.

Also printed: a speed line, the median (over 5 runs) fit + predict_proba time of the
default PFNClassifier and of HistGradientBoostingClassifier on
``make_classification(n_samples=2000, n_features=20, random_state=0)`` split 1000/1000
(only when classification data sets are run).

Run from the repository root::

    python benchmarks/tabular.py                                   # the full run
    python benchmarks/tabular.py --out runs/tabular.md             # also write the tables
    python benchmarks/tabular.py --quick --checkpoint runs/clf --reg-checkpoint runs/reg  # smoke
    python benchmarks/tabular.py --datasets german sk-digits diabetes --models pfn hgb
    python benchmarks/tabular.py --checkpoint default runs/clf-gpu/model.safetensors  # compare
    python benchmarks/tabular.py --softmax-temperature cv --models pfn  # CV-tuned temperature

Markdown tables go to stdout, progress to stderr: (1) ROC AUC per data set and model with
"mean" and "mean rank" rows, (2) log loss and ECE per data set and model, (3) a per-model
summary (mean ROC AUC, accuracy, log loss, ECE; median fit + predict time over all data set
x split runs), (4) regression per data set and model: nRMSE and NLL side by side (best in
bold), with a "mean" row (mean nRMSE; mean standardised NLL, over the sets where every model
ran) and a "best on" row (on how many sets each model has the lowest nRMSE / NLL), and (5)
the long form: RMSE, nRMSE, NLL and median fit + predict time per data set and model.

Measured (``python benchmarks/tabular.py --threads 1 --splits 5 --datasets diamonds
cps1988_wages hotel_rates food_delivery_time computer_prices ames_housing saratoga_houses
islr_wage diabetes friedman1``, bundled regression checkpoint, 2-core CPU shared with another
job, 1,042 s): mean nRMSE over the 10 sets PFN 0.542, Ridge 0.565, RF 0.526, HGB 0.487, kNN
0.678; mean standardised NLL PFN 0.482 (best), HGB 0.566, RF 0.657, Ridge 0.798, kNN 0.998;
lowest NLL on 6 sets PFN, 4 HGB (friedman1, computer_prices, food_delivery_time,
hotel_rates); lowest nRMSE on 7 sets HGB, 2 PFN (cps1988_wages, islr_wage), 1 Ridge. On the
8 tabular_more sets alone: nRMSE PFN 0.523, HGB 0.462; NLL PFN 0.391, HGB 0.503. So the
PFNRegressor has the best NLL but an nRMSE about 0.06 worse than HGB's, mostly on the large
tree-friendly sets (diamonds 0.298 against 0.183, food_delivery_time 0.557 against 0.326).
"""

from __future__ import annotations

import argparse
import io
import math
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
    make_friedman1,
)
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

import pfnkit
from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.estimators.calibration import expected_calibration_error
from pfnkit.tuning import FineTune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _large_data_sets import MORE_REGRESSION, REG, more_sets  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "keel_dev"
DEFAULT_MORE = DEFAULT_DATA.parent / "tabular_more"
TRAIN_CAP = 3000
TEST_CAP = 5000
SPEED_RUNS = 5
MODELS = ("pfn", "linear", "rf", "hgb", "knn")
ALIASES = {"lr": "linear", "logreg": "linear", "ridge": "linear", "pfnclassifier": "pfn"}
CLF_NAMES = {"pfn": "PFN", "linear": "LogReg", "rf": "RF", "hgb": "HGB", "knn": "kNN"}
REG_NAMES = {
    "pfn": "PFN",
    "pfn-unbounded": "PFN, unbounded mean",
    "linear": "Ridge",
    "rf": "RF",
    "hgb": "HGB",
    "knn": "kNN",
}
SKLEARN_CLF: dict[str, Callable[..., Any]] = {
    "sk-breast_cancer": load_breast_cancer,
    "sk-wine": load_wine,
    "sk-iris": load_iris,
    "sk-digits": load_digits,
}
QUICK_CLF = ("breast", "sk-iris")  # categorical strings + binary, numeric + multiclass
QUICK_REG = ("diabetes",)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ data


def read_keel(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """X (numeric columns float, others object with stripped strings) and y (str labels)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and ln[0] != "@"]
    raw = pd.read_csv(io.StringIO("\n".join(lines)), header=None, dtype=str, keep_default_na=False)
    raw = raw.apply(lambda s: s.str.strip()).replace({"": np.nan, "?": np.nan})
    raw = raw[raw.iloc[:, -1].notna()]
    y = raw.iloc[:, -1].to_numpy(dtype=object).astype(str)
    cols = {}
    for i, c in enumerate(raw.columns[:-1]):
        s = raw[c]
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum():
            cols[f"x{i}"] = num.astype(float)
        else:
            cols[f"x{i}"] = s.astype(object)
    X = pd.DataFrame(cols).reset_index(drop=True)
    return X, y


def load_sklearn(fn: Callable[..., Any]) -> tuple[pd.DataFrame, np.ndarray]:
    bunch = fn(as_frame=True)
    return bunch.data.astype(float), bunch.target.to_numpy()


def drop_rare_classes(X: pd.DataFrame, y: np.ndarray, name: str) -> tuple[pd.DataFrame, Any]:
    """Classes with fewer than 2 rows cannot be in both halves of a stratified split."""
    labels, counts = np.unique(y, return_counts=True)
    rare = labels[counts < 2]
    if rare.size:
        log(f"note: {name}: dropping class(es) with a single row: {list(rare)}")
        keep = ~np.isin(y, rare)
        X, y = X[keep].reset_index(drop=True), y[keep]
    return X, y


def classification_datasets(data_dir: Path) -> dict[str, Callable[[], tuple]]:
    loaders: dict[str, Callable[[], tuple]] = {}
    if data_dir.is_dir() and any(data_dir.glob("*.dat")):
        for path in sorted(data_dir.glob("*.dat")):
            loaders[path.stem] = lambda p=path: read_keel(p)
    else:
        log(f"note: KEEL data not found at {data_dir}; skipping the KEEL data sets (--data DIR)")
    for name, fn in SKLEARN_CLF.items():
        loaders[name] = lambda fn=fn: load_sklearn(fn)
    return loaders


def categorical_as_object(table: tuple[pd.DataFrame, np.ndarray]) -> tuple:
    """Non-numeric columns as object (pandas 3 reads strings as ``str``), as read_keel does."""
    X, y = table
    cat = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    return X.astype({c: object for c in cat}), y


def regression_datasets(more_dir: Path) -> dict[str, Callable[[], tuple]]:
    def diabetes() -> tuple:
        d = load_diabetes(as_frame=True)
        return d.data.astype(float), d.target.to_numpy(dtype=float)

    def friedman1() -> tuple:
        x, y = make_friedman1(n_samples=500, noise=1.0, random_state=0)
        return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]), y

    loaders: dict[str, Callable[[], tuple]] = {"diabetes": diabetes, "friedman1": friedman1}
    if not more_dir.is_dir():
        log(f"note: {more_dir} not found; skipping its regression sets (--more-data DIR)")
        return loaders
    for d in more_sets(more_dir):
        if d.task == REG:
            loaders[d.name] = lambda d=d: categorical_as_object(d.load())
    missing = sorted(MORE_REGRESSION - set(loaders))
    if missing:
        log(f"note: {more_dir} lacks the regression set(s) {missing}; skipping them")
    return loaders


def _cap(X: Any, y: np.ndarray, cap: int, stratify: bool, seed: int) -> tuple:
    """At most ``cap`` rows of (X, y), stratified where every class has 2 rows or more."""
    if len(y) <= cap:
        return X, y
    strat = y if stratify and np.unique(y, return_counts=True)[1].min() >= 2 else None
    X, _, y, _ = train_test_split(X, y, train_size=cap, stratify=strat, random_state=seed)
    return X, y


def split(X: pd.DataFrame, y: np.ndarray, seed: int, stratify: bool) -> tuple:
    strat = y if stratify else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=strat, random_state=seed)
    Xtr, ytr = _cap(Xtr, ytr, TRAIN_CAP, stratify, seed)
    Xte, yte = _cap(Xte, yte, TEST_CAP, stratify, seed)
    return Xtr, Xte, ytr, yte


# ---------------------------------------------------------------------------------- models


def preprocessor(scale: bool) -> list:
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    ct = ColumnTransformer(
        [
            ("cat", categorical, make_column_selector(dtype_include=object)),
            ("num", SimpleImputer(), make_column_selector(dtype_exclude=object)),
        ]
    )
    return [ct, StandardScaler()] if scale else [ct]


def pfn_columns(checkpoints: list[str]) -> dict[str, tuple[str, str]]:
    """Model key -> (column name, checkpoint) of the PFNClassifier(s): "pfn" alone, or
    "pfn", "pfn2", ... named by the checkpoint's file stem (its path if stems repeat)."""
    if len(checkpoints) == 1:
        return {"pfn": ("PFN", checkpoints[0])}
    stems = [Path(c).stem for c in checkpoints]
    labels = stems if len(set(stems)) == len(stems) else list(checkpoints)
    return {
        "pfn" if i == 0 else f"pfn{i + 1}": (f"PFN {label}", c)
        for i, (label, c) in enumerate(zip(labels, checkpoints, strict=True))
    }


def fine_tune_option(seconds: float | None, lr: float | None) -> Any:
    """The PFNs' ``fine_tune=`` value for --fine-tune / --fine-tune-lr (False: off)."""
    if seconds is None:
        return False
    return FineTune(time_budget=seconds, **({} if lr is None else {"lr": lr}))


def pfn_options(n_estimators: int | None, append_original: bool = False) -> dict[str, Any]:
    """The PFNs' keyword arguments for --n-estimators and --append-original (none given:
    their defaults); parse_args stores them as ``args.pfn_options``."""
    options: dict[str, Any] = {} if n_estimators is None else {"n_estimators": n_estimators}
    if append_original:
        options["append_original"] = True
    return options


def make_classifier(
    key: str,
    seed: int,
    checkpoints: dict[str, str],
    temperature: Any = "auto",
    fine_tune: Any = False,
    options: dict[str, Any] | None = None,
) -> Any:
    """A classifier by model key; ``options``: further PFNClassifier keyword arguments."""
    if key in checkpoints:
        return PFNClassifier(
            checkpoint=checkpoints[key],
            random_state=seed,
            softmax_temperature=temperature,
            fine_tune=fine_tune,
            **(options or {}),
        )
    est = {
        "linear": lambda: LogisticRegression(max_iter=1000),
        "rf": lambda: RandomForestClassifier(random_state=seed),
        "hgb": lambda: HistGradientBoostingClassifier(random_state=seed),
        "knn": lambda: KNeighborsClassifier(),
    }[key]()
    return make_pipeline(*preprocessor(scale=key in ("linear", "knn")), est)


def make_regressor(
    key: str,
    seed: int,
    checkpoint: str,
    fine_tune: Any = False,
    options: dict[str, Any] | None = None,
) -> Any:
    """A regressor by model key; ``options``: further PFNRegressor keyword arguments."""
    if key == "pfn":
        return PFNRegressor(
            checkpoint=checkpoint,
            random_state=seed,
            fine_tune=fine_tune,
            **(options or {}),
        )
    est = {
        "linear": lambda: Ridge(),
        "rf": lambda: RandomForestRegressor(random_state=seed),
        "hgb": lambda: HistGradientBoostingRegressor(random_state=seed),
        "knn": lambda: KNeighborsRegressor(),
    }[key]()
    return make_pipeline(*preprocessor(scale=key in ("linear", "knn")), est)


def unbounded_mean(est: PFNRegressor, X: Any) -> np.ndarray:
    """The mean of a fitted PFNRegressor's predictive distribution without its
    target_bounds (from the same members: no second fit)."""
    logp, dist = est._distribution(X)
    return est._to_y(dist.mean(logp).numpy())


def gaussian_nll(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return 0.5 * (np.log(2 * math.pi * var) + (y - mean) ** 2 / var)


def regression_nll(est: Any, Xtr: Any, ytr: np.ndarray, Xte: Any, yte: np.ndarray, mean: Any):
    """Per-row NLL of a fitted baseline pipeline (see the module docstring)."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    # out-of-fold residuals: in-sample ones are far too optimistic for flexible models
    oof = cross_val_predict(clone(est), Xtr, ytr, cv=5)
    resid_var = float(np.mean((ytr - oof) ** 2))
    var = np.full(len(yte), resid_var)
    last = est[-1]
    if isinstance(last, RandomForestRegressor):
        xt = est[:-1].transform(Xte)
        per_tree = np.stack([tree.predict(np.asarray(xt)) for tree in last.estimators_])
        var = var + per_tree.var(axis=0)
    var = np.maximum(var, 1e-6 * float(np.var(ytr)) + 1e-300)
    return gaussian_nll(yte, mean, var)


# --------------------------------------------------------------------------------- metrics


def roc_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    if len(classes) == 2:
        yb = y == classes[1]
        return float(roc_auc_score(yb, proba[:, 1])) if 0 < yb.sum() < len(y) else math.nan
    if np.isin(classes, y).all():
        return float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    # a class missing from this test half: one-vs-rest macro over the classes present
    scores = [
        roc_auc_score(y == c, proba[:, i])
        for i, c in enumerate(classes)
        if 0 < (y == c).sum() < len(y)
    ]
    return float(np.mean(scores)) if scores else math.nan


class WarningCounter:
    """Counts PFN UserWarnings per kind and data set; everything else is dropped."""

    KINDS = {"training rows": "rows", "features but the checkpoint": "features"}

    def __init__(self) -> None:
        self.hits: dict[str, dict[str, int]] = {"rows": {}, "features": {}, "other": {}}

    def add(self, dataset: str, caught: list) -> None:
        for w in caught:
            if not issubclass(w.category, UserWarning):
                continue
            msg = str(w.message)
            kind = next((k for s, k in self.KINDS.items() if s in msg), "other")
            self.hits[kind][dataset] = self.hits[kind].get(dataset, 0) + 1

    def lines(self) -> list[str]:
        what = {
            "rows": "more training rows than the checkpoint's context (each member subsamples)",
            "features": "more features than the checkpoint reads (random feature subsets)",
            "other": "other UserWarnings",
        }
        out = []
        for kind, per in self.hits.items():
            if per:
                sets = ", ".join(f"{d} ({n})" for d, n in per.items())
                out.append(f"PFN warnings, {what[kind]}: {sets}")
        return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float, list]:
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    return out, elapsed, list(caught)


# ---------------------------------------------------------------------------------- runs


def run_classification(name: str, loader: Callable, args: argparse.Namespace, counter, failures):
    X, y = loader()
    X, y = drop_rare_classes(X, y, name)
    n_cat = sum(dt == np.dtype(object) for dt in X.dtypes)
    log(
        f"[clf] {name}: {len(y)} rows, {X.shape[1]} features ({n_cat} categorical), "
        f"{len(np.unique(y))} classes"
    )
    records = []
    for seed in range(args.splits):
        Xtr, Xte, ytr, yte = split(X, y, seed, stratify=True)
        for key in args.clf_models:
            est = make_classifier(
                key,
                seed,
                args.clf_checkpoints,
                args.softmax_temperature,
                args.fine_tune_option,
                args.clf_options,
            )

            def fit_predict(est=est, Xtr=Xtr, ytr=ytr, Xte=Xte):
                return est.fit(Xtr, ytr).predict_proba(Xte)

            try:
                proba, elapsed, caught = timed(fit_predict)
            except Exception as exc:  # a benchmark reports, then moves on
                failures.append(f"{name} / {args.clf_names[key]} / split {seed}: {exc!r}")
                log(traceback.format_exc())
                continue
            if key in args.clf_checkpoints:
                counter.add(name if key == "pfn" else f"{name} ({args.clf_names[key]})", caught)
            classes = est.classes_
            pred = classes[np.argmax(proba, axis=1)]
            records.append(
                {
                    "dataset": name,
                    "model": key,
                    "seed": seed,
                    "auc": roc_auc(yte, proba, classes),
                    "acc": accuracy_score(yte, pred),
                    "logloss": log_loss(yte, proba, labels=classes),
                    "ece": expected_calibration_error(yte, proba, classes=classes),
                    "time": elapsed,
                }
            )
        done = [r for r in records if r["seed"] == seed]
        log(
            f"    split {seed}: "
            + "  ".join(
                f"{args.clf_names[r['model']]} {r['auc']:.3f} ({r['time']:.1f}s)" for r in done
            )
        )
    return records


def run_regression(
    name: str, loader: Callable, args: argparse.Namespace, counter: WarningCounter, failures
):
    X, y = loader()
    n_cat = sum(dt == np.dtype(object) for dt in X.dtypes)
    n_nan = int(X.isna().to_numpy().sum())
    log(
        f"[reg] {name}: {len(y)} rows, {X.shape[1]} features ({n_cat} categorical), "
        f"{n_nan} missing cells"
    )
    records = []
    for seed in range(args.splits):
        Xtr, Xte, ytr, yte = split(X, y, seed, stratify=False)
        for key in args.models:
            est = make_regressor(
                key, seed, args.reg_checkpoint, args.fine_tune_option, args.pfn_options
            )

            def fit_predict(est=est, Xtr=Xtr, ytr=ytr, Xte=Xte):
                return est.fit(Xtr, ytr).predict(Xte)

            try:
                mean, elapsed, caught = timed(fit_predict)
                if key == "pfn":
                    counter.add(f"{name} (PFNRegressor)", caught)
                    nll, _, _ = timed(lambda est=est, Xte=Xte, yte=yte: est.nll(Xte, yte))
                else:
                    nll, _, _ = timed(
                        lambda est=est, Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte, mean=mean: (
                            regression_nll(est, Xtr, ytr, Xte, yte, mean)
                        )
                    )
            except Exception as exc:
                failures.append(f"{name} / {REG_NAMES[key]} / split {seed}: {exc!r}")
                log(traceback.format_exc())
                continue
            sd = float(np.std(yte))
            means = {key: mean}
            if key == "pfn" and args.unbounded_mean:  # same fit: the plain predictive mean
                means["pfn-unbounded"] = unbounded_mean(est, Xte)
            for model, pred in means.items():
                rmse = float(np.sqrt(np.mean((yte - pred) ** 2)))
                records.append(
                    {
                        "dataset": name,
                        "model": model,
                        "seed": seed,
                        "n_train": len(ytr),
                        "n_test": len(yte),
                        "rmse": rmse,
                        "nrmse": rmse / sd,
                        "nll": float(np.mean(nll)),
                        "nll_std": float(np.mean(nll)) - math.log(sd),
                        "time": elapsed,
                    }
                )
        done = [r for r in records if r["seed"] == seed]
        log(
            f"    split {seed}: "
            + "  ".join(
                f"{REG_NAMES[r['model']]} nrmse {r['nrmse']:.3f} nll {r['nll']:.3f}" for r in done
            )
        )
    return records


def speed_line(args: argparse.Namespace) -> str | None:
    keys = [k for k in (*args.clf_checkpoints, "hgb") if k in args.clf_models]
    if not keys:
        return None
    x, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    X = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    Xtr, Xte, ytr = X.iloc[:1000], X.iloc[1000:], y[:1000]
    parts = []
    for key in keys:
        times = []
        for run in range(SPEED_RUNS):
            if key in args.clf_checkpoints:
                est = PFNClassifier(
                    checkpoint=args.clf_checkpoints[key],
                    random_state=run,
                    **args.clf_options,
                )
            else:
                est = HistGradientBoostingClassifier(random_state=run)
            _, elapsed, _ = timed(lambda est=est: est.fit(Xtr, ytr).predict_proba(Xte))
            times.append(elapsed)
        parts.append(f"{args.clf_names[key]} {np.median(times):.3f} s")
    return (
        "speed (make_classification 1,000 train / 1,000 test rows, 20 features, binary; "
        f"median fit + predict_proba of {SPEED_RUNS} runs, {args.threads} thread(s)): "
        + ", ".join(parts)
    )


def warm_up(args: argparse.Namespace, clf: bool, reg: bool) -> None:
    """Load the checkpoints (and torch) once, so the first split is not charged for it."""
    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _warm_up(args, x, y, clf, reg)


def _warm_up(args: argparse.Namespace, x: np.ndarray, y: np.ndarray, clf: bool, reg: bool) -> None:
    for checkpoint in args.clf_checkpoints.values() if clf else ():
        PFNClassifier(checkpoint=checkpoint, n_estimators=1).fit(x, y).predict_proba(x)
    if reg:
        PFNRegressor(checkpoint=args.reg_checkpoint, n_estimators=1).fit(x[:, :3], x[:, 3]).nll(
            x[:, :3], x[:, 3]
        )


# -------------------------------------------------------------------------------- tables


def md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    """align: one of "l" / "r" per column."""
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(seps) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def classification_tables(df: pd.DataFrame, models: list[str], clf_names: dict) -> list[str]:
    auc = df.groupby(["dataset", "model"], sort=False)["auc"].mean().unstack("model")
    auc = auc.reindex(columns=[m for m in models if m in auc.columns])
    names = [clf_names[m] for m in auc.columns]
    rows = []
    for ds, r in auc.iterrows():
        best = np.nanmax(r.to_numpy()) if r.notna().any() else math.nan
        cells = [f"**{fmt(v)}**" if len(r) > 1 and v == best else fmt(v) for v in r]
        rows.append([str(ds), *cells])
    complete = auc.dropna()  # rank over data sets where every model has a score
    ranks = complete.rank(axis=1, ascending=False).mean()
    rows.append(["**mean**", *[fmt(auc[m].mean()) for m in auc.columns]])
    rows.append([f"**mean rank** ({len(complete)} sets)", *[fmt(ranks[m], 2) for m in auc.columns]])
    t1 = "ROC AUC (mean over splits; best per data set in bold; rank 1 = best)\n\n" + md_table(
        ["data set", *names], rows, "l" + "r" * len(names)
    )
    cal = df.groupby(["dataset", "model"], sort=False)[["logloss", "ece"]].mean()
    crows = []
    for ds in auc.index:
        cells = []
        for metric in ("logloss", "ece"):
            vals = [cal.loc[(ds, m), metric] if (ds, m) in cal.index else math.nan for m in auc]
            best = np.nanmin(vals) if np.isfinite(vals).any() else math.nan
            cells += [f"**{fmt(v)}**" if len(vals) > 1 and v == best else fmt(v) for v in vals]
        crows.append([str(ds), *cells])
    means = cal.groupby("model")[["logloss", "ece"]].mean()
    crows.append(
        ["**mean**", *[fmt(means.loc[m, k]) for k in ("logloss", "ece") for m in auc.columns]]
    )
    t_cal = (
        "Log loss and expected calibration error (ECE, 15 bins of the top probability; mean "
        "over splits; lowest per data set in bold)\n\n"
        + md_table(
            ["data set", *[f"{n} {k}" for k in ("log loss", "ECE") for n in names]],
            crows,
            "l" + "r" * 2 * len(names),
        )
    )
    per_ds = df.groupby(["model", "dataset"])[["auc", "acc", "logloss", "ece"]].mean()
    srows = []
    for m in auc.columns:
        d = per_ds.loc[m]
        srows.append(
            [
                clf_names[m],
                str(len(d)),
                fmt(d["auc"].mean()),
                fmt(d["acc"].mean()),
                fmt(d["logloss"].mean()),
                fmt(d["ece"].mean()),
                fmt(df.loc[df["model"] == m, "time"].median(), 3),
            ]
        )
    t2 = (
        "Classification summary (means over data sets of the per-data-set means; time: median "
        "over all data set x split runs)\n\n"
        + md_table(
            ["model", "data sets", "ROC AUC", "accuracy", "log loss", "ECE", "fit+predict (s)"],
            srows,
            "lrrrrrr",
        )
    )
    return [t1, t_cal, t2]


def regression_tables(df: pd.DataFrame, models: list[str]) -> list[str]:
    agg = df.groupby(["dataset", "model"], sort=False).agg(
        rmse=("rmse", "mean"),
        nrmse=("nrmse", "mean"),
        nll=("nll", "mean"),
        nll_std=("nll_std", "mean"),
        time=("time", "median"),
        n_train=("n_train", "max"),
        n_test=("n_test", "max"),
    )
    sets = list(df["dataset"].unique())
    models = [m for m in models if m in set(df["model"])]
    names = [REG_NAMES[m] for m in models]
    wide = {k: agg[k].unstack("model").reindex(index=sets, columns=models) for k in agg.columns}
    rows = []
    for ds in sets:
        cells = []
        for metric in ("nrmse", "nll"):
            vals = wide[metric].loc[ds].to_numpy(dtype=float)
            best = np.nanmin(vals) if np.isfinite(vals).any() else math.nan
            cells += [f"**{fmt(v)}**" if len(vals) > 1 and v == best else fmt(v) for v in vals]
        n = f"{wide['n_train'].loc[ds].max():.0f} / {wide['n_test'].loc[ds].max():.0f}"
        rows.append([ds, n, *cells])
    complete = wide["nrmse"].dropna().index.intersection(wide["nll"].dropna().index)
    means = [fmt(wide[k].loc[complete, m].mean()) for k in ("nrmse", "nll_std") for m in models]
    rows.append([f"**mean** ({len(complete)} sets)", "", *means])
    wins = [
        str(int((wide[k].loc[complete].idxmin(axis=1) == m).sum()))
        for k in ("nrmse", "nll")
        for m in models
    ]
    rows.append(["**best on** (sets)", "", *wins])
    t1 = (
        "Regression: nRMSE (RMSE / sd of the test targets) and NLL (nats per test point, in the "
        "target's units; baselines Gaussian, see the script docstring); mean over splits, "
        "lowest per data set in bold. The mean row's NLL is that of the standardised target "
        "(NLL - log sd(y_test)), comparable across sets\n\n"
        + md_table(
            ["data set", "train / test", *[f"{n} {k}" for k in ("nRMSE", "NLL") for n in names]],
            rows,
            "lr" + "r" * 2 * len(names),
        )
    )
    long_rows = []
    for ds in sets:
        for m in models:
            if (ds, m) in agg.index:
                a = agg.loc[(ds, m)]
                long_rows.append(
                    [
                        ds,
                        REG_NAMES[m],
                        fmt(a["rmse"], max(0, 3 - math.floor(math.log10(abs(a["rmse"]) + 1e-300)))),
                        fmt(a["nrmse"]),
                        fmt(a["nll"]),
                        fmt(a["time"], 3),
                    ]
                )
    t2 = (
        "Regression, per data set and model (mean over splits; time: median fit+predict)\n\n"
        + md_table(
            ["data set", "model", "RMSE", "nRMSE", "NLL", "fit+predict (s)"], long_rows, "llrrrr"
        )
    )
    return [t1, t2]


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="PFNClassifier / PFNRegressor vs scikit-learn baselines on tabular data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="KEEL *.dat directory")
    p.add_argument(
        "--more-data",
        type=Path,
        default=DEFAULT_MORE,
        help="tabular_more/ directory (its regression NAME.csv tables)",
    )
    p.add_argument("--datasets", nargs="+", help="data set names (KEEL stems, sk-*, regression)")
    p.add_argument("--splits", type=int, default=5, help="random 50/50 splits per data set")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenMP/BLAS threads")
    p.add_argument(
        "--checkpoint",
        nargs="+",
        default=["default"],
        help="PFNClassifier checkpoint(s); several: one PFN column each",
    )
    p.add_argument("--reg-checkpoint", default="default", help="PFNRegressor checkpoint")
    p.add_argument(
        "--softmax-temperature",
        default="auto",
        help="PFNClassifier softmax_temperature: 'auto' (card value, else 0.9), 'cv' or a number",
    )
    p.add_argument(
        "--fine-tune",
        type=float,
        metavar="SECONDS",
        help="PFNs fine-tune on each training half first: FineTune(time_budget=SECONDS)",
    )
    p.add_argument("--fine-tune-lr", type=float, help="with --fine-tune: FineTune(lr=...)")
    p.add_argument(
        "--n-estimators",
        type=int,
        help="the PFNs' n_estimators (ensemble members; default: the estimators' own)",
    )
    p.add_argument(
        "--append-original",
        action="store_true",
        help="the PFNs get append_original=True (numeric columns also as given)",
    )
    p.add_argument(
        "--arithmetic-average",
        action="store_true",
        help="PFNClassifier gets average_before_softmax=False (members averaged after softmax)",
    )
    p.add_argument(
        "--unbounded-mean",
        action="store_true",
        help="regression: also a column 'PFN, unbounded mean' (PFNRegressor's predictive "
        "mean without target_bounds, from the same fit)",
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"subset of {MODELS}")
    p.add_argument("--quick", action="store_true", help="2 data sets (+ diabetes), 1 split")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    p.add_argument("--records", type=Path, help="also write every run's metrics to this CSV")
    args = p.parse_args(argv)
    models = [ALIASES.get(m.lower(), m.lower()) for m in args.models]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    args.models = [m for m in MODELS if m in models]
    pfns = pfn_columns(args.checkpoint) if "pfn" in args.models else {}
    args.clf_models = [k for m in args.models for k in (pfns if m == "pfn" else [m])]
    args.clf_names = {**CLF_NAMES, **{k: name for k, (name, _) in pfns.items()}}
    args.clf_checkpoints = {k: c for k, (_, c) in pfns.items()}
    if args.splits < 1 or args.threads < 1:
        p.error("--splits and --threads must be at least 1")
    if args.softmax_temperature not in ("auto", "cv"):
        try:
            args.softmax_temperature = float(args.softmax_temperature)
        except ValueError:
            p.error(
                f"--softmax-temperature must be 'auto', 'cv' or a number > 0. Got "
                f"{args.softmax_temperature!r}"
            )
        if not args.softmax_temperature > 0:
            p.error(f"--softmax-temperature must be > 0. Got {args.softmax_temperature}")
    if args.n_estimators is not None and args.n_estimators < 1:
        p.error(f"--n-estimators must be at least 1. Got {args.n_estimators}")
    if args.fine_tune is not None and not args.fine_tune > 0:
        p.error(f"--fine-tune must be a number of seconds > 0. Got {args.fine_tune}")
    if args.fine_tune_lr is not None and args.fine_tune is None:
        p.error("--fine-tune-lr needs --fine-tune SECONDS")
    if args.fine_tune_lr is not None and not args.fine_tune_lr > 0:
        p.error(f"--fine-tune-lr must be > 0. Got {args.fine_tune_lr}")
    args.fine_tune_option = fine_tune_option(args.fine_tune, args.fine_tune_lr)
    args.pfn_options = pfn_options(args.n_estimators, args.append_original)
    args.clf_options = dict(args.pfn_options)  # the classifier's: these and its own
    if args.arithmetic_average:
        args.clf_options["average_before_softmax"] = False
    if args.quick:
        args.splits = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    clf_sets = classification_datasets(args.data)
    reg_sets = regression_datasets(args.more_data)
    if args.datasets:
        unknown = [d for d in args.datasets if d not in clf_sets and d not in reg_sets]
        if unknown:
            log(f"error: unknown data set(s) {unknown}; available: {[*clf_sets, *reg_sets]}")
            return 2
        clf_sets = {k: v for k, v in clf_sets.items() if k in args.datasets}
        reg_sets = {k: v for k, v in reg_sets.items() if k in args.datasets}
    elif args.quick:
        picks = [d for d in QUICK_CLF if d in clf_sets] or list(clf_sets)
        clf_sets = {k: clf_sets[k] for k in picks[:2]}
        reg_sets = {k: reg_sets[k] for k in QUICK_REG}

    header = (
        f"pfnkit {pfnkit.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}; checkpoint={', '.join(args.checkpoint)!r}, "
        f"reg-checkpoint={args.reg_checkpoint!r}, softmax_temperature="
        f"{args.softmax_temperature!r}, fine_tune={args.fine_tune_option!r}, "
        f"n_estimators={args.n_estimators or 'default'}"
        + (", append_original=True" if args.append_original else "")
        + (", classifier average_before_softmax=False" if args.arithmetic_average else "")
        + "; "
        f"{args.splits} split(s) of 50/50, training "
        f"half capped at {TRAIN_CAP} rows, test half at {TEST_CAP}; {args.threads} thread(s); "
        "models: " + ", ".join(args.models)
    )
    log(header)
    counter = WarningCounter()
    failures: list[str] = []
    t_start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        if "pfn" in args.models:
            try:
                warm_up(args, clf=bool(clf_sets), reg=bool(reg_sets))
            except Exception as exc:
                log(f"error: cannot run the PFN ({exc}); pass --checkpoint / --reg-checkpoint")
                return 2
        clf_records: list[dict] = []
        for name, loader in clf_sets.items():
            clf_records += run_classification(name, loader, args, counter, failures)
        reg_records: list[dict] = []
        for name, loader in reg_sets.items():
            reg_records += run_regression(name, loader, args, counter, failures)
        speed = speed_line(args) if clf_sets else None

    sections = [header]
    if clf_records:
        sections += classification_tables(
            pd.DataFrame(clf_records), args.clf_models, args.clf_names
        )
    if reg_records:
        # "PFN, unbounded mean" (--unbounded-mean) next to the PFN
        reg_models = [
            k for m in args.models for k in ((m, "pfn-unbounded") if m == "pfn" else (m,))
        ]
        sections += regression_tables(pd.DataFrame(reg_records), reg_models)
    if speed:
        sections.append(speed)
    notes = counter.lines() + [f"failed: {f}" for f in failures]
    if notes:
        sections.append("\n".join(f"- {n}" for n in notes))
    sections.append(f"total wall time: {time.perf_counter() - t_start:.0f} s")
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log(f"wrote {args.out}")
    if args.records:
        args.records.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([*clf_records, *reg_records]).to_csv(args.records, index=False)
        log(f"wrote {args.records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
