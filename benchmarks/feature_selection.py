"""Feature selection by the PFN's held-out loss: ``feature_selection="cv"`` against
``"none"``, with HistGradientBoosting, on the same splits in the same run.

Data and protocol are ``benchmarks/tabular.py``'s (same loaders, same 50/50 splits with
seeds 0, 1, ..., training halves capped at 3,000 rows, test halves at 5,000): the regression
sets (diabetes, friedman1 and the 8 tables of ``../shared/data/tabular_more/``) and, with
``--task clf`` or ``both``, the 18 KEEL sets and scikit-learn's bundled sets.

Columns: nRMSE (RMSE over the test targets' standard deviation) and the PFN's NLL per test
point (standardised by log sd, as in tabular.py's mean row) for regression; ROC AUC and log
loss for classification; the median wall time of fit + predict; and k, the mean number of
columns the selection kept (of d). ``--synthetic`` swaps the regression sets for four
scikit-learn generators that played no part in designing the selection (500 rows each),
as a check that it generalises. Usage::

    python benchmarks/feature_selection.py --threads 1                  # regression
    python benchmarks/feature_selection.py --task clf --threads 1       # classification
    python benchmarks/feature_selection.py --synthetic --threads 1      # held-out generators
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tabular  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

from pfnkit import PFNClassifier, PFNRegressor  # noqa: E402

VARIANTS = ("none", "cv")


def synthetic_regression() -> dict:
    """Four generators, none of them used to design the selection: (X frame, y) loaders."""
    from sklearn.datasets import (
        make_friedman2,
        make_friedman3,
        make_regression,
        make_sparse_uncorrelated,
    )

    made = {
        "friedman2": lambda: make_friedman2(n_samples=500, noise=30, random_state=1),
        "friedman3": lambda: make_friedman3(n_samples=500, noise=0.1, random_state=1),
        "regression-30-5": lambda: make_regression(
            n_samples=500, n_features=30, n_informative=5, noise=10, random_state=1
        ),
        "sparse-uncorrelated": lambda: make_sparse_uncorrelated(
            n_samples=500, n_features=20, random_state=1
        ),
    }

    def frame(make):
        X, y = make()
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]), y

    return {name: (lambda make=make: frame(make)) for name, make in made.items()}


def run_one(task: str, name: str, loader, splits: int) -> list[dict]:
    X, y = loader()
    if task == "clf":
        X, y = tabular.drop_rare_classes(X, y, name)
    rows = []
    for seed in range(splits):
        Xtr, Xte, ytr, yte = tabular.split(X, y, seed, stratify=task == "clf")
        for variant in VARIANTS:
            cls = PFNRegressor if task == "reg" else PFNClassifier
            est = cls(random_state=seed, feature_selection=variant)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(Xtr, ytr)
                out = est.predict(Xte) if task == "reg" else est.predict_proba(Xte)
            elapsed = time.perf_counter() - start
            rec = {"dataset": name, "variant": variant, "seed": seed, "time": elapsed}
            rec["k"] = len(est.selected_features_)
            rec["d"] = X.shape[1]
            if task == "reg":
                sd = float(np.std(yte))
                rec["score"] = float(np.sqrt(np.mean((out - yte) ** 2))) / sd
                rec["loss"] = float(np.mean(est.nll(Xte, yte))) - math.log(sd)
            else:
                rec["score"] = tabular.roc_auc(yte, out, est.classes_)
                rec["loss"] = log_loss(yte, out, labels=est.classes_)
            rows.append(rec)
        if task == "reg":
            hgb = tabular.make_regressor("hgb", seed, "default")
            hgb.fit(Xtr, ytr)
            score = float(np.sqrt(np.mean((hgb.predict(Xte) - yte) ** 2))) / float(np.std(yte))
        else:
            hgb = tabular.make_classifier("hgb", seed, {})
            hgb.fit(Xtr, ytr)
            score = tabular.roc_auc(yte, hgb.predict_proba(Xte), hgb.classes_)
        rows.append({"dataset": name, "variant": "hgb", "seed": seed, "score": score})
        done = [r for r in rows if r["seed"] == seed]
        print(
            f"  {name} split {seed}: "
            + "  ".join(f"{r['variant']} {r['score']:.3f}" for r in done)
            + f"  (k {done[1]['k']}/{done[1]['d']})",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(df: pd.DataFrame, task: str) -> str:
    score = "nRMSE" if task == "reg" else "ROC AUC"
    loss = "NLL" if task == "reg" else "log loss"
    head = (
        f"| data set | {score}, none | {score}, cv | HGB | {loss}, none | {loss}, cv "
        "| k (of d) | s, none | s, cv |"
    )
    lines = [head, "|:---|" + "---:|" * 8]
    means = df.groupby(["dataset", "variant"]).mean(numeric_only=True)
    med = df.groupby(["dataset", "variant"])["time"].median()
    for name in dict.fromkeys(df["dataset"]):
        n, c, h = (means.loc[(name, v)] for v in ("none", "cv", "hgb"))
        lines.append(
            f"| {name} | {n['score']:.3f} | {c['score']:.3f} | {h['score']:.3f} | "
            f"{n['loss']:.3f} | {c['loss']:.3f} | {c['k']:.1f} ({int(c['d'])}) | "
            f"{med[(name, 'none')]:.2f} | {med[(name, 'cv')]:.2f} |"
        )
    by = df.groupby(["variant", "dataset"]).mean(numeric_only=True).groupby("variant").mean()
    lines.append(
        f"| **mean** ({df['dataset'].nunique()} sets) | {by.loc['none', 'score']:.3f} | "
        f"{by.loc['cv', 'score']:.3f} | {by.loc['hgb', 'score']:.3f} | "
        f"{by.loc['none', 'loss']:.3f} | {by.loc['cv', 'loss']:.3f} | | "
        f"{df[df.variant == 'none']['time'].median():.2f} | "
        f"{df[df.variant == 'cv']['time'].median():.2f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["reg", "clf", "both"], default="reg")
    p.add_argument("--datasets", nargs="+", help="data set names (default: all of the task)")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=tabular.DEFAULT_DATA)
    p.add_argument("--more-data", type=Path, default=tabular.DEFAULT_MORE)
    p.add_argument("--out", type=Path, help="also write the table(s) to this markdown file")
    p.add_argument(
        "--synthetic", action="store_true", help="regression on four held-out generators"
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    tasks = ["reg", "clf"] if args.task == "both" else [args.task]
    text = []
    for task in tasks:
        if task == "reg":
            loaders = (
                synthetic_regression()
                if args.synthetic
                else tabular.regression_datasets(args.more_data)
            )
        else:
            loaders = tabular.classification_datasets(args.data)
        names = [n for n in loaders if not args.datasets or n in args.datasets]
        rows = [r for n in names for r in run_one(task, n, loaders[n], args.splits)]
        text.append(table(pd.DataFrame(rows), task))
        print(text[-1], flush=True)
    if args.out:
        args.out.write_text("\n\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
