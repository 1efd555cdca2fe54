"""PFNConfig: every number that decides the shape of a PFN, round-trippable to a dict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import Task, check_task
from pfnkit.registry import closest

Tokens = Literal["row", "cell"]
TOKENS = ("row", "cell")


@dataclass(frozen=True)
class PFNConfig:
    """Architecture of a PFN transformer.

    Args:
        task: "regression" (bar-distribution head) or "classification".
        n_features: with row tokens, the most input features the network reads (fewer are
            zero-padded and rescaled); with cell tokens, only the widest table the prior
            draws in training (inference reads any number of features).
        d_model: width of the residual stream.
        n_layers: transformer layers.
        n_heads: attention heads; must divide d_model.
        d_ffn: hidden width of the FFN blocks (default 2 * d_model).
        ffn: FFN block name from ``FFN_BLOCKS`` ("mlp", "glu", ...).
        ffn_options: typed options passed to the FFN block constructor.
        n_classes: largest class count (classification).
        n_bars: buckets of the bar-distribution head (regression).
        dropout: dropout on attention and FFN outputs.
        attention: attention backend from ``ATTENTION_BACKENDS`` ("sdpa", "math").
        normalize_x: z-score each feature with its context rows' statistics inside the
            model (for priors and data whose feature scales vary, such as tables).
        attention_chunk: process attention queries in chunks of this many rows (0: all
            at once); bounds peak memory for long contexts without changing results.
        n_row_inputs: width of an extra per-row input (``row_inputs``, (B, N, R)) that is
            embedded on its own and added to every row's token, never normalised, padded
            or mixed with the features (a treatment indicator, or what a query row asks
            for); 0: none. A prior that needs one says so in its ``n_row_inputs``.
        tokens: "row": one token per row (a linear embedding of its padded feature
            vector); "cell": one token per cell plus a target token per row, attention
            between the features of a row and across the rows of each feature column
            (TabPFN v2's layout; no feature limit, cost grows with rows x features).
    """

    task: Task = "regression"
    n_features: int = 1
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ffn: int | None = None
    ffn: str = "mlp"
    ffn_options: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 10
    n_bars: int = 1000
    dropout: float = 0.0
    attention: str = "sdpa"
    normalize_x: bool = False
    attention_chunk: int = 0
    n_row_inputs: int = 0
    tokens: Tokens = "row"

    def __post_init__(self) -> None:
        check_task("PFNConfig", self.task)
        for name in ("n_features", "d_model", "n_layers", "n_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidConfigError(f"PFNConfig.{name} must be an int >= 1. Got {v!r}.")
        if self.d_model % self.n_heads:
            raise InvalidConfigError(
                f"PFNConfig.n_heads must divide d_model. Got d_model={self.d_model}, "
                f"n_heads={self.n_heads}; try n_heads={_divisor_near(self.d_model, self.n_heads)}."
            )
        if self.d_ffn is not None and self.d_ffn < 1:
            raise InvalidConfigError(f"PFNConfig.d_ffn must be >= 1. Got {self.d_ffn}.")
        if (
            not isinstance(self.n_row_inputs, int)
            or isinstance(self.n_row_inputs, bool)
            or self.n_row_inputs < 0
        ):
            raise InvalidConfigError(
                f"PFNConfig.n_row_inputs must be an int >= 0. Got {self.n_row_inputs!r}."
            )
        if self.tokens not in TOKENS:
            raise InvalidConfigError(
                f"PFNConfig.tokens must be one of {', '.join(map(repr, TOKENS))}. "
                f"Got {self.tokens!r}."
            )
        if self.tokens == "cell" and self.n_row_inputs:
            raise InvalidConfigError(
                "PFNConfig.n_row_inputs must be 0 with tokens='cell' (the cell model takes no "
                f"per-row inputs). Got {self.n_row_inputs}; use tokens='row'."
            )
        if self.n_classes < 2:
            raise InvalidConfigError(f"PFNConfig.n_classes must be >= 2. Got {self.n_classes}.")
        if self.n_bars < 2:
            raise InvalidConfigError(f"PFNConfig.n_bars must be >= 2. Got {self.n_bars}.")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidConfigError(f"PFNConfig.dropout must be in [0, 1). Got {self.dropout}.")
        from pfnkit.model.attend import ATTENTION_BACKENDS
        from pfnkit.model.ffn import FFN_BLOCKS

        FFN_BLOCKS.get(self.ffn)  # unknown names fail here, listing the known ones
        ATTENTION_BACKENDS.get(self.attention)

    @property
    def ffn_dim(self) -> int:
        return self.d_ffn if self.d_ffn is not None else 2 * self.d_model

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else self.n_bars

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PFNConfig:
        return cls(**check_fields(cls, d, "model"))


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - k))


def check_fields(cls: Any, d: dict[str, Any], section: str) -> dict[str, Any]:
    """Return ``d`` if every key is a field of dataclass ``cls``; else name the bad one."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            hint = closest(key, names)
            raise InvalidConfigError(
                f"Unknown field {key!r} in [{section}]. Allowed: {', '.join(names)}."
                + (f" Did you mean {hint!r}?" if hint else "")
            )
    return dict(d)
