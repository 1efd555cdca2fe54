"""TableSource: one real table as a data source for the Trainer (prompt and fine-tuning).

The Trainer asks any source for ``sample(shape, generator=...) -> Batch``; a prior draws
synthetic tables, this draws datasets from the rows of one user table, in the members'
views. Three layouts:

- ``"random"``: a random subset of rows, the first ``shape.single_eval_pos`` of them the
  context and the rest the queries (TabPFN-style fine-tuning);
- ``"local"``: a query row with its k nearest other rows as the context (LoCalPFN);
- ``"prefix"``: query rows only (``single_eval_pos`` 0): the context is the model's own
  learned prefix (TuneTables' prompt tuning); the batch carries the feature statistics.

Item i of a batch uses member ``i % B``'s view, so every member's view is trained on (with
"prefix", the batch size is B: item i is member i, whose prompt it trains).

Shape legend: B members, n rows, f features, N rows per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfnkit.priors._base import Batch, BatchShape

LAYOUTS = ("random", "local", "prefix")


@dataclass
class TableSource:
    """Datasets drawn from the rows of one table (see the module docstring).

    Args:
        x: (B, n, f) member views of the table's rows.
        y: (B, n) member targets.
        task: "classification" or "regression".
        n_classes: classes shown to the PFN (classification).
        layout: "random", "local" or "prefix".
        neighbours: (B, Q, k) for "local": the nearest other rows of each query row.
        local_rows: (Q,) for "local": the rows that serve as queries (default: all n).
        stats: (B, 2, 1, f) for "prefix": the members' feature mean and std.
        queries: rows of a "local" or "prefix" dataset (default: the shape's rows).
    """

    x: np.ndarray
    y: np.ndarray
    task: str
    n_classes: int = 0
    layout: str = "random"
    neighbours: np.ndarray | None = None
    stats: torch.Tensor | None = None
    queries: int | None = None
    local_rows: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """How the run's checkpoint describes its data (the rows themselves stay out)."""
        return {
            "name": "table",
            "layout": self.layout,
            "rows": int(self.x.shape[1]),
            "features": int(self.x.shape[2]),
        }

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        rng = np.random.RandomState(int(torch.randint(2**31, (1,), generator=generator)))
        n_members, n, _ = self.x.shape
        members = np.arange(shape.batch_size) % n_members
        if self.layout == "random":
            n_rows = min(shape.n_rows, n)
            sep = min(shape.single_eval_pos, n_rows - 1)
            rows = np.stack([rng.choice(n, n_rows, replace=False) for _ in members])
        elif self.layout == "local":
            assert self.neighbours is not None
            qi = rng.randint(self.neighbours.shape[1], size=len(members))
            q = qi if self.local_rows is None else self.local_rows[qi]
            ctx = self.neighbours[members, qi]  # (b, k)
            rows = np.concatenate([ctx, q[:, None]], axis=1)
            sep = ctx.shape[1]
        else:
            n_q = min(self.queries or shape.n_rows, n)
            rows = np.stack([rng.choice(n, n_q, replace=False) for _ in members])
            sep = 0
        return self.batch(members, rows, sep)

    def batch(self, members: np.ndarray, rows: np.ndarray, sep: int) -> Batch:
        """The datasets ``rows`` (b, N) of ``members`` (b,), context first."""
        x = torch.as_tensor(self.x[members[:, None], rows], dtype=torch.float32)
        y = torch.as_tensor(self.y[members[:, None], rows], dtype=torch.float32)
        n_classes = None
        if self.task == "classification":
            n_classes = torch.full((len(members),), max(2, self.n_classes), dtype=torch.long)
        extras = {}
        if self.layout == "prefix":
            assert self.stats is not None
            extras["stats"] = self.stats[torch.as_tensor(members)]
        return Batch(
            x=x, y=y, target_y=y.clone(), single_eval_pos=sep, n_classes=n_classes, extras=extras
        )
