"""Tabular prior: structural causal models (random MLP graphs and random tree ensembles)
with the realism of real tables: categorical columns, missing values, skew, heavy tails,
irrelevant and duplicated features, class imbalance.

Shape legend: B batch, N rows, F features (d of them used by a dataset), W nodes per layer.
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
    LogUniform,
    Param,
    Task,
    Uniform,
    check_task,
    draw,
    to_classes,
)

Arr = np.ndarray

_ACTS = (
    np.tanh,
    lambda t: np.maximum(t, 0.0),
    lambda t: t,
    np.sin,
    np.abs,
    lambda t: np.where(t > 0, t, 0.1 * t),
    lambda t: 1.0 / (1.0 + np.exp(-2.0 * t)),
)


def _small(n: int, rng: np.random.Generator) -> int:
    """1..n with smaller values more likely (a preference for simple structures)."""
    w = 1.0 / np.arange(1, n + 1)
    return int(rng.choice(n, p=w / w.sum())) + 1


def mlp_scm(
    n: int, d: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random sparse MLP as causal graph; features and target read from random nodes."""
    layers = _small(4, rng)
    width = max(int(rng.integers(d // 2 + 1, d + 5)), 2)
    keep = 0.3 + 0.7 * rng.random()  # edge density
    act = _ACTS[int(rng.integers(len(_ACTS)))]
    n_causes = _small(max(1, d), rng)  # few root causes: most tables are not pure noise
    shape = (n, n_causes)
    h = rng.standard_normal(shape) if rng.random() < 0.5 else rng.uniform(-1, 1, shape)
    nodes, weights = [h], []  # the root causes are nodes too
    for _ in range(layers):
        fan_in = h.shape[1]
        w = rng.standard_normal((fan_in, width)) / math.sqrt(fan_in * keep)
        w *= rng.random((fan_in, width)) < keep
        h = act(h @ w + 0.5 * rng.standard_normal(width)) + noise * rng.standard_normal((n, width))
        nodes.append(h)
        weights.append(w)
    # the target is an effect (a node of the last layer); features prefer its ancestors,
    # so that most datasets carry signal, and fill up with any other nodes
    t = int(rng.integers(width))
    related = [np.zeros(node.shape[1], dtype=bool) for node in nodes]
    related[-1][t] = True
    for layer in range(layers, 0, -1):
        related[layer - 1] = (np.abs(weights[layer - 1]) @ related[layer]) > 0
    related[-1][t] = False
    flat_related = np.concatenate(related)
    all_nodes = np.concatenate(nodes, axis=1)  # (N, (layers + 1) * W)
    prefer = 0.5 + 0.5 * rng.random()
    weight = np.where(flat_related, prefer, 1.0 - prefer) + 1e-9
    weight[all_nodes.shape[1] - width + t] = 0.0  # never the target itself
    k = int((weight > 0).sum())
    pick = rng.choice(all_nodes.shape[1], size=d, replace=k < d, p=weight / weight.sum())
    return all_nodes[:, pick], nodes[-1][:, t]


def tree_scm(
    n: int, d: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A causal graph whose nodes are sums of random oblivious trees of their parents."""
    n_causes = int(rng.integers(1, d // 2 + 2))
    n_nodes = d + 1 + int(rng.integers(0, d + 1))
    values = np.empty((n, n_causes + n_nodes))
    values[:, :n_causes] = rng.standard_normal((n, n_causes))
    for i in range(n_causes, n_causes + n_nodes):
        k = min(i, _small(3, rng))
        parents = values[:, rng.choice(i, size=k, replace=False)]  # (N, k)
        # T oblivious trees of depth D at once: one (column, threshold) split per level
        t, depth = _small(4, rng), _small(4, rng)
        cols = rng.integers(0, k, (t, depth))
        thr = parents[rng.integers(0, n, (t, depth)), cols]  # (T, D) thresholds from the data
        leaf = ((parents[:, cols] > thr) << np.arange(depth)).sum(-1)  # (N, T)
        leaf_values = rng.standard_normal((t, 2**depth))
        values[:, i] = np.take_along_axis(leaf_values, leaf.T, 1).sum(0)
        values[:, i] += noise * rng.standard_normal(n)
    nodes = values[:, n_causes:]
    pick = rng.permutation(nodes.shape[1])[: d + 1]
    return nodes[:, pick[:d]], nodes[:, pick[d]]


def _standardize(t: np.ndarray) -> np.ndarray:
    return (t - t.mean(0)) / np.maximum(t.std(0), 1e-6)


@dataclass(frozen=True)
class SCMPrior:
    """Tabular datasets from random structural causal models.

    Each dataset draws an MLP SCM (or, with probability ``tree_fraction``, a tree-ensemble
    SCM), reads features and a target from random nodes, then adds the quirks of real
    tables. Shares below are per dataset, drawn from their hyperpriors.

    Args:
        task: "classification" (2..max_classes classes) or "regression".
        max_classes: largest class count.
        tree_fraction: probability that a dataset comes from a tree-ensemble SCM.
        min_features: each dataset uses d in [min_features, F] features.
        noise_std: noise added at every node.
        categorical_share: share of columns turned into 2..max_categories categories.
        max_categories: most categories of a categorical column.
        missing_datasets: probability that a dataset has missing values.
        missing_share: share of cells made missing (MCAR or value-dependent).
        skew_share: share of columns given skewed or heavy-tailed marginals.
        irrelevant_share: share of columns replaced by pure noise.
        duplicate_share: share of columns replaced by noisy copies of others.
    """

    name: ClassVar[str] = "scm"
    task: Task = "classification"
    max_classes: int = 10
    tree_fraction: float = 0.3
    min_features: int = 1
    noise_std: Param = LogUniform(0.01, 0.3)
    categorical_share: Param = Uniform(0.0, 0.4)
    max_categories: int = 10
    missing_datasets: float = 0.3
    missing_share: Param = Uniform(0.01, 0.3)
    skew_share: Param = Uniform(0.0, 0.4)
    irrelevant_share: Param = Uniform(0.0, 0.3)
    duplicate_share: Param = Uniform(0.0, 0.15)

    def __post_init__(self) -> None:
        check_task("SCMPrior", self.task)
        for name in ("tree_fraction", "missing_datasets"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidConfigError(f"SCMPrior.{name} must be in [0, 1]. Got {v}.")
        if self.max_classes < 2 or self.max_categories < 2 or self.min_features < 1:
            raise InvalidConfigError(
                "SCMPrior needs max_classes >= 2, max_categories >= 2 and min_features >= 1."
            )

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n, f = shape.batch_size, shape.n_rows, shape.n_features
        n_feat = torch.randint(min(self.min_features, f), f + 1, (b,), generator=generator)
        shares = {
            k: draw(getattr(self, k), b, generator).tolist()
            for k in (
                "noise_std",
                "categorical_share",
                "missing_share",
                "skew_share",
                "irrelevant_share",
                "duplicate_share",
            )
        }
        # per-dataset structure in numpy: many tiny ops, where numpy's overhead is lower
        seeds = torch.randint(0, 2**62, (b,), generator=generator).tolist()
        x = np.zeros((b, n, f), dtype=np.float32)
        y = np.zeros((b, n), dtype=np.float32)
        categorical = np.zeros((b, f), dtype=bool)
        for i in range(b):
            rng = np.random.default_rng(seeds[i])
            d = int(n_feat[i])
            scm = tree_scm if rng.random() < self.tree_fraction else mlp_scm
            xi, yi = scm(n, d, shares["noise_std"][i], rng)
            xi, yi = _standardize(xi), _standardize(yi)
            xi, cat = self._realism(xi, {k: v[i] for k, v in shares.items()}, rng)
            x[i, :, :d] = xi
            y[i] = yi
            categorical[i, :d] = cat
        y_t = torch.from_numpy(y)
        n_classes = None
        if self.task == "classification":
            y_t, n_classes = to_classes(y_t, self.max_classes, generator)
        return Batch(
            x=torch.from_numpy(x),
            y=y_t,
            target_y=y_t.clone(),
            single_eval_pos=shape.single_eval_pos,
            n_features=n_feat,
            n_classes=n_classes,
            extras={"categorical": torch.from_numpy(categorical)},
        )

    def _realism(
        self, x: np.ndarray, s: dict[str, float], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Irrelevant, duplicated, skewed, categorical and missing columns of one dataset."""
        n, d = x.shape
        x = x.copy()

        def columns(share: float) -> np.ndarray:
            return np.flatnonzero(rng.random(d) < share)

        for j in columns(s["irrelevant_share"]):
            x[:, j] = rng.standard_normal(n)
        if d > 1:
            for j in columns(s["duplicate_share"]):
                x[:, j] = x[:, int(rng.integers(d))] + 0.05 * rng.standard_normal(n)
        for j in columns(s["skew_share"]):
            kind = int(rng.integers(3))
            if kind == 0:  # log-normal-like
                x[:, j] = np.exp((0.5 + 1.5 * rng.random()) * np.minimum(x[:, j], 10.0))
            elif kind == 1:  # power
                x[:, j] = np.sign(x[:, j]) * np.abs(x[:, j]) ** (1.5 + 1.5 * rng.random())
            else:  # heavy-tailed noise: Student-t with 1..3 degrees of freedom
                x[:, j] += 0.3 * rng.standard_t(int(rng.integers(1, 4)), n)
        cat = np.zeros(d, dtype=bool)
        for j in columns(s["categorical_share"]):
            k = int(rng.integers(2, self.max_categories + 1))
            thr = np.sort(x[rng.integers(0, n, k - 1), j])
            codes = (x[:, j, None] > thr[None, :]).sum(1)
            x[:, j] = rng.permutation(k)[codes]
            cat[j] = True
        if rng.random() < self.missing_datasets:
            p = s["missing_share"]
            if rng.random() < 0.5:  # MCAR
                mask = rng.random((n, d)) < p
            else:  # value-dependent: larger (or smaller) values go missing more often
                sign = 1.0 if rng.random() < 0.5 else -1.0
                prob = 2 * p / (1.0 + np.exp(-sign * 2.0 * _standardize(x)))
                mask = rng.random((n, d)) < prob
            x[mask] = np.nan
        return x, cat
