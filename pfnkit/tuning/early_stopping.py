"""Early stopping on a validation split, as a Trainer callback (no loop of its own)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class EarlyStopping:
    """Evaluate every ``every`` steps; keep the best parameters; stop after ``patience``
    evaluations without improvement.

    Args:
        trainer: the Trainer whose run this callback watches (``request_stop`` ends it).
        evaluate: returns validation losses, one per group (B,) (members' prompts) or a
            single one; lower is better.
        params: the tensors whose best values are kept; with several groups, row g of
            each tensor belongs to group g (prompts) and is kept per group.
        every: steps between evaluations.
        patience: evaluations without improvement before stopping.
        start: the validation losses before training (the zero-shot baseline); None to
            evaluate it now.
    """

    def __init__(
        self,
        trainer: Any,
        evaluate: Callable[[], torch.Tensor],
        params: Sequence[torch.Tensor],
        *,
        every: int,
        patience: int,
        start: torch.Tensor | None = None,
    ) -> None:
        self.trainer = trainer
        self.evaluate = evaluate
        self.params = params
        self.every = every
        self.patience = patience
        self.start = (evaluate() if start is None else start).detach().float().cpu()
        self.best = self.start.clone()
        self.best_step = torch.zeros_like(self.best, dtype=torch.long)
        self.kept = [p.detach().clone() for p in params]
        self.stale = 0
        self.diverged = False  # a non-finite validation loss was seen
        self.history: list[tuple[int, float]] = [(0, float(self.start.mean()))]

    def __call__(self, info: Any) -> None:
        if info.step % self.every:
            return
        loss = self.evaluate().detach().float().cpu()
        if not bool(torch.isfinite(loss).all()):
            self.diverged = True
            self.trainer.request_stop()  # diverged: the kept parameters stay the best ones
            return
        self.history.append((info.step, float(loss.mean())))
        better = loss < self.best - 1e-6
        if bool(better.any()):
            self.stale = 0
            for kept, p in zip(self.kept, self.params):
                if self.best.numel() == 1:
                    kept.copy_(p.detach())
                else:
                    kept[better.to(kept.device)] = p.detach()[better.to(p.device)]
            self.best = torch.where(better, loss, self.best)
            self.best_step = torch.where(
                better, torch.full_like(self.best_step, info.step), self.best_step
            )
        else:
            self.stale += 1
            if self.stale >= self.patience:
                self.trainer.request_stop()

    def restore(self) -> None:
        """Put the best kept values back into the parameters."""
        with torch.no_grad():
            for kept, p in zip(self.kept, self.params):
                p.copy_(kept)

    @property
    def improved(self) -> torch.Tensor:
        """Which groups ended better than they started."""
        return self.best < self.start - 1e-6

    def summary(self) -> dict[str, Any]:
        return {
            "start_loss": float(self.start.mean()),
            "best_loss": float(self.best.mean()),
            "best_step": int(self.best_step.max()),
            "evaluations": len(self.history) - 1,
            "improved": bool(self.improved.any()),
        }
