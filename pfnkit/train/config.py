"""TrainConfig: optimisation, batch shape and bookkeeping of a training run."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.config import check_fields

Precision = Literal["auto", "fp32", "bf16"]
OnNonFinite = Literal["stop", "skip"]
# in "skip" mode, this many non-finite steps in a row still stop the run: it has diverged
MAX_SKIPPED_IN_A_ROW = 10


def default_max_context(rows: int) -> int:
    """Most context rows of a table of ``rows`` rows: an eighth (at least one) stays test rows."""
    return rows - max(1, rows // 8)


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        steps: optimizer steps in all (a resumed run continues up to this number).
        batch_size: datasets per step and per process (DDP multiplies it by the world size).
        rows: rows per dataset (context + test).
        min_context: fewest context rows drawn per step.
        max_context: most context rows drawn per step (default: rows - rows // 8).
        small_share: share of micro-batches drawn as small tables instead (0: none). A small
            table has ``small_rows`` rows (contexts of min_context to small_rows -
            small_rows // 8) and at most ``small_features`` features (zero-padded to the
            model's width), so the network also sees many small, narrow tables, at a
            fraction of a full step's cost.
        small_rows: rows per small table (<= rows; None: rows // 3).
        small_features: most features per small table (None: the model's width).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps (default: 5% of steps, at most 1,000).
        min_lr_ratio: the cosine schedule ends at lr * min_lr_ratio.
        grad_clip: clip the global gradient norm to this (0: no clipping).
        accumulate: micro-batches whose gradients are summed into one step.
        precision: "fp32", "bf16" autocast, or "auto" (bf16 on CUDA when supported).
        seed: seeds the model init and, with the step and rank, every batch.
        device: "cpu", "cuda", "cuda:1", ... or "auto".
        checkpoint_every: save a checkpoint every this many steps (and at the end).
        log_every: write a metrics line every this many steps.
        border_samples: prior targets sampled to place the bar-distribution borders.
        on_nonfinite: what a step with a non-finite loss or gradient does: "stop" the run
            with ``TrainingDivergedError`` (the last good checkpoint is kept), or "skip"
            the update and go on (up to 10 such steps in a row, then stop).
        data_workers: processes that sample batches ahead of the loop (0: the loop samples
            them itself). The batches are the same either way; workers keep a GPU fed.
    """

    steps: int = 2000
    batch_size: int = 16
    rows: int = 256
    min_context: int = 1
    max_context: int | None = None
    small_share: float = 0.0
    small_rows: int | None = None
    small_features: int | None = None
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    accumulate: int = 1
    precision: Precision = "auto"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    log_every: int = 10
    border_samples: int = 200_000
    on_nonfinite: OnNonFinite = "stop"
    data_workers: int = 0

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "rows",
            "min_context",
            "accumulate",
            "checkpoint_every",
            "log_every",
            "border_samples",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidConfigError(
                    f"The '{name}' training parameter must be an int >= 1. Got {v!r}."
                )
        w = self.data_workers
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 256:
            raise InvalidConfigError(
                f"The 'data_workers' training parameter must be an int in [0, 256] (0: sample "
                f"in the training process). Got {w!r}."
            )
        if self.rows < 2:
            raise InvalidConfigError(
                f"The 'rows' training parameter must be >= 2 (one context and one test row). "
                f"Got {self.rows}."
            )
        if self.context_range[1] >= self.rows:
            raise InvalidConfigError(
                f"rows ({self.rows}) must be larger than max_context ({self.context_range[1]}) "
                "so that every dataset keeps at least one test row; raise --rows or lower "
                "max_context."
            )
        if self.context_range[0] > self.context_range[1]:
            raise InvalidConfigError(
                f"min_context ({self.min_context}) must be <= max_context "
                f"({self.context_range[1]})."
            )
        if isinstance(self.small_share, bool) or not 0.0 <= self.small_share <= 1.0:
            raise InvalidConfigError(
                f"The 'small_share' training parameter must be a number in [0, 1] (the share "
                f"of small tables; 0: none). Got {self.small_share!r}."
            )
        for name, least, default in (
            ("small_rows", 2, "rows // 3"),
            ("small_features", 1, "the model's width"),
        ):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
                raise InvalidConfigError(
                    f"The '{name}' training parameter must be an int >= {least} or None "
                    f"({default}). Got {v!r}."
                )
        if self.small_share > 0:
            if self.small_table_rows > self.rows:
                raise InvalidConfigError(
                    f"small_rows ({self.small_table_rows}) must be <= rows ({self.rows}); small "
                    "tables are the short ones. Lower small_rows."
                )
            lo, hi = self.small_context_range
            if lo > hi:
                raise InvalidConfigError(
                    f"small_rows ({self.small_table_rows}) leaves contexts of {lo} to {hi} rows; "
                    "raise small_rows above min_context."
                )
        for name in ("lr", "weight_decay", "min_lr_ratio", "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidConfigError(
                    f"The '{name}' training parameter must be a finite number. Got {v!r}; "
                    f"give a number such as {getattr(TrainConfig, name)!r}."
                )
        if not self.lr > 0:
            raise InvalidConfigError(f"The 'lr' training parameter must be > 0. Got {self.lr}.")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise InvalidConfigError("weight_decay and grad_clip must be >= 0.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise InvalidConfigError(f"warmup_steps must be >= 0. Got {self.warmup_steps}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InvalidConfigError(f"min_lr_ratio must be in [0, 1]. Got {self.min_lr_ratio}.")
        if self.on_nonfinite not in ("stop", "skip"):
            raise InvalidConfigError(
                f"on_nonfinite must be 'stop' or 'skip'. Got {self.on_nonfinite!r}."
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InvalidConfigError(
                f"precision must be 'auto', 'fp32' or 'bf16'. Got {self.precision!r}."
            )

    @property
    def context_range(self) -> tuple[int, int]:
        hi = self.max_context if self.max_context is not None else default_max_context(self.rows)
        return self.min_context, hi

    @property
    def small_table_rows(self) -> int:
        """Rows per small table: small_rows, else a third of rows (at least 2)."""
        return self.small_rows if self.small_rows is not None else max(2, self.rows // 3)

    @property
    def small_context_range(self) -> tuple[int, int]:
        """Fewest and most context rows of a small table."""
        return self.min_context, min(
            self.context_range[1], default_max_context(self.small_table_rows)
        )

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(1000, max(1, self.steps // 20))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**parse_fields(cls, d, "train"))


def parse_fields(cls: Any, d: dict[str, Any], section: str) -> dict[str, Any]:
    """Check a recipe table against dataclass ``cls``: every key a field, every value parsed
    against the field's type annotation (``lr = "3e-4"`` -> 3e-4, ``steps = "2e3"`` -> 2000).

    A value that does not fit names the field, what it must be, what was given and the fix.
    """
    if not isinstance(d, dict):
        raise InvalidConfigError(
            f"[{section}] must be a table of fields. Got {d!r}; write it as [{section}]."
        )
    d = check_fields(cls, d, section)
    hints = typing.get_type_hints(cls)
    return {key: _parse_value(hints[key], value, key, section) for key, value in d.items()}


def _parse_value(hint: Any, value: Any, key: str, section: str) -> Any:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
        args, origin = typing.get_args(hint), typing.get_origin(hint)

    def bad(what: str, example: str) -> InvalidConfigError:
        return InvalidConfigError(
            f"The '{key}' field in [{section}] must be {what}. Got {value!r} (a "
            f"{type(value).__name__}); write e.g. {key} = {example}."
        )

    text = value.strip() if isinstance(value, str) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise bad("a bool", "true")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number: Any = value
        if text is not None:
            try:
                return int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise bad("an int", "100") from None
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number)
        raise bad("an int", "100")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if text is not None:
            try:
                return float(text)
            except ValueError:
                pass
        raise bad("a float", "0.001")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise InvalidConfigError(
                f"The '{key}' field in [{section}] must be one of {allowed}. Got {value!r}."
            )
        return value
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string", '"name"')
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad("a table of options", "{ top_k = 2 }")
        return value
    return value
