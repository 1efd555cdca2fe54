"""Large-table benchmark: PFN context strategies against default scikit-learn baselines.

Data (``benchmarks/_large_data_sets.py``; read in place from ``--data-root``, default
``<repo>/../shared/data``; a missing folder is skipped with a note): the KEEL dev tables with
at least 1,000 rows, every table in ``tabular_more/`` (11 classification, 8 regression) and
``make_classification`` with 5k / 20k / 100k rows and 20 / 100 features (``mc-5k-20``, ...).

Methods (``--methods``, comma-separated; default all):
  * pfn-auto           PFNClassifier / PFNRegressor at their defaults (context="auto");
  * pfn-subsample      context="subsample";
  * pfn-full           context="full" (skipped, with a note, above 3,000 training rows);
  * pfn-knn            context="knn" (exact kNN, default k);
  * pfn-knn-fast       context="knn-fast" (kNN in graph mode, the fast variant);
  * pfn-knn-shared     context="knn-shared" (LoCalPFN's clustered shared contexts);
  * pfn-mixed-exact    MixedContext((SubsampleContext(), KNNContext())): subsample + exact kNN;
  * pfn-mixed-graph    MixedContext((SubsampleContext(), KNNContext(mode="graph")));
  * pfn-tuned          context="tuned" (learned context tokens; ``context_.report`` saved);
  * pfn-subsample-64   SubsampleContext(max_rows=64): the same context length as pfn-tuned;
  * pfn-finetune       fine_tune=FineTune(time_budget=60) (``fine_tune_report_`` saved);
  * pfn-subsample-pca  context="subsample", feature_reduction="pca" (only on > 64 features);
  * hgb                HistGradientBoosting (categoricals ordinal-encoded, NaN native);
  * rf                 RandomForest(n_jobs=1) (categoricals ordinal-encoded, NaN imputed);
  * linear             LogisticRegression(max_iter=1000) / Ridge(), one-hot categoricals,
                       imputed and standardised numerics (aliases: logreg, ridge).
  Every PFN gets ``n_estimators=8, random_state=seed`` and the pandas DataFrame as is
  (string columns, NaN); the baselines use their default settings.

Protocol, per data set and seed (``--seeds N``: seeds 0..N-1): a test set of ``--test-rows``
rows (half the table if that is fewer; stratified for classification, shuffled for
regression), then training sets of ``--train-rows`` sizes from the remaining rows ("all" =
every remaining row, capped by ``--max-train``; larger sizes are dropped). The training sets
are prefixes of one (class-stratified) random order, so they are nested. Every method sees
the same split.

Metrics: classification ROC AUC (binary: probability of the second class; multiclass:
one-vs-rest macro over the classes present in the test set), log loss (all classes,
probabilities clipped at 1e-15) and accuracy; regression RMSE, RMSE / std(y_test) and NLL
(nats per test row; PFN: ``est.nll``; baselines: a Gaussian around the prediction with the
5-fold out-of-fold residual variance, as in ``benchmarks/tabular.py``). Fit and predict wall
times (perf_counter) and peak memory: each fit + predict runs in a forked child process, and
the peak is the child's peak RSS (``ru_maxrss``) minus its RSS at start, read right after
predict (so the baselines' NLL cross-validation is not counted). A child that crashes or runs
past ``--timeout`` seconds is recorded as failed with the reason; the run goes on.

Results: one JSON line per run appended to ``--out`` (default runs/large_data/runs.jsonl;
--quick: runs/large_data/quick.jsonl); ``--resume`` skips the runs already there (delete a
failed line to retry it); the tables use the latest line per run. Markdown tables go to
stdout, progress to stderr: (a) ROC AUC per classification data set and training size,
methods side by side, best in bold; (b) a classification summary over the data sets with at
least 1,000 rows; (c) regression RMSE and NLL per data set and training size, and a summary
with the mean normalised RMSE; (d) fit / predict time and peak memory on the mc-* sets.

``--speed`` measures the two speed targets instead: (1) fit + predict_proba of the default
PFNClassifier next to HistGradientBoosting on make_classification with ``--speed-rows``
(10,000) training and as many test rows, 20 features, median of ``--repeats``; (2) the
default PFNClassifier (and HGB) at 25k, 50k and 100k training rows (2.5x, 5x, 10x
``--speed-rows``) and 2,000 test rows (scaled alike): times, peak memory and MiB per 1,000
training rows, to see whether memory grows linearly in rows.

Run from the repository root::

    python benchmarks/large_data.py --quick                      # smoke test (~15 s)
    python benchmarks/large_data.py --resume --plot runs/large_data/auc.png   # the full run
    python benchmarks/large_data.py --datasets telco_churn,diamonds --methods pfn-auto,hgb
    python benchmarks/large_data.py --report-only                # tables from --out
    python benchmarks/large_data.py --speed                      # the two speed targets
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from _large_data_sets import CLF, MC_PREFIX, MIN_ROWS, REG, DataSet, available, load, make_mc
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from tabular import fmt, md_table, regression_nll, roc_auc
from threadpoolctl import threadpool_limits

import pfnkit
from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.tuning import FineTune, KNNContext, MixedContext, SubsampleContext

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path("runs/large_data/runs.jsonl")
QUICK_OUT = Path("runs/large_data/quick.jsonl")
FULL_MAX_ROWS = 3000  # pfn-full above this many training rows: too much memory and time
PCA_MIN_FEATURES = 65  # pfn-subsample-pca only on tables wider than the checkpoint (64)
PFN_METHODS: dict[str, dict[str, Any]] = {
    "pfn-auto": {},
    "pfn-subsample": {"context": "subsample"},
    "pfn-full": {"context": "full"},
    "pfn-knn": {"context": "knn"},
    "pfn-knn-fast": {"context": "knn-fast"},
    "pfn-knn-shared": {"context": "knn-shared"},
    "pfn-mixed-exact": {"context": MixedContext((SubsampleContext(), KNNContext()))},
    "pfn-mixed-graph": {"context": MixedContext((SubsampleContext(), KNNContext(mode="graph")))},
    "pfn-tuned": {"context": "tuned"},
    "pfn-subsample-64": {"context": SubsampleContext(max_rows=64)},
    "pfn-finetune": {"fine_tune": FineTune(time_budget=60)},
    "pfn-subsample-pca": {"context": "subsample", "feature_reduction": "pca"},
}
BASELINES = ("hgb", "rf", "linear")
METHODS = (*PFN_METHODS, *BASELINES)
ALIASES = {"logreg": "linear", "ridge": "linear", "lr": "linear"}
LINEAR_NAME = {CLF: "logreg", REG: "ridge"}
QUICK_SETS = ("contraceptive", "saratoga_houses")  # multiclass KEEL; regression w/ categoricals
QUICK_FALLBACK = "mc-5k-20"
QUICK_METHODS = ("pfn-auto", "pfn-subsample", "hgb")
RUN_KEY = ("dataset", "method", "seed", "n_train", "n_test")
SPEED_TARGET_ROWS = 10_000
SPEED_SCALES = (2.5, 5.0, 10.0)  # target (2): 25k, 50k, 100k training rows at the default
SPEED_TEST_ROWS = 2000  # target (2) test rows at the default --speed-rows
SPEED_METHODS = ("pfn-auto", "hgb")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- models


def build(method: str, task: str, seed: int) -> Any:
    """A fresh, unfitted estimator for ``method`` (see the module docstring)."""
    if method in PFN_METHODS:
        cls = PFNClassifier if task == CLF else PFNRegressor
        return cls(n_estimators=8, random_state=seed, **PFN_METHODS[method])
    if method == "hgb":
        est: Any = (
            HistGradientBoostingClassifier if task == CLF else HistGradientBoostingRegressor
        )(random_state=seed)
    elif method == "rf":
        rf = RandomForestClassifier if task == CLF else RandomForestRegressor
        est = rf(n_jobs=1, random_state=seed)
    else:
        est = LogisticRegression(max_iter=1000) if task == CLF else Ridge()
    return make_pipeline(preprocessor(method), est)


def preprocessor(method: str) -> ColumnTransformer:
    """String columns -> ordinal (trees) or one-hot (linear); NaN imputed except for hgb."""
    if method == "hgb":  # unknown and missing categories -> NaN, which HGB handles natively
        cat: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
        num: Any = "passthrough"
    elif method == "rf":
        cat = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        )
        num = SimpleImputer()
    else:
        cat = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        num = make_pipeline(SimpleImputer(), StandardScaler())
    return ColumnTransformer(
        [
            ("cat", cat, make_column_selector(dtype_exclude="number")),
            ("num", num, make_column_selector(dtype_include="number")),
        ]
    )


def skip_reason(method: str, n_train: int, n_features: int) -> str | None:
    if method == "pfn-full" and n_train > FULL_MAX_ROWS:
        return f"more than {FULL_MAX_ROWS} training rows (memory and time)"
    if method == "pfn-subsample-pca" and n_features < PCA_MIN_FEATURES:
        return f"only {n_features} features (PCA reduction is for > 64)"
    return None


def display_name(method: str, task: str) -> str:
    return LINEAR_NAME[task] if method == "linear" else method


# ------------------------------------------------------------------------------ protocol


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    classes: np.ndarray | None  # every class of the data set (classification)


def test_split(y: np.ndarray, n_test: int, seed: int, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) row indices: a stratified (classification) or shuffled test set."""
    return train_test_split(
        np.arange(len(y)), test_size=n_test, stratify=y if task == CLF else None, random_state=seed
    )


