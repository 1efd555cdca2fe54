"""MixturePrior: each batch comes from one component prior, chosen by weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import Batch, BatchShape, Prior


@dataclass(frozen=True)
class MixturePrior:
    """A mixture of priors of the same task; one component is drawn per batch.

    Args:
        components: the priors to mix (all regression or all classification).
        weights: relative probabilities of the components (default: equal).
    """

    name: ClassVar[str] = "mixture"
    components: tuple[Any, ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.components:
            raise InvalidConfigError("MixturePrior.components must hold at least one prior.")
        for c in self.components:
            if not isinstance(c, Prior):
                raise InvalidConfigError(
                    f"MixturePrior.components must be priors with a sample() method. Got {c!r}."
                )
        tasks = {c.task for c in self.components}
        if len(tasks) != 1:
            raise InvalidConfigError(
                "MixturePrior.components must share one task; got a mix of "
                f"{sorted(tasks)}. Train regression and classification PFNs separately."
            )
        if self.weights is not None:
            if len(self.weights) != len(self.components):
                raise InvalidConfigError(
                    f"MixturePrior has {len(self.components)} components but "
                    f"{len(self.weights)} weights; give one weight per component."
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise InvalidConfigError(
                    f"MixturePrior.weights must be >= 0 with a positive sum. Got {self.weights}."
                )

    @property
    def task(self) -> Any:
        return self.components[0].task

    @property
    def max_classes(self) -> int:
        return max(int(getattr(c, "max_classes", 2)) for c in self.components)

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        w = (
            torch.ones(len(self.components))
            if self.weights is None
            else torch.tensor(self.weights, dtype=torch.float64)
        )
        i = int(torch.multinomial(w.double(), 1, generator=generator))
        batch: Batch = self.components[i].sample(shape, generator=generator)
        batch.extras["component"] = torch.full((shape.batch_size,), i)
        return batch
