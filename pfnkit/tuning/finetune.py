"""End-to-end fine-tuning of the PFN on the user's table (LoCalPFN; TabPFN's fine-tuning).

A copy of the PFN is trained by the one Trainer on datasets drawn from the table's
training split, laid out as the context strategy will use them at predict time (local
kNN contexts for ``KNNContext``, random contexts otherwise). An early-stopping callback on
a validation split keeps the best weights; when they do not beat the zero-shot network on
that split, the zero-shot network is kept. The weights on disk are never touched.

Shape legend: B members, n rows, k context rows, f features.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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
from pfnkit.tuning.prompt import member_losses
from pfnkit.tuning.source import TableSource

EVAL_TOKENS = 32_768  # rows per validation forward pass


@dataclass(frozen=True)
class FineTune:
    """How ``fine_tune=`` trains the PFN on the user's table.

    Args:
        time_budget: seconds of training at most (evaluations included).
        lr: AdamW learning rate (constant; fine-tuning needs a small one).
        max_steps: optimizer steps at most.
        batch_size: datasets per step.
        validation_fraction: share of the training rows held out for early stopping and
            for the zero-shot comparison.
        patience: evaluations without improvement before stopping.
        eval_every: steps between evaluations.
        min_rows: below this many training rows fine-tuning is skipped (with a warning):
            the validation split would be too small to tell a better network from noise.
    """

    time_budget: float = 60.0
    lr: float = 3e-5
    max_steps: int = 2000
    batch_size: int = 8
    validation_fraction: float = 0.2
    patience: int = 4
    eval_every: int = 10
    min_rows: int = 100

    def __post_init__(self) -> None:
        owner = "FineTune"
        check_float(owner, "time_budget", self.time_budget, 0.0, open_low=True)
        check_float(owner, "lr", self.lr, 0.0, open_low=True)
        check_int(owner, "max_steps", self.max_steps, 1)
        check_int(owner, "batch_size", self.batch_size, 1)
        check_float(owner, "validation_fraction", self.validation_fraction, 0.0, 1.0, open_low=True)
        check_int(owner, "patience", self.patience, 1)
        check_int(owner, "eval_every", self.eval_every, 1)
        check_int(owner, "min_rows", self.min_rows, 4)


def fine_tune(problem: ContextProblem, strategy: Any, options: FineTune) -> tuple[Any, dict]:
    """A fine-tuned copy of ``problem.model``, or the model itself when tuning did not help.

    Returns:
        (model, report) where report says what happened (losses, steps, seconds, kept).
    """
    from pfnkit.train import Trainer

    t0 = time.perf_counter()
    model = problem.model
    if problem.n_rows < options.min_rows:
        warnings.warn(
            f"fine_tune needs at least {options.min_rows} training rows (FineTune.min_rows) "
            f"to validate against; got {problem.n_rows}. Using the zero-shot PFN.",
            UserWarning,
            stacklevel=4,
        )
        return model, {"kept": "zero-shot", "reason": "too few rows"}
    classification = problem.task == "classification"
    rng = np.random.RandomState(problem.seed % 2**31)
    train_idx, val_idx = stratified_split(
        problem.y[0], options.validation_fraction, classification, rng
    )
    train, val = problem.rows(train_idx), problem.rows(val_idx)
    local = getattr(strategy, "name", "") == "knn"
    k = min(strategy.n_neighbours(train), train.n_rows - 1) if local else 0
    source, val_batches = _layout(train, val, k, rng, local)

    def evaluate_with(m: Any) -> torch.Tensor:
        losses, weights = [], []
        with torch.no_grad():
            for batch in val_batches:
                batch = batch.to(problem.device)
                per = member_losses(m, m(**m.inputs_of(batch)), batch)
                losses.append(per.sum())
                weights.append(per.numel())
        return (torch.stack(losses).sum() / sum(weights)).reshape(1)

    start = evaluate_with(model)
    tuned = copy.deepcopy(model)
    for p in tuned.parameters():
        p.requires_grad_(True)
    rows = min(train.n_rows, problem.context_limit + max(1, problem.context_limit // 8))
    config = adaptation_config(
        problem,
        steps=options.max_steps,
        batch_size=options.batch_size,
        rows=max(2, rows),
        min_context=max(1, min(16, rows // 4)),
        lr=options.lr,
        min_lr_ratio=1.0,
    )
    trainer = Trainer(source, tuned, config)
    stopper = EarlyStopping(
        trainer,
        lambda: evaluate_with(tuned),
        list(tuned.parameters()),
        every=options.eval_every,
        patience=options.patience,
        start=start,
    )
    left = options.time_budget - (time.perf_counter() - t0)
    diverged = False
    if left > 0:
        try:
            trainer.run(stopper, max_seconds=left)
        except TrainingDivergedError:
            diverged = True  # the kept (best validated) weights are still finite
    report: dict[str, Any] = {
        "diverged": diverged or stopper.diverged,
        **stopper.summary(),
        "steps": trainer.step,
        "seconds": time.perf_counter() - t0,
        "layout": source.layout,
    }
    if not bool(stopper.improved.all()):
        report["kept"] = "zero-shot"
        return model, report
    stopper.restore()
    tuned.eval()
    for p in tuned.parameters():
        p.requires_grad_(False)
    report["kept"] = "fine-tuned"
    return tuned, report


def _layout(
    train: ContextProblem, val: ContextProblem, k: int, rng: np.random.RandomState, local: bool
) -> tuple[TableSource, list[Any]]:
    """The training source and fixed validation batches, laid out like predict time."""
    b = train.n_members
    classification = train.task == "classification"
    n_val = min(val.n_rows, 1024)
    if local and k >= 1:
        from pfnkit.tuning.knn import DistanceSpace, _neighbours

        n_q = min(train.n_rows, 4096)
        q_rows = np.sort(rng.choice(train.n_rows, n_q, replace=False))
        neigh, val_neigh = [], []
        for m in range(b):
            space = DistanceSpace(train.x[m], train.categorical[m])
            z = space(train.x[m])
            index = _neighbours(z, k + 1)
            nb = index.kneighbors(z[q_rows], return_distance=False)
            # drop each query itself (the first neighbour unless duplicates tie)
            not_self = nb != q_rows[:, None]
            nb = np.stack([row[keep][:k] for row, keep in zip(nb, not_self)])
            neigh.append(nb)
            val_neigh.append(index.kneighbors(space(val.x[m, :n_val]), k, return_distance=False))
        source = TableSource(
            train.x,
            train.y,
            train.task,
            train.n_classes,
            layout="local",
            neighbours=np.stack(neigh),
            local_rows=q_rows,
        )
        # validation: each held-out row with its k nearest training rows, member by member
        per = max(1, EVAL_TOKENS // (k + 1))
        batches = []
        for m in range(b):
            for s in range(0, n_val, per):
                ctx_rows = val_neigh[m][s : s + per]
                x = np.concatenate([train.x[m][ctx_rows], val.x[m, s : s + per, None]], axis=1)
                y = np.concatenate([train.y[m][ctx_rows], val.y[m, s : s + per, None]], axis=1)
                batches.append(_dataset_batch(x, y, k, train))
        return source, batches
    source = TableSource(train.x, train.y, train.task, train.n_classes, layout="random")
    n_ctx = min(train.n_rows, train.context_limit)
    xs, ys = [], []
    for m in range(b):
        rows = stratified_rows(train.y[m], n_ctx, classification, rng)
        xs.append(np.concatenate([train.x[m, rows], val.x[m, :n_val]]))
        ys.append(np.concatenate([train.y[m, rows], val.y[m, :n_val]]))
    return source, [_dataset_batch(np.stack(xs), np.stack(ys), n_ctx, train)]


def _dataset_batch(x: np.ndarray, y: np.ndarray, sep: int, problem: ContextProblem) -> Any:
    from pfnkit.priors._base import Batch

    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    n_classes = None
    if problem.task == "classification":
        n_classes = torch.full((x.shape[0],), max(2, problem.n_classes), dtype=torch.long)
    return Batch(x=xt, y=yt, target_y=yt.clone(), single_eval_pos=sep, n_classes=n_classes)