def nested_order(y: np.ndarray, seed: int, task: str) -> np.ndarray:
    """A random order of the rows whose every prefix holds the classes in their proportions."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    if task == REG:
        return order
    key = np.empty(len(y))
    for c in np.unique(y):
        rows = order[y[order] == c]
        key[rows] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    return np.argsort(key, kind="stable")


def train_sizes(spec: list[str], n_pool: int, max_train: int) -> list[tuple[int, str]]:
    """(rows, label) per requested size that fits; "all" always runs (capped)."""
    cap = min(n_pool, max_train)
    sizes: dict[int, str] = {}
    for s in sorted(spec, key=lambda s: s == "all"):  # a number wins over "all" at equal rows
        n = cap if s == "all" else int(s)
        if n <= cap:
            sizes.setdefault(n, s)
    return sorted(sizes.items())


def splits(
    table: tuple[pd.DataFrame, np.ndarray], task: str, seed: int, args: argparse.Namespace
) -> Iterator[tuple[str, Split]]:
    """(size label, Split) per training size, all with the same test set."""
    X, y = table
    n_test = min(args.test_rows, len(y) // 2)
    pool, test = test_split(y, n_test, seed, task)
    order = pool[nested_order(y[pool], seed, task)]
    classes = np.unique(y) if task == CLF else None
    for n, label in train_sizes(args.train_rows, len(pool), args.max_train):
        rows = order[:n]
        yield label, Split(X.iloc[rows], y[rows], X.iloc[test], y[test], classes)


# ------------------------------------------------------------------------------- metrics


def classification_scores(est: Any, proba: np.ndarray, split: Split) -> dict[str, float]:
    classes = split.classes
    assert classes is not None
    full = np.zeros((len(proba), len(classes)))  # classes missing from the training rows: 0
    full[:, np.searchsorted(classes, est.classes_)] = proba
    full = np.clip(full, 1e-15, 1.0)
    full /= full.sum(axis=1, keepdims=True)
    y = split.y_test
    return {
        "auc": roc_auc(y, full, classes),
        "logloss": float(log_loss(y, full, labels=classes)),
        "acc": float(accuracy_score(y, classes[np.argmax(full, axis=1)])),
    }


def regression_scores(est: Any, mean: np.ndarray, split: Split) -> dict[str, float]:
    y = split.y_test
    if isinstance(est, PFNRegressor):
        nll = est.nll(split.X_test, y)
    else:
        nll = regression_nll(est, split.X_train, split.y_train, split.X_test, y, mean)
    rmse = float(np.sqrt(np.mean((y - mean) ** 2)))
    return {"rmse": rmse, "nrmse": rmse / float(np.std(y)), "nll": float(np.mean(nll))}


def jsonable(obj: Any) -> Any:
    """A JSON round-trip of a report dict (numpy scalars to numbers, the rest to strings)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def reports(est: Any) -> dict[str, Any]:
    out = {}
    context_report = getattr(getattr(est, "context_", None), "report", None)
    if context_report is not None:
        out["context_report"] = jsonable(context_report)
    if getattr(est, "fine_tune_report_", None) is not None:
        out["fine_tune_report"] = jsonable(est.fine_tune_report_)
    return out


