"""The data sets of ``benchmarks/large_data.py``, read in place (nothing is copied here).

- KEEL dev tables with at least ``MIN_ROWS`` rows: ``<root>/keel_dev/NAME.dat``
  (comma-separated, no header, last column the class);
- every table in ``<root>/tabular_more/NAME.csv`` (header row, last column the target;
  the regression ones are ``MORE_REGRESSION``, see that folder's README.md);
- ``make_classification`` with ``MC_ROWS`` rows and ``MC_FEATURES`` features (10 informative,
  ``random_state=0``), named ``mc-5k-20`` and so on.

A missing folder is skipped with a note. Loading is lazy: ``DataSet.load()`` reads the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

CLF = "classification"
REG = "regression"
MIN_ROWS = 1000
MORE_REGRESSION = frozenset(
    {
        "diamonds",
        "cps1988_wages",
        "hotel_rates",
        "food_delivery_time",
        "computer_prices",
        "ames_housing",
        "saratoga_houses",
        "islr_wage",
    }
)
MC_ROWS = (5_000, 20_000, 100_000)
MC_FEATURES = (20, 100)
MC_PREFIX = "mc-"

Table = tuple[pd.DataFrame, np.ndarray]


@dataclass(frozen=True)
class DataSet:
    name: str
    task: str  # CLF or REG
    source: str  # "keel", "tabular_more" or "make_classification"
    load: Callable[[], Table]


def read_keel(path: Path) -> Table:
    raw = pd.read_csv(path, header=None, skipinitialspace=True, na_values=["?"])
    X = raw.iloc[:, :-1]
    X.columns = [f"x{i}" for i in range(X.shape[1])]
    return X, raw.iloc[:, -1].to_numpy()


def read_more(path: Path, task: str) -> Table:
    raw = pd.read_csv(path)
    y = raw.iloc[:, -1].to_numpy(dtype=float if task == REG else object)
    return raw.iloc[:, :-1], y


def make_mc(n_rows: int, n_features: int) -> Table:
    x, y = make_classification(
        n_samples=n_rows, n_features=n_features, n_informative=10, random_state=0
    )
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(n_features)]), y


def drop_rare_classes(table: Table) -> Table:
    """Classes with a single row cannot be on both sides of a stratified split."""
    X, y = table
    labels, counts = np.unique(y, return_counts=True)
    keep = ~np.isin(y, labels[counts < 2])
    return X[keep].reset_index(drop=True), y[keep]


def n_lines(path: Path) -> int:
    with path.open() as f:
        return sum(1 for line in f if line.strip())


def keel_sets(folder: Path) -> list[DataSet]:
    paths = sorted(p for p in folder.glob("*.dat") if n_lines(p) >= MIN_ROWS)
    return [DataSet(p.stem, CLF, "keel", partial(read_keel, p)) for p in paths]


def more_sets(folder: Path) -> list[DataSet]:
    out = []
    for path in sorted(folder.glob("*.csv")):
        task = REG if path.stem in MORE_REGRESSION else CLF
        out.append(DataSet(path.stem, task, "tabular_more", partial(read_more, path, task)))
    return out


def mc_sets() -> list[DataSet]:
    return [
        DataSet(
            f"{MC_PREFIX}{n // 1000}k-{f}",
            CLF,
            "make_classification",
            partial(make_mc, n, f),
        )
        for n in MC_ROWS
        for f in MC_FEATURES
    ]


def available(root: Path, log: Callable[[str], None]) -> dict[str, DataSet]:
    """Every data set found under ``root`` (folders keel_dev/, tabular_more/) plus mc-*."""
    found: list[DataSet] = []
    for folder, reader in (("keel_dev", keel_sets), ("tabular_more", more_sets)):
        if (root / folder).is_dir():
            found += reader(root / folder)
        else:
            log(f"note: {root / folder} not found; skipping its data sets (--data-root DIR)")
    found += mc_sets()
    return {d.name: d for d in found}


def load(dataset: DataSet) -> Table:
    table = dataset.load()
    return drop_rare_classes(table) if dataset.task == CLF else table
