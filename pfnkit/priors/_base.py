"""Batch, BatchShape, the Prior protocol, hyperpriors and per-step seeding.

Shape legend: B batch, N rows, F features.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from pfnkit.exceptions import BatchError, InvalidConfigError

Task = Literal["regression", "classification"]
TASKS = ("regression", "classification")


def check_task(owner: str, task: str) -> None:
    """Raise naming ``owner`` unless ``task`` is 'regression' or 'classification'."""
    if task not in TASKS:
        raise InvalidConfigError(
            f"{owner}.task must be 'regression' or 'classification'. Got {task!r}."
        )


@dataclass(frozen=True)
class BatchShape:
    """What the trainer asks a prior for: B datasets of N rows with up to F features."""

    batch_size: int
    n_rows: int
    n_features: int
    single_eval_pos: int

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_rows", "n_features"):
            if getattr(self, name) < 1:
                raise InvalidConfigError(
                    f"BatchShape.{name} must be >= 1. Got {getattr(self, name)} instead."
                )
        if not 0 < self.single_eval_pos < self.n_rows:
            raise InvalidConfigError(
                "BatchShape.single_eval_pos must satisfy 0 < single_eval_pos < n_rows "
                f"(at least one context row and one test row). Got {self.single_eval_pos} "
                f"with n_rows={self.n_rows}."
            )


@dataclass
class Batch:
    """B synthetic datasets, batch-first.

    Attributes:
        x: (B, N, F) features; features past ``n_features[b]`` are zero.
        y: (B, N) targets as the model sees them in the context rows.
        target_y: (B, N) targets the loss is computed on (usually equal to ``y``).
        single_eval_pos: rows ``[:single_eval_pos]`` are the context, the rest are test rows.
            0 only for prefix-only batches (prompt tuning), which then carry ``stats``.
        n_features: (B,) int64, used features per dataset (None: all F).
        n_classes: (B,) int64, classes per dataset for classification (None: regression).
        extras: prior-specific tensors (hyperparameters, treatment, curve ids...). The keys
            in ``pfnkit.model.transformer.MODEL_EXTRAS`` reach the network (see
            ``PFN.inputs_of``): ``stats`` (B, 2, 1, F), the feature mean and std that
            ``normalize_x`` uses when the context has no real rows.
    """

    x: torch.Tensor
    y: torch.Tensor
    target_y: torch.Tensor
    single_eval_pos: int
    n_features: torch.Tensor | None = None
    n_classes: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[1])

    def validate(self) -> Batch:
        """Check shapes and ranges; raise BatchError naming the field. Returns self."""
        if self.x.dim() != 3:
            raise BatchError(f"Batch.x must be (B, N, F). Got shape {tuple(self.x.shape)}.")
        b, n, f = self.x.shape
        for name in ("y", "target_y"):
            t = getattr(self, name)
            if tuple(t.shape) != (b, n):
                raise BatchError(
                    f"Batch.{name} must be (B, N) = ({b}, {n}) to match x. Got {tuple(t.shape)}."
                )
        lo = 0 if "stats" in self.extras else 1  # 0: the context is a model's learned prefix
        if not lo <= self.single_eval_pos < n:
            raise BatchError(
                f"Batch.single_eval_pos must be in [{lo}, {n - 1}] for N={n}. "
                f"Got {self.single_eval_pos}."
            )
        for name in ("n_features", "n_classes"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != (b,):
                raise BatchError(f"Batch.{name} must be ({b},). Got {tuple(t.shape)}.")
        if self.n_features is not None and (
            int(self.n_features.min()) < 1 or int(self.n_features.max()) > f
        ):
            raise BatchError(f"Batch.n_features must lie in [1, {f}].")
        if self.n_classes is not None:
            if int(self.n_classes.min()) < 2:
                raise BatchError("Batch.n_classes must be >= 2.")
            ty = self.target_y
            if bool((ty < 0).any()) or bool((ty >= self.n_classes[:, None]).any()):
                raise BatchError("Batch.target_y holds class ids outside [0, n_classes).")
        for key, t in self.extras.items():
            if t.shape[:1] != (b,):
                raise BatchError(f"Batch.extras[{key!r}] must be batch-first with size {b}.")
        return self

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            x=self.x.to(device),
            y=self.y.to(device),
            target_y=self.target_y.to(device),
            n_features=move(self.n_features),
            n_classes=move(self.n_classes),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


@runtime_checkable
class Prior(Protocol):
    """A distribution over datasets.

    A prior is a frozen dataclass whose typed fields are its hyperparameters; a field may
    hold a fixed value or a hyperprior (Uniform, LogUniform, Choice) drawn per dataset.
    ``task`` is "regression" or "classification"; classification priors also expose
    ``max_classes``. Register it in ``PRIORS`` to train it by name, or name it in a recipe
    as "package.module:ClassName".
    """

    task: Task

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch: ...


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed that depends on (seed, step, rank) and mixes them well."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, step, rank])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 1 << 31]))


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, step, rank): reproducible runs and DDP workers."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


# ---------------------------------------------------------------- hyperpriors


@dataclass(frozen=True)
class Uniform:
    """Draw a value uniformly from [low, high] for every dataset."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise InvalidConfigError(
                f"Uniform hyperprior needs low <= high. Got low={self.low}, high={self.high}."
            )

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class LogUniform:
    """Draw a value log-uniformly from [low, high] (both > 0) for every dataset."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise InvalidConfigError(
                f"LogUniform hyperprior needs 0 < low <= high. Got low={self.low}, "
                f"high={self.high}."
            )

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        lo, hi = math.log(self.low), math.log(self.high)
        return torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator))


@dataclass(frozen=True)
class Choice:
    """Draw one of ``values`` (with optional ``weights``) for every dataset."""

    values: tuple[float, ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.values:
            raise InvalidConfigError("Choice hyperprior needs at least one value.")
        if self.weights is not None and len(self.weights) != len(self.values):
            raise InvalidConfigError(
                f"Choice hyperprior has {len(self.values)} values but "
                f"{len(self.weights)} weights; give one weight per value."
            )

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        w = torch.ones(len(self.values)) if self.weights is None else torch.tensor(self.weights)
        idx = torch.multinomial(w.double(), n, replacement=True, generator=generator)
        return torch.tensor(self.values, dtype=torch.float32)[idx]


Hyperprior = Uniform | LogUniform | Choice
HYPERPRIORS: dict[str, type] = {"uniform": Uniform, "log_uniform": LogUniform, "choice": Choice}
Param = float | Hyperprior


def draw(value: Param, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) float32 values of a field that holds a constant or a hyperprior."""
    if isinstance(value, Uniform | LogUniform | Choice):
        return value.sample(n, generator).float()
    return torch.full((n,), float(value))