# ------------------------------------------------------------------------- child process


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def limit_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def fit_and_score(method: str, task: str, seed: int, split: Split) -> dict[str, Any]:
    """Runs in the child: fit, predict, peak memory so far, then the scores."""
    start_kib = rss_kib()
    est = build(method, task, seed)
    t0 = time.perf_counter()
    est.fit(split.X_train, split.y_train)
    t1 = time.perf_counter()
    out = est.predict_proba(split.X_test) if task == CLF else est.predict(split.X_test)
    t2 = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    scores = (classification_scores if task == CLF else regression_scores)(est, out, split)
    return {
        **scores,
        "fit_s": t1 - t0,
        "predict_s": t2 - t1,
        "peak_mib": (peak_kib - start_kib) / 1024,
        **reports(est),
    }


def child_main(conn: Any, method: str, task: str, seed: int, split: Split, threads: int) -> None:
    limit_threads(threads)
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            result = {"status": "ok", **fit_and_score(method, task, seed, split)}
        except Exception as exc:  # reported by the parent, which goes on
            traceback.print_exc()
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    messages = {str(w.message)[:200] for w in caught if issubclass(w.category, UserWarning)}
    if messages:
        result["warnings"] = sorted(messages)
    conn.send(result)


def measure(
    method: str, task: str, seed: int, split: Split, threads: int, timeout: float
) -> dict[str, Any]:
    """fit + predict + scores of one method in a forked child; a failure is a result too."""
    ctx = mp.get_context("fork")  # the child shares the parent's data without copying it
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(sender, method, task, seed, split, threads))
    t0 = time.perf_counter()
    proc.start()
    sender.close()  # the child's end: recv() sees EOF when the child dies
    try:
        if receiver.poll(timeout):
            return receiver.recv()
        proc.kill()
        return {"status": "failed", "reason": f"timeout after {timeout:g} s"}
    except EOFError:
        proc.join()
        elapsed = time.perf_counter() - t0
        return {
            "status": "failed",
            "reason": f"child died (exit code {proc.exitcode}) after {elapsed:.0f} s",
        }
    finally:
        proc.join()
        receiver.close()


