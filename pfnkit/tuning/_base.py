"""What every context strategy shares: the problem it is fitted on and its fitted form.

A strategy decides which rows (or learned tokens) each ensemble member sees as context.
``strategy.fit(problem)`` returns a ``FittedContext`` whose ``logits(x_test)`` runs the
test rows. Strategies are frozen dataclasses: estimator parameters that ``clone`` copies
and ``fit`` never mutates.

Shape legend: B members, n training rows, M test rows, f features the PFN reads,
K outputs (classes or bars).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from pfnkit.exceptions import InvalidConfigError

PREDICT_TOKENS = 65_536  # rows (context + test) per forward pass when predicting


@dataclass(frozen=True)
class ContextProblem:
    """Everything a strategy fits on.

    Attributes:
        model: the frozen PFN.
        x: (B, n, f) float32 member views of the training rows (NaN = missing).
        y: (B, n) float32 member targets: class ids in the member's code, or standardised
            values.
        categorical: (B, f) which view columns are categorical (for distances).
        task: "classification" or "regression".
        n_classes: classes the members show the PFN (classification), else 0.
        context_limit: most context rows the PFN was trained on.
        seed: seeds whatever the strategy draws.
        device: torch device name.
    """

    model: Any
    x: np.ndarray
    y: np.ndarray
    categorical: np.ndarray
    task: str
    n_classes: int
    context_limit: int
    seed: int
    device: str = "cpu"

    @property
    def n_members(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[1])

    def rows(self, idx: np.ndarray) -> ContextProblem:
        """The same problem on a subset of the training rows."""
        return replace(self, x=self.x[:, idx], y=self.y[:, idx])

    def members(self, idx: Any, **changes: Any) -> ContextProblem:
        """The same problem for a subset of the members (``idx``: indices or a slice)."""
        return replace(
            self, x=self.x[idx], y=self.y[idx], categorical=self.categorical[idx], **changes
        )

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member feature mean and std (B, 1, f) over all training rows."""
        return self.model.x_encoder.context_stats(self.tensor(self.x))


class FittedContext(Protocol):
    """A strategy after ``fit``: runs test rows against the members' contexts."""

    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        """(B, M, K) logits for the members' views x_test (B, M, f), on the CPU."""
        ...


class ContextStrategy(Protocol):
    name: str

    def fit(self, problem: ContextProblem) -> FittedContext: ...


def check_int(owner: str, name: str, value: Any, low: int, *, allow_none: bool = False) -> None:
    """One-line error unless value is an int >= low (or None when allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        allowed = f"an int >= {low}" + (" or None" if allow_none else "")
        raise InvalidConfigError(
            f"The '{name}' parameter of {owner} must be {allowed}. Got {value!r} instead."
        )


def check_float(
    owner: str, name: str, value: Any, low: float, high: float | None = None, *, open_low: bool
) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = np.isfinite(v) and (v > low if open_low else v >= low)
        ok = ok and (high is None or v < high)
    if not ok:
        rng = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high else "")
        raise InvalidConfigError(
            f"The '{name}' parameter of {owner} must be a finite number {rng}. "
            f"Got {value!r} instead."
        )


def stratified_split(
    y: np.ndarray, fraction: float, classification: bool, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices; every class with 2+ rows lands in both."""
    n = y.shape[0]
    if not classification:
        perm = rng.permutation(n)
        n_val = max(1, int(round(fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    train, val = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fraction * rows.size)) if rows.size >= 2 else 0
        n_val = min(max(n_val, 1 if rows.size >= 2 else 0), rows.size - 1)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_rows(
    y: np.ndarray, n_ctx: int, classification: bool, rng: np.random.RandomState
) -> np.ndarray:
    """n_ctx rows at random; classification keeps at least one row of every class."""
    n = y.shape[0]
    if n_ctx >= n:
        return np.arange(n)
    if not classification:
        return np.sort(rng.choice(n, size=n_ctx, replace=False))
    first = np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])
    first = rng.permutation(first)[:n_ctx]
    rest = np.setdiff1d(np.arange(n), first)
    more = rng.choice(rest, size=n_ctx - first.size, replace=False)
    return np.sort(np.concatenate([first, more]))


def chunked_predict(model: Any, cache: Any, x_test: np.ndarray, device: str) -> torch.Tensor:
    """Logits (B, M, K) of test rows against one cached context per member, in chunks."""
    b, m, _ = x_test.shape
    step = max(1, PREDICT_TOKENS // max(1, b))
    outs = []
    for start in range(0, m, step):
        xt = torch.as_tensor(x_test[:, start : start + step], dtype=torch.float32, device=device)
        outs.append(model.predict_cached(cache, xt).float().cpu())
    return torch.cat(outs, dim=1)


def adaptation_config(problem: ContextProblem, **options: Any) -> Any:
    """TrainConfig of an in-memory adaptation run (prompt or fine-tuning) on ``problem``:
    fp32, no checkpoints or metric lines, seeded from the problem."""
    from pfnkit.train import TrainConfig

    return TrainConfig(
        precision="fp32",
        seed=problem.seed % 2**31,
        device=problem.device,
        checkpoint_every=10**9,
        log_every=10**9,
        warmup_steps=0,
        **options,
    )
