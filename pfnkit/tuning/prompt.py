"""Learned context (TuneTables): a few prompt tokens trained on a frozen PFN.

Each member gets P prefix tokens in embedding space. A token is a learned vector plus the
frozen label embedding of a fixed class (classification, balanced over the classes) or of
a learned target value (regression). They start as the embeddings of P training rows, so
before any step the prompt is exactly a P-row subsample context. The Trainer then trains
the prompts only (the PFN stays frozen), with the table's rows as queries, and an early
stopping callback on a validation split keeps each member's best prompt. At the end the
prompts' keys/values are cached, so predicting costs what a P-row context costs.

Shape legend: B members, P prompt tokens, Q query rows, f features, E d_model, K outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from pfnkit.exceptions import TrainingDivergedError
from pfnkit.tuning._base import (
    ContextProblem,
    adaptation_config,
    check_float,
    check_int,
    stratified_rows,
    stratified_split,
)
from pfnkit.tuning.early_stopping import EarlyStopping
from pfnkit.tuning.source import TableSource


class PromptedPFN(nn.Module):
    """A frozen PFN with B members' learned prompts in front of every context.

    Only ``prompt`` (B, P, E) and, for regression, ``prompt_y`` (B, P) are trainable.
    Batch item b uses member b's prompt.
    """

    def __init__(
        self,
        pfn: Any,
        prompt: torch.Tensor,
        labels: torch.Tensor,
        stats: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        super().__init__()
        self.pfn = pfn
        for p in self.pfn.parameters():
            p.requires_grad_(False)
        self.prompt = nn.Parameter(prompt.detach().clone())
        regression = pfn.config.task == "regression"
        # regression prompts learn their target values too; class ids stay fixed
        self.prompt_y = nn.Parameter(labels.float().clone(), requires_grad=regression)
        self.stats_mean: torch.Tensor
        self.stats_std: torch.Tensor
        self.register_buffer("stats_mean", stats[0].detach().clone())
        self.register_buffer("stats_std", stats[1].detach().clone())

    def train(self, mode: bool = True) -> PromptedPFN:
        super().train(mode)
        self.pfn.eval()  # the frozen PFN is shared: it never leaves eval mode
        return self

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in (self.prompt, self.prompt_y) if p.requires_grad]

    def tokens(self) -> torch.Tensor:
        """The prompts as context tokens (B, P, E): vector + label embedding."""
        return self.prompt + self.pfn.y_encoder(self.prompt_y)

    def forward(
        self,
        x: torch.Tensor,
        y_ctx: torch.Tensor,
        *,
        n_features: torch.Tensor | None = None,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if stats is None:
            stats = (self.stats_mean, self.stats_std)
        return self.pfn(x, y_ctx, n_features=n_features, prefix=self.tokens(), stats=stats)

    def inputs_of(self, batch: Any) -> dict[str, Any]:
        return self.pfn.inputs_of(batch)

    def loss_from_logits(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return self.pfn.loss_from_logits(logits, batch)

    def row_losses(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        """(B,) mean loss per member (for per-member early stopping)."""
        return member_losses(self.pfn, logits, batch)

    def aux_loss(self) -> torch.Tensor | None:
        return None  # the frozen PFN's FFN aux losses do not train a prompt

    @torch.no_grad()
    def encode(self) -> Any:
        """The prompts' keys/values: a cache ``predict_cached`` runs test rows against."""
        b = int(self.prompt.shape[0])
        f = int(self.stats_mean.shape[-1])
        empty_x = self.prompt.new_zeros(b, 0, f)
        empty_y = self.prompt.new_zeros(b, 0)
        return self.pfn.encode_context(
            empty_x, empty_y, prefix=self.tokens(), stats=(self.stats_mean, self.stats_std)
        )


def member_losses(pfn: Any, logits: torch.Tensor, batch: Any) -> torch.Tensor:
    """Mean loss per dataset (B,) of logits (B, M, K) against the batch's query targets."""
    from pfnkit.model.heads import classification_loss

    target = batch.target_y[:, batch.single_eval_pos :]
    if pfn.config.task == "classification":
        return classification_loss(logits, target, batch.n_classes).mean(1)
    return pfn.bar_distribution.nll(logits, target).mean(1)