# ---------------------------------------------------------------------------------- runs


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def run_key(record: dict) -> tuple:
    return tuple(record[k] for k in RUN_KEY)


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def progress_line(record: dict) -> str:
    name = display_name(record["method"], record["task"])
    head = f"    {name:<18} n={record['n_train']:<6} seed {record['seed']}: "
    if record["status"] != "ok":
        return head + f"FAILED ({record['reason']})"
    score = (
        f"auc {record['auc']:.3f}"
        if record["task"] == CLF
        else f"rmse {fmt_metric(record['rmse'], 'rmse')} nll {record['nll']:.3f}"
    )
    return (
        head + f"{score}  fit {record['fit_s']:.2f}s  predict {record['predict_s']:.2f}s  "
        f"{record['peak_mib']:.0f} MiB"
    )


def run_dataset(dataset: DataSet, args: argparse.Namespace, done: set[tuple]) -> None:
    """Every (seed, training size, method) run of one data set that is not in ``done``."""
    table = load(dataset)
    n_rows, n_features = table[0].shape
    tag = "clf" if dataset.task == CLF else "reg"
    log(f"[{tag}] {dataset.name}: {n_rows} rows, {n_features} features ({dataset.source})")
    for seed in range(args.seeds):
        for label, split in splits(table, dataset.task, seed, args):
            n_train, n_test = len(split.y_train), len(split.y_test)
            for method in args.methods:
                reason = skip_reason(method, n_train, n_features)
                if reason:
                    log(f"    {method:<18} n={n_train:<6} skipped: {reason}")
                    continue
                base = {
                    "dataset": dataset.name,
                    "task": dataset.task,
                    "source": dataset.source,
                    "n_rows": n_rows,
                    "n_features": n_features,
                    "method": method,
                    "seed": seed,
                    "train": label,
                    "n_train": n_train,
                    "n_test": n_test,
                }
                if run_key(base) in done:
                    continue
                result = measure(method, dataset.task, seed, split, args.threads, args.timeout)
                record = {
                    **base,
                    **result,
                    "threads": args.threads,
                    "pfnkit": pfnkit.__version__,
                    "time": datetime.datetime.now().isoformat(timespec="seconds"),
                }
                append_record(args.out, record)
                log(progress_line(record))


