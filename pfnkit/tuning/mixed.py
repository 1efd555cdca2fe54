"""Several strategies in one ensemble: members are split between them in turn.

Global contexts (a subsample) and local ones (kNN) err differently: a global context
sees the whole table's structure, a local one the fine detail near each test row.
Averaging both kinds of member is more robust than either alone.

Shape legend: B members, M test rows, f features, K outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.tuning._base import ContextProblem


@dataclass(frozen=True)
class MixedContext:
    """Member m uses ``strategies[m % len(strategies)]``.

    Args:
        strategies: the strategies to mix (at least one).
    """

    strategies: tuple[Any, ...]
    name = "mixed"

    def __post_init__(self) -> None:
        if not isinstance(self.strategies, tuple) or not self.strategies:
            raise InvalidConfigError(
                "The 'strategies' parameter of MixedContext must be a non-empty tuple of "
                f"strategies. Got {self.strategies!r} instead."
            )
        for s in self.strategies:
            if not callable(getattr(s, "fit", None)):
                raise InvalidConfigError(
                    f"MixedContext strategies must be context strategies. Got {s!r}."
                )

    def n_neighbours(self, problem: ContextProblem) -> int:
        """The k of the first kNN strategy (what fine-tuning lays its datasets out for)."""
        for s in self.strategies:
            if hasattr(s, "n_neighbours"):
                return int(s.n_neighbours(problem))
        return problem.context_limit

    def fit(self, problem: ContextProblem) -> MixedFitted:
        groups = []
        for i, s in enumerate(self.strategies):
            members = np.arange(i, problem.n_members, len(self.strategies))
            if members.size == 0:
                continue
            sub = problem.members(members, seed=problem.seed + 104729 * i)
            resize = getattr(s, "for_members", None)  # e.g. one prompt per member
            groups.append((members, (resize(members.size) if resize else s).fit(sub)))
        return MixedFitted(groups, problem.n_members)


@dataclass
class MixedFitted:
    groups: list[tuple[np.ndarray, Any]]
    n_members: int

    @property
    def n_context_rows(self) -> int:
        return max(int(getattr(f, "n_context_rows", 0)) for _, f in self.groups)

    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        out: torch.Tensor | None = None
        for members, fitted in self.groups:
            part = fitted.logits(x_test[members])  # (b, M, K)
            if out is None:
                out = torch.empty(self.n_members, *part.shape[1:])
            out[torch.as_tensor(members)] = part
        assert out is not None
        return out
