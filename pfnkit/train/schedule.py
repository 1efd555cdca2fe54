"""Learning-rate schedule: linear warm-up, then cosine decay to lr * min_lr_ratio."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``steps``.

    A pure function of the step, so resuming needs no scheduler state.
    """
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = lr * min_lr_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