# -------------------------------------------------------------------------------- tables


def latest_runs(records: list[dict], args: argparse.Namespace) -> pd.DataFrame:
    """The last record per run, for the selected data sets, methods and seeds."""
    latest = {run_key(r): r for r in records}
    df = pd.DataFrame(list(latest.values()))
    if df.empty:
        return df
    keep = (
        df["dataset"].isin(args.datasets)
        & df["method"].isin(args.methods)
        & (df["seed"] < args.seeds)
    )
    return df[keep]


def size_label(n_train: int, labels: pd.Series) -> str:
    return f"{n_train} (all)" if (labels == "all").any() else str(n_train)


def fmt_metric(v: float, metric: str) -> str:
    """RMSE in the target's units (4 significant digits or whole numbers); others 3 decimals."""
    if metric != "rmse" or not np.isfinite(v):
        return fmt(v)
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:#.4g}"


def side_by_side(df: pd.DataFrame, metric: str, higher_better: bool, title: str) -> str:
    """Rows data set x training size, columns methods: mean over seeds, best in bold."""
    ok = df[df["status"] == "ok"]
    means = (
        ok.groupby(["dataset", "n_train", "method"])[metric].mean().unstack("method")
        if not ok.empty
        else pd.DataFrame()
    )
    failed = set(
        df.loc[df["status"] != "ok", ["dataset", "n_train", "method"]].itertuples(index=False)
    )
    methods = [m for m in METHODS if m in set(df["method"])]
    task = df["task"].iloc[0]
    rows = []
    for (ds, n), grp in df.groupby(["dataset", "n_train"], sort=True):
        vals = means.loc[(ds, n)] if (ds, n) in means.index else pd.Series(dtype=float)
        vals = vals.reindex(methods)
        best = (vals.max() if higher_better else vals.min()) if vals.notna().any() else math.nan
        cells = []
        for m in methods:
            v = vals[m]
            if np.isnan(v):
                cells.append("fail" if (ds, n, m) in failed else "–")
            else:
                text = fmt_metric(v, metric)
                cells.append(f"**{text}**" if v == best and vals.notna().sum() > 1 else text)
        rows.append([str(ds), size_label(n, grp["train"]), *cells])
    header = ["data set", "train rows", *[display_name(m, task) for m in methods]]
    return f"{title}\n\n" + md_table(header, rows, "lr" + "r" * len(methods))


def mean_ranks(cells: pd.DataFrame, higher_better: bool) -> pd.Series:
    """Mean rank per method over the cells (rows); each cell ranks the methods it has."""
    return cells.rank(axis=1, ascending=not higher_better).mean()


def summary(
    df: pd.DataFrame, means: dict[str, str], ranks: dict[str, tuple[str, bool]], title: str
) -> str:
    """Per method: cells, means, median times and memory, mean ranks.

    ``means`` maps a header to a metric column; ``ranks`` a header to (column, higher is
    better). A cell is a (data set, training size); metrics are averaged over seeds first.
    """
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return f"{title}\n\n(no successful runs)"
    cell = ok.groupby(["dataset", "n_train", "method"]).mean(numeric_only=True)
    methods = [m for m in METHODS if m in set(ok["method"])]
    rank_cols = {
        name: mean_ranks(cell[col].unstack("method"), hb).reindex(methods)
        for name, (col, hb) in ranks.items()
    }
    task = df["task"].iloc[0]
    rows = []
    for m in methods:
        per = cell.xs(m, level="method")
        runs = ok[ok["method"] == m]
        rows.append(
            [
                display_name(m, task),
                str(len(per)),
                *[fmt(per[col].mean()) for col in means.values()],
                fmt(runs["fit_s"].median(), 2),
                fmt(runs["predict_s"].median(), 2),
                fmt(runs["peak_mib"].median(), 0),
                *[fmt(r[m], 2) for r in rank_cols.values()],
            ]
        )
    header = [
        "method",
        "cells",
        *means,
        "fit s (median)",
        "predict s (median)",
        "peak MiB (median)",
        *[f"mean rank ({c})" for c in ranks],
    ]
    return f"{title}\n\n" + md_table(header, rows, "l" + "r" * (len(header) - 1))


