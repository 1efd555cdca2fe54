"""Global contexts: a random subsample of the training rows per member, or all of them.

Shape legend: B members, n training rows, Nc context rows, M test rows, f features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfnkit.tuning._base import ContextProblem, check_int, chunked_predict, stratified_rows


@dataclass
class CachedContext:
    """One context per member, encoded once at fit; predict runs only the test rows."""

    model: Any
    cache: Any
    device: str
    n_context_rows: int

    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        return chunked_predict(self.model, self.cache, x_test, self.device)


@dataclass(frozen=True)
class SubsampleContext:
    """Each member sees its own random subset of the training rows (stratified for
    classification: every class keeps a row), at most ``max_rows`` of them.

    Args:
        max_rows: context rows per member (None: the checkpoint's training context limit).
    """

    max_rows: int | None = None
    name = "subsample"

    def __post_init__(self) -> None:
        check_int("SubsampleContext", "max_rows", self.max_rows, 1, allow_none=True)

    def n_context(self, problem: ContextProblem) -> int:
        limit = self.max_rows if self.max_rows is not None else problem.context_limit
        return min(problem.n_rows, limit)

    def fit(self, problem: ContextProblem) -> CachedContext:
        n_ctx = self.n_context(problem)
        xs, ys = [], []
        for b in range(problem.n_members):
            rng = np.random.RandomState((problem.seed + 7919 * b) % 2**31)
            rows = stratified_rows(problem.y[b], n_ctx, problem.task == "classification", rng)
            xs.append(problem.x[b, rows])
            ys.append(problem.y[b, rows])
        return encode(problem, np.stack(xs), np.stack(ys))


@dataclass(frozen=True)
class FullContext:
    """Every training row in one context per member (beyond the checkpoint's training
    limit the network extrapolates: measure before relying on it)."""

    name = "full"

    def fit(self, problem: ContextProblem) -> CachedContext:
        return encode(problem, problem.x, problem.y)


def encode(problem: ContextProblem, x_ctx: np.ndarray, y_ctx: np.ndarray) -> CachedContext:
    cache = problem.model.encode_context(problem.tensor(x_ctx), problem.tensor(y_ctx))
    return CachedContext(problem.model, cache, problem.device, int(x_ctx.shape[1]))
