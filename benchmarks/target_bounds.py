"""PFNRegressor's bounded mean (target_bounds="train", the default) against the plain
predictive mean (target_bounds=None) on synthetic tables that played no part in choosing
it: four scikit-learn generators, a log-normal and a Poisson-count target; 500 rows, 5
random 50/50 splits. Both columns come from the same fits (``tabular.unbounded_mean``).

    python benchmarks/target_bounds.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import (
    make_friedman2,
    make_friedman3,
    make_regression,
    make_sparse_uncorrelated,
)
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular import unbounded_mean  # noqa: E402

from pfnkit import PFNRegressor  # noqa: E402


def skewed(n, random_state):
    rng = np.random.default_rng(random_state)
    X = rng.normal(size=(n, 6))
    return X, np.exp(0.8 * X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + 0.3 * rng.normal(size=n))


def counts(n, random_state):
    rng = np.random.default_rng(random_state)
    X = rng.normal(size=(n, 5))
    return X, rng.poisson(np.exp(0.7 * X[:, 0] - 0.5 * X[:, 1])).astype(float)


gens = {
    "friedman2": lambda s: make_friedman2(500, noise=0.5, random_state=s),
    "friedman3": lambda s: make_friedman3(500, noise=0.05, random_state=s),
    "make_regression": lambda s: make_regression(500, 30, n_informative=5, noise=5, random_state=s),
    "sparse_uncorrelated": lambda s: make_sparse_uncorrelated(500, 20, random_state=s),
    "lognormal": lambda s: skewed(500, s),
    "poisson_counts": lambda s: counts(500, s),
}


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    tot: dict[str, list[float]] = {"b": [], "u": []}
    print("| table | nRMSE, unbounded mean | nRMSE, bounded (default) |")
    print("|:---|---:|---:|")
    for name, g in gens.items():
        b, u = [], []
        for s in range(5):
            X, y = g(s)
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=s)
            est = PFNRegressor(random_state=s).fit(Xtr, ytr)
            sd = yte.std()
            b.append(np.sqrt(np.mean((est.predict(Xte) - yte) ** 2)) / sd)
            u.append(np.sqrt(np.mean((unbounded_mean(est, Xte) - yte) ** 2)) / sd)
        tot["b"].append(np.mean(b))
        tot["u"].append(np.mean(u))
        print(f"| {name} | {np.mean(u):.4f} | {np.mean(b):.4f} |", flush=True)
    print(f"| mean | {np.mean(tot['u']):.4f} | {np.mean(tot['b']):.4f} |")


if __name__ == "__main__":
    main()