def speed_memory_table(df: pd.DataFrame) -> str:
    """Fit / predict seconds and peak MiB per training size on the mc-* sets."""
    ok = df[(df["status"] == "ok") & df["dataset"].str.startswith(MC_PREFIX)]
    cell = ok.groupby(["dataset", "method", "n_train"])[["fit_s", "predict_s", "peak_mib"]].median()
    sizes = sorted(ok["n_train"].unique())
    rows = []
    order = {m: i for i, m in enumerate(METHODS)}
    groups = sorted(
        cell.groupby(level=["dataset", "method"]), key=lambda g: (g[0][0], order[g[0][1]])
    )
    for (ds, m), per in groups:
        per = per.droplevel(["dataset", "method"])
        cells = [
            f"{fmt(per.at[n, 'fit_s'], 2)} / {fmt(per.at[n, 'predict_s'], 2)} s, "
            f"{fmt(per.at[n, 'peak_mib'], 0)} MiB"
            if n in per.index
            else "–"
            for n in sizes
        ]
        rows.append([ds, display_name(m, CLF), *cells])
    return (
        "make_classification: fit / predict seconds and peak MiB (child's peak RSS over its "
        "start) per training rows (median over seeds)\n\n"
        + md_table(["data set", "method", *map(str, sizes)], rows, "ll" + "r" * len(sizes))
    )