def hyperprior_to_dict(value: Any) -> Any:
    """Recipe form of a field value: {'log_uniform': [low, high]} or the plain value."""
    if isinstance(value, Uniform | LogUniform):
        key = "uniform" if isinstance(value, Uniform) else "log_uniform"
        return {key: [value.low, value.high]}
    if isinstance(value, Choice):
        out: dict[str, Any] = {"choice": list(value.values)}
        if value.weights is not None:
            out["weights"] = list(value.weights)
        return out
    return value


def hyperprior_from_dict(field_name: str, value: Any) -> Any:
    """Parse the recipe form back; plain values pass through."""
    if not isinstance(value, dict):
        return value
    keys = set(value) - {"weights"}
    if len(keys) != 1 or next(iter(keys)) not in HYPERPRIORS:
        raise InvalidConfigError(
            f"Field {field_name!r}: a hyperprior is written as one of "
            "{uniform = [low, high]}, {log_uniform = [low, high]} or "
            f"{{choice = [v1, v2, ...], weights = [...]}}. Got {value!r}."
        )
    kind = next(iter(keys))
    args = value[kind]
    if kind == "choice":
        weights = value.get("weights")
        return Choice(tuple(float(v) for v in args), None if weights is None else tuple(weights))
    if not isinstance(args, list | tuple) or len(args) != 2:
        raise InvalidConfigError(f"Field {field_name!r}: {kind} takes [low, high]. Got {args!r}.")
    return HYPERPRIORS[kind](float(args[0]), float(args[1]))


def to_classes(
    y: torch.Tensor, max_classes: int, generator: torch.Generator, min_classes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn continuous targets (B, N) into class ids by random rank thresholds.

    Each dataset draws its class count c in [min_classes, max_classes], takes c - 1
    thresholds from its own targets (so every class is likely to occur) and permutes the
    class ids so that the labels carry no order. Returns (class ids as float (B, N),
    n_classes (B,)).
    """
    b, n = y.shape
    c = torch.randint(min_classes, max_classes + 1, (b,), generator=generator)
    # (B, max_classes - 1) candidate thresholds from random rows; unused ones are +inf
    rows = torch.randint(0, n, (b, max_classes - 1), generator=generator)
    thr = torch.gather(y, 1, rows)
    used = torch.arange(max_classes - 1)[None, :] < (c[:, None] - 1)
    thr = torch.where(used, thr, torch.full_like(thr, math.inf))
    ids = (y[:, :, None] > thr[:, None, :]).sum(-1)  # (B, N) in [0, c)
    # a random permutation of 0..c-1 per dataset: rank the first c random keys
    keys = torch.rand(b, max_classes, generator=generator)
    keys = torch.where(torch.arange(max_classes)[None, :] < c[:, None], keys, 2.0)
    relabel = torch.argsort(torch.argsort(keys, dim=1), dim=1)  # (B, C) ranks
    out = torch.gather(relabel, 1, ids)
    return out.float(), c


def draw_inputs(
    shape: BatchShape, min_features: int, generator: torch.Generator, dist: str = "normal"
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, F) from "uniform" [0, 1] or "normal", with each dataset using d in
    [min_features, F] features (the rest zero); returns (x, n_features (B,))."""
    b, n, f = shape.batch_size, shape.n_rows, shape.n_features
    n_feat = torch.randint(min(min_features, f), f + 1, (b,), generator=generator)
    if dist == "uniform":
        x = torch.rand(b, n, f, generator=generator)
    else:
        x = torch.randn(b, n, f, generator=generator)
    return x * (torch.arange(f)[None, None, :] < n_feat[:, None, None]), n_feat


def finish_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    shape: BatchShape,
    n_features: torch.Tensor,
    extras: dict[str, torch.Tensor],
    task: Task,
    max_classes: int,
    generator: torch.Generator,
) -> Batch:
    """Wrap continuous targets into a Batch, turning them into classes for classification."""
    n_classes = None
    if task == "classification":
        y, n_classes = to_classes(y, max_classes, generator)
    return Batch(
        x=x,
        y=y,
        target_y=y.clone(),
        single_eval_pos=shape.single_eval_pos,
        n_features=n_features,
        n_classes=n_classes,
        extras=extras,
    )
