"""Context length: can a checkpoint read more context rows than it was trained on?

The question behind ``pfnkit.tuning.CONTEXT_STRETCH``: when a table has a little more
training rows than the checkpoint's training context limit, is one context of all rows
(the network extrapolates in length) as good as a random subsample of ``limit`` rows per
member? And what do learned prompts (``context="auto"`` far above the limit) add, at what
cost?

Data: the classification tables of ``<repo>/../shared/data/tabular_more/`` and the KEEL dev
tables with at least 1,000 rows (``benchmarks/_large_data_sets.py``; absent folders are
skipped with a note). Per table: a stratified test set of ``--test-rows`` (at most half the
table), then training sets of ``--ratios`` times the checkpoint's context limit, prefixes
of one shuffled order (so nested), skipped where the table is too small.

Methods, all ``PFNClassifier(checkpoint=..., n_estimators=8, random_state=0)``:
  * subsample   context=SubsampleContext(): each member a random subset of ``limit`` rows;
  * all-rows    context=SubsampleContext(max_rows=n): every row in one context;
  * prompts     context=MixedContext((SubsampleContext(), TunedContext(n_tokens=48))): what
                "auto" does above the stretch.

Prints ROC AUC and log loss per table and size, and a summary per method and ratio (mean
AUC, mean log loss, median fit + predict seconds), all methods side by side in one run.

    python benchmarks/context_length.py --threads 1
    python benchmarks/context_length.py --checkpoint runs/x.safetensors --ratios 1.1,2
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _large_data_sets as sets  # noqa: E402

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METHODS = ("subsample", "all-rows", "prompts")


def strategy(method: str, n_rows: int):
    from pfnkit.tuning import MixedContext, SubsampleContext, TunedContext

    if method == "subsample":
        return SubsampleContext()
    if method == "all-rows":
        return SubsampleContext(max_rows=n_rows)
    return MixedContext((SubsampleContext(), TunedContext(n_tokens=48)))


def score(y_test: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    keep = np.isin(y_test, classes)
    if len(classes) == 2:
        auc = roc_auc_score(y_test[keep] == classes[1], proba[keep, 1])
    else:
        auc = roc_auc_score(y_test[keep], proba[keep], multi_class="ovr", labels=classes)
    return float(auc), float(log_loss(y_test[keep], proba[keep], labels=classes))


def add_table_options(p: argparse.ArgumentParser) -> None:
    """--test-rows, --data-root, --datasets, --threads (shared with compare_checkpoints.py)."""
    p.add_argument("--test-rows", type=int, default=2000)
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--datasets", help="comma list of table names (default: all)")
    p.add_argument("--threads", type=int, default=1)


def real_classification_tables(root: Path, datasets: str | None) -> dict[str, sets.DataSet]:
    """The real classification tables under ``root`` (optionally a comma list of names)."""
    found = sets.available(root, lambda m: print(m, file=sys.stderr))
    chosen = datasets.split(",") if datasets else None
    return {
        name: d
        for name, d in found.items()
        if d.task == sets.CLF
        and d.source != "make_classification"
        and (chosen is None or name in chosen)
    }


def held_out_splits(tables: dict[str, sets.DataSet], test_rows: int) -> Iterator[tuple]:
    """Per table: (name, X_rest, X_test, y_rest, y_test), a stratified test set of
    ``test_rows`` (at most half the table); training sets are prefixes of X_rest."""
    from sklearn.model_selection import train_test_split

    for name, data in tables.items():
        X, y = sets.load(data)
        n_test = min(test_rows, len(y) // 2)
        yield name, *train_test_split(X, y, test_size=n_test, stratify=y, random_state=0)


def fit_and_score(est: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> tuple:
    """(ROC AUC, log loss, fit + predict seconds) of a classifier."""
    t0 = time.perf_counter()
    proba = est.fit(X_train, y_train).predict_proba(X_test)
    seconds = time.perf_counter() - t0
    return (*score(y_test, proba, est.classes_), seconds)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="default", help="classification checkpoint")
    p.add_argument("--ratios", default="1.1,1.8", help="training rows / context limit")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    add_table_options(p)
    args = p.parse_args(argv)

    import torch

    from pfnkit import PFNClassifier
    from pfnkit.estimators._base import load_model

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    methods = args.methods.split(",")
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    ratios = [float(r) for r in args.ratios.split(",")]
    _, card = load_model(args.checkpoint, "classification", "cpu")
    limit = int(card.context_limit)
    tables = real_classification_tables(args.data_root, args.datasets)
    print(f"checkpoint {args.checkpoint}: context limit {limit}; {len(tables)} tables\n")
    print("| table | rows | " + " | ".join(f"{m} AUC / log loss" for m in methods) + " |")
    print("|:---|---:|" + "---:|" * len(methods))
    results: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for name, X_rest, X_test, y_rest, y_test in held_out_splits(tables, args.test_rows):
        for ratio in ratios:
            n = int(round(ratio * limit))
            if n > len(y_rest):
                continue
            cells = []
            for method in methods:
                est = PFNClassifier(
                    checkpoint=args.checkpoint,
                    n_estimators=8,
                    random_state=0,
                    context=strategy(method, n),
                )
                auc, ll, seconds = fit_and_score(est, X_rest.iloc[:n], y_rest[:n], X_test, y_test)
                results.setdefault((method, ratio), []).append((auc, ll, seconds))
                cells.append(f"{auc:.4f} / {ll:.3f}")
            print(f"| {name} | {n} | " + " | ".join(cells) + " |", flush=True)
    print("\n| method | rows / limit | tables | mean ROC AUC | mean log loss | fit+predict (s) |")
    print("|:---|---:|---:|---:|---:|---:|")
    for ratio in ratios:
        for method in methods:
            runs = np.array(results.get((method, ratio), []))
            if len(runs) == 0:
                continue
            print(
                f"| {method} | {ratio:g} | {len(runs)} | {runs[:, 0].mean():.4f} | "
                f"{runs[:, 1].mean():.4f} | {np.median(runs[:, 2]):.1f} |"
            )


if __name__ == "__main__":
    main()
