"""Nominal columns as ordinal codes, one-hot blocks or the choice between them by held-out
loss (``categorical_encoding``: "ordinal", "onehot", "cv", the default), on the
KEEL development sets that have them, against RandomForest and HistGradientBoosting in
the same run (benchmarks/tabular.py's 50/50 splits and baselines; ROC AUC, one-vs-rest
macro for multiclass).

    python benchmarks/categorical.py [--splits 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tabular as T  # noqa: E402

from pfnkit import PFNClassifier  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=T.DEFAULT_DATA, help="KEEL *.dat directory")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {
        "PFN ordinal": lambda s: PFNClassifier(random_state=s, categorical_encoding="ordinal"),
        "PFN onehot": lambda s: PFNClassifier(random_state=s, categorical_encoding="onehot"),
        "PFN cv": lambda s: PFNClassifier(random_state=s, categorical_encoding="cv"),
        "RF": lambda s: T.make_classifier("rf", s, {}),
        "HGB": lambda s: T.make_classifier("hgb", s, {}),
    }
    rows = []
    for path in sorted(args.data.glob("*.dat")):
        X, y = T.read_keel(path)
        n_nom = sum(dt == np.dtype(object) for dt in X.dtypes)
        if not n_nom:
            continue  # numeric-only tables: the two encodings are the same
        X, y = T.drop_rare_classes(X, y, path.stem)
        classes = np.unique(y)
        auc: dict[str, list[float]] = {m: [] for m in models}
        secs: dict[str, list[float]] = {m: [] for m in models}
        for seed in range(args.splits):
            Xtr, Xte, ytr, yte = T.split(X, y, seed, stratify=True)
            for name, make in models.items():
                t0 = time.perf_counter()
                proba = make(seed).fit(Xtr, ytr).predict_proba(Xte)
                secs[name].append(time.perf_counter() - t0)
                auc[name].append(T.roc_auc(yte, proba, classes))
        rows.append((path.stem, len(y), X.shape[1], n_nom, auc, secs))
        print(f"{path.stem}: " + "  ".join(f"{m} {np.mean(v):.3f}" for m, v in auc.items()))
    print()
    print("| data set | rows | columns (nominal) | " + " | ".join(models) + " |")
    print("|---|---:|---:|" + "---:|" * len(models))
    for name, n, d, n_nom, auc, _ in rows:
        cells = [f"{np.mean(auc[m]):.3f}" for m in models]
        print(f"| {name} | {n} | {d} ({n_nom}) | " + " | ".join(cells) + " |")
    means = [np.mean([np.mean(r[4][m]) for r in rows]) for m in models]
    print("| mean | | | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    times = [np.median([t for r in rows for t in r[5][m]]) for m in models]
    print("| fit + predict, s (median) | | | " + " | ".join(f"{v:.2f}" for v in times) + " |")


if __name__ == "__main__":
    main()