@dataclass(frozen=True)
class TunedContext:
    """TuneTables-style learned context on the frozen PFN.

    Args:
        n_tokens: prompt tokens per member (the context length at predict time).
        n_prompts: members that get a prompt (a small ensemble; the estimator's other
            members are not used with this strategy).
        time_budget: seconds of prompt training in all (early stopping may end sooner).
        max_steps: at most this many optimizer steps.
        lr: Adam learning rate of the prompt tokens.
        batch_rows: query rows per step and member.
        validation_fraction: share of the training rows held out for early stopping.
        patience: evaluations without improvement before stopping (one every 10 steps).
    """

    n_tokens: int = 64
    n_prompts: int = 3
    time_budget: float = 30.0
    max_steps: int = 300
    lr: float = 0.03
    batch_rows: int = 256
    validation_fraction: float = 0.2
    patience: int = 5
    name = "tuned"

    @property
    def max_members(self) -> int:
        return self.n_prompts

    def for_members(self, n_members: int) -> TunedContext:
        """The same options with one prompt per member (inside a MixedContext)."""
        return replace(self, n_prompts=n_members)

    def __post_init__(self) -> None:
        owner = "TunedContext"
        check_int(owner, "n_tokens", self.n_tokens, 1)
        check_int(owner, "n_prompts", self.n_prompts, 1)
        check_float(owner, "time_budget", self.time_budget, 0.0, open_low=True)
        check_int(owner, "max_steps", self.max_steps, 1)
        check_float(owner, "lr", self.lr, 0.0, open_low=True)
        check_int(owner, "batch_rows", self.batch_rows, 1)
        check_float(owner, "validation_fraction", self.validation_fraction, 0.0, 1.0, open_low=True)
        check_int(owner, "patience", self.patience, 1)

    def fit(self, problem: ContextProblem) -> TunedFitted:
        from pfnkit.train import Trainer

        t0 = time.perf_counter()
        model = problem.model
        b = min(self.n_prompts, problem.n_members)
        prob = problem.members(slice(0, b))
        classification = problem.task == "classification"
        rng = np.random.RandomState(problem.seed % 2**31)
        train_idx, val_idx = stratified_split(
            prob.y[0], self.validation_fraction, classification, rng
        )
        if train_idx.size < 2 or val_idx.size < 1:
            from pfnkit.exceptions import InvalidConfigError

            raise InvalidConfigError(
                f"context='tuned' needs at least 4 training rows (2 of one class) to hold out "
                f"a validation split; got {prob.n_rows}. Use context='subsample' for tiny "
                "tables."
            )
        mean, std = prob.stats()
        stats = (mean, std)
        n_tokens = min(self.n_tokens, train_idx.size)
        prompt, labels = _initial_prompt(prob, train_idx, n_tokens, stats, rng)
        module = PromptedPFN(model, prompt, labels, stats).to(problem.device)
        stats_t = torch.stack([mean, std], dim=1)  # (B, 2, 1, f)

        def source(rows: np.ndarray, queries: int | None = None) -> TableSource:
            return TableSource(
                prob.x[:, rows],
                prob.y[:, rows],
                problem.task,
                problem.n_classes,
                layout="prefix",
                stats=stats_t,
                queries=queries,
            )

        train_src = source(train_idx, queries=min(self.batch_rows, train_idx.size))
        n_val = min(val_idx.size, 2048)
        val_batch = source(val_idx).batch(np.arange(b), np.tile(np.arange(n_val), (b, 1)), 0)
        val_batch = val_batch.to(problem.device)

        def evaluate() -> torch.Tensor:
            with torch.no_grad():
                return module.row_losses(module(**module.inputs_of(val_batch)), val_batch)

        config = adaptation_config(
            problem,
            steps=self.max_steps,
            batch_size=b,
            rows=max(2, min(self.batch_rows, train_idx.size)),
            lr=self.lr,
            min_lr_ratio=0.1,
            grad_clip=1.0,
        )
        trainer = Trainer(train_src, module, config, parameters=module.trainable())
        stopper = EarlyStopping(
            trainer, evaluate, module.trainable(), every=10, patience=self.patience
        )
        left = self.time_budget - (time.perf_counter() - t0)
        diverged = False
        try:
            trainer.run(stopper, max_seconds=max(0.0, left))
        except TrainingDivergedError:
            diverged = True  # restore() puts back the best finite prompts seen
        stopper.restore()
        cache = module.encode()
        report = {
            **stopper.summary(),
            "steps": trainer.step,
            "n_tokens": n_tokens,
            "diverged": diverged or stopper.diverged,
        }
        trained = sum(p.numel() for p in module.trainable())
        report["trained_params"] = trained
        report["trained_share"] = trained / max(1, sum(p.numel() for p in model.parameters()))
        report["seconds"] = time.perf_counter() - t0
        return TunedFitted(model, cache, problem.device, n_tokens, b, report)


def _initial_prompt(
    prob: ContextProblem,
    train_idx: np.ndarray,
    n_tokens: int,
    stats: tuple[torch.Tensor, torch.Tensor],
    rng: np.random.RandomState,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts that equal a stratified n_tokens-row subsample context of each member."""
    model = prob.model
    classification = prob.task == "classification"
    xs, ys = [], []
    for b in range(prob.n_members):
        rows = train_idx[stratified_rows(prob.y[b, train_idx], n_tokens, classification, rng)]
        xs.append(prob.x[b, rows])
        ys.append(prob.y[b, rows])
    x = prob.tensor(np.stack(xs))
    with torch.no_grad():
        vec = model.x_encoder(x, None, stats=stats)  # (B, P, E); the label part is added later
    return vec, prob.tensor(np.stack(ys))


@dataclass
class TunedFitted:
    """The tuned prompts' cached keys/values; predict costs what a P-row context costs."""

    model: Any
    cache: Any
    device: str
    n_context_rows: int
    n_members: int
    report: dict[str, Any]

    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        from pfnkit.tuning._base import chunked_predict

        return chunked_predict(self.model, self.cache, x_test[: self.n_members], self.device)