def failure_lines(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"]
    return [
        f"- failed: {r.dataset} / {r.method} / {r.n_train} rows / seed {r.seed}: {r.reason}"
        for r in bad.itertuples()
    ]


def report(df: pd.DataFrame) -> list[str]:
    """The markdown sections (a)-(d) for the runs in ``df``."""
    sections = []
    clf, reg = df[df["task"] == CLF], df[df["task"] == REG]
    clf_large, reg_large = clf[clf["n_rows"] >= MIN_ROWS], reg[reg["n_rows"] >= MIN_ROWS]
    if not clf.empty:
        sections.append(
            side_by_side(
                clf,
                "auc",
                True,
                "(a) ROC AUC per classification data set and training size (mean over seeds; "
                "best in bold; fail = every seed failed; – = not run)",
            )
        )
    if not clf_large.empty:
        sections.append(
            summary(
                clf_large,
                {"ROC AUC (mean)": "auc", "log loss (mean)": "logloss", "accuracy": "acc"},
                {"AUC": ("auc", True)},
                f"(b) Classification summary over the data sets with >= {MIN_ROWS} rows "
                "(a cell = data set x training size; times and memory: medians over runs; "
                "each cell ranks the methods it has, 1 = best)",
            )
        )
    if not reg.empty:
        sections.append(
            side_by_side(reg, "rmse", False, "(c) Regression RMSE (mean over seeds; best in bold)")
        )
        sections.append(
            side_by_side(
                reg, "nll", False, "(c) Regression NLL, nats per test row (mean over seeds)"
            )
        )
    if not reg_large.empty:
        sections.append(
            summary(
                reg_large,
                {"RMSE / std(y) (mean)": "nrmse", "NLL (mean)": "nll"},
                {"RMSE": ("nrmse", False), "NLL": ("nll", False)},
                "(c) Regression summary (a cell = data set x training size; NLL means mix "
                "units across data sets, the ranks do not)",
            )
        )
    if df["dataset"].str.startswith(MC_PREFIX).any():
        sections.append(speed_memory_table(df))
    failures = failure_lines(df)
    return [*sections, "\n".join(failures)] if failures else sections


def plot(df: pd.DataFrame, path: Path) -> None:
    """ROC AUC against training rows (log x): one panel per classification data set."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("note: --plot needs matplotlib (pip install matplotlib); no plot written")
        return
    ok = df[(df["status"] == "ok") & (df["task"] == CLF)]
    names = sorted(ok["dataset"].unique())
    if not names:
        log("note: no classification runs to plot")
        return
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    curves = ok.groupby(["dataset", "method", "n_train"])["auc"].mean()
    for ax, name in zip(axes.flat, names):
        for method in [m for m in METHODS if m in set(ok.loc[ok["dataset"] == name, "method"])]:
            curve = curves.loc[(name, method)]
            style = "-" if method in PFN_METHODS else "--"
            ax.plot(
                curve.index, curve.to_numpy(), style, marker="o", label=display_name(method, CLF)
            )
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training rows")
        ax.set_ylabel("ROC AUC")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    legend = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    log(f"wrote {path}")


# --------------------------------------------------------------------------------- speed


def speed_runs(
    method: str, split: Split, repeats: int, args: argparse.Namespace
) -> dict[str, float | str]:
    """Median fit / predict seconds and peak MiB of ``repeats`` child runs (seeds 0..)."""
    results = [
        measure(method, CLF, seed, split, args.threads, args.timeout) for seed in range(repeats)
    ]
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return {"failed": results[0]["reason"]}
    med = {k: float(np.median([r[k] for r in ok])) for k in ("fit_s", "predict_s", "peak_mib")}
    return {**med, "total_s": med["fit_s"] + med["predict_s"]}


def speed_split(n_train: int, n_test: int) -> Split:
    X, y = make_mc(n_train + n_test, 20)
    return Split(X.iloc[:n_train], y[:n_train], X.iloc[n_train:], y[n_train:], np.unique(y))


def speed_cells(res: dict[str, float | str]) -> list[str]:
    if "failed" in res:
        return [f"failed: {res['failed']}", "", "", ""]
    return [fmt(float(res[k]), d) for k, d in (("fit_s", 2), ("predict_s", 2), ("total_s", 2))] + [
        fmt(float(res["peak_mib"]), 0)
    ]


def speed_target_1(args: argparse.Namespace) -> str:
    n = args.speed_rows
    split = speed_split(n, n)
    rows = []
    for method in SPEED_METHODS:
        log(f"[speed 1] {method}: {n} train / {n} test rows, {args.repeats} run(s)")
        rows.append(
            [display_name(method, CLF), *speed_cells(speed_runs(method, split, args.repeats, args))]
        )
    header = ["model", "fit s", "predict s", "fit + predict s", "peak MiB"]
    return (
        f"Speed target 1: make_classification, {n:,} training and {n:,} test rows, 20 features; "
        f"median of {args.repeats} run(s), {args.threads} thread(s); pfn-auto = PFNClassifier() "
        "at its defaults\n\n" + md_table(header, rows, "lrrrr")
    )


def speed_target_2(args: argparse.Namespace) -> str:
    sizes = [round(args.speed_rows * s) for s in SPEED_SCALES]
    n_test = max(1, round(SPEED_TEST_ROWS * args.speed_rows / SPEED_TARGET_ROWS))
    X, y = make_mc(sizes[-1] + n_test, 20)
    test = slice(sizes[-1], None)
    rows = []
    for method in SPEED_METHODS:
        previous: tuple[int, float] | None = None
        for n in sizes:
            log(f"[speed 2] {method}: {n} train / {n_test} test rows")
            split = Split(X.iloc[:n], y[:n], X.iloc[test], y[test], np.unique(y))
            res = speed_runs(method, split, 1, args)
            per_1k = growth = "–"
            if "failed" not in res:
                peak = float(res["peak_mib"])
                per_1k = fmt(peak / n * 1000, 2)
                if previous:
                    growth = fmt((peak - previous[1]) / (n - previous[0]) * 1000, 2)
                previous = (n, peak)
            rows.append([display_name(method, CLF), f"{n:,}", *speed_cells(res), per_1k, growth])
    header = [
        "model",
        "train rows",
        "fit s",
        "predict s",
        "fit + predict s",
        "peak MiB",
        "MiB per 1,000 rows",
        "added MiB per 1,000 rows vs the previous size",
    ]
    return (
        f"Speed target 2: make_classification, 20 features, {n_test:,} test rows; one run per "
        f"size, {args.threads} thread(s); memory grows linearly when the last column is flat\n\n"
        + md_table(header, rows, "lrrrrrrr")
    )


# ---------------------------------------------------------------------------------- main


def comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_methods(text: str, p: argparse.ArgumentParser) -> list[str]:
    asked = [ALIASES.get(m.lower(), m.lower()) for m in comma_list(text)]
    for m in asked:
        if m not in METHODS:
            hint = difflib.get_close_matches(m, METHODS, n=1)
            p.error(
                f"unknown method {m!r}; choose from {', '.join(METHODS)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    return [m for m in METHODS if m in asked]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="PFN context strategies vs scikit-learn baselines on large tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--methods", help=f"comma list of {', '.join(METHODS)} (default: all)")
    p.add_argument("--datasets", help="comma list of data set names (default: all)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="holds keel_dev/ etc.")
    p.add_argument("--train-rows", default="1000,3000,10000,all", help="training set sizes")
    p.add_argument("--max-train", type=int, default=50_000, help="cap of the 'all' size")
    p.add_argument("--test-rows", type=int, default=2000, help="test rows (at most half)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per data set")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenMP/BLAS threads")
    p.add_argument("--timeout", type=float, default=900, help="seconds per fit + predict")
    p.add_argument("--out", type=Path, help=f"JSON lines file (default {OUT}; --quick {QUICK_OUT})")
    p.add_argument("--resume", action="store_true", help="skip the runs already in --out")
    p.add_argument("--report-only", action="store_true", help="print the tables of --out")
    p.add_argument("--plot", type=Path, help="write ROC AUC vs training rows to this image")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 small sets, 3 methods")
    p.add_argument("--speed", action="store_true", help="measure the two speed targets only")
    p.add_argument("--speed-rows", type=int, default=SPEED_TARGET_ROWS, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3, help="--speed: runs per measurement")
    args = p.parse_args(argv)
    if min(args.seeds, args.threads, args.test_rows, args.max_train, args.repeats) < 1:
        p.error("--seeds, --threads, --test-rows, --max-train and --repeats must be >= 1")
    if args.quick:
        args.train_rows = "1000"
        args.test_rows = 300
        args.methods = args.methods or ",".join(QUICK_METHODS)
    args.methods = parse_methods(args.methods or ",".join(METHODS), p)
    args.train_rows = comma_list(args.train_rows)
    bad = [s for s in args.train_rows if s != "all" and not (s.isdigit() and int(s) > 0)]
    if bad:
        p.error(f"--train-rows takes positive integers and 'all'; got {bad}")
    args.out = args.out or (QUICK_OUT if args.quick else OUT)
    return args


def select_datasets(args: argparse.Namespace) -> dict[str, DataSet] | None:
    """The data sets to run (None after an error message)."""
    found = available(args.data_root, log)
    if args.datasets:
        names = comma_list(args.datasets)
        unknown = [n for n in names if n not in found]
        if unknown:
            log(f"error: unknown data set(s) {unknown}; available: {', '.join(found)}")
            return None
        return {n: found[n] for n in names}
    if args.quick:
        picks = [n for n in QUICK_SETS if n in found] or [QUICK_FALLBACK]
        return {n: found[n] for n in picks}
    return found


def header_line(args: argparse.Namespace) -> str:
    line = (
        f"pfnkit {pfnkit.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}, {platform.machine()}; {args.threads} thread(s)"
    )
    if args.speed or args.report_only:
        return line + ("" if args.speed else f"; report of {args.out}")
    return (
        f"{line}; train rows {','.join(args.train_rows)} (max {args.max_train}), test rows "
        f"{args.test_rows}, {args.seeds} seed(s); methods: {', '.join(args.methods)}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.speed:
        log(f"speed targets, --speed-rows {args.speed_rows}, {args.threads} thread(s)")
        print("\n\n".join([header_line(args), speed_target_1(args), speed_target_2(args)]) + "\n")
        return 0
    datasets = select_datasets(args)
    if datasets is None:
        return 2
    args.datasets = list(datasets)
    log(header_line(args))
    t_start = time.perf_counter()
    if not args.report_only:
        done = {run_key(r) for r in load_records(args.out)} if args.resume else set()
        for dataset in datasets.values():
            run_dataset(dataset, args, done)
    df = latest_runs(load_records(args.out), args)
    if df.empty:
        log(f"no runs in {args.out} for this selection")
        return 1
    sections = [header_line(args), *report(df)]
    sections.append(f"runs: {args.out}; wall time {time.perf_counter() - t_start:.0f} s")
    print("\n\n".join(sections) + "\n")
    if args.plot:
        plot(df, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
