"""The PFN transformer with train/test-split attention.

Every row attends to the context rows only (queries for all N rows, keys and values for
the first Nc), so test rows never see each other and no positional encoding exists:
permuting context rows leaves predictions unchanged.

Shape legend: B batch, N rows, Nc context rows, M = N - Nc test rows, F features,
H heads, D head dim, E d_model, K outputs, R per-row inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.attend import attend
from pfnkit.model.config import PFNConfig
from pfnkit.model.encoders import FeatureEncoder, TargetEncoder
from pfnkit.model.ffn import FFNBlock, build_ffn
from pfnkit.model.heads import BarDistribution, classification_loss, mask_classes

MODEL_EXTRAS = ("stats", "row_inputs")  # Batch.extras keys forward() takes; see inputs_of


def _extra_value(key: str, value: Any) -> Any:
    if key == "stats":  # stored batch-first as one (B, 2, 1, F) tensor: mean and std
        return (value[:, 0], value[:, 1]) if isinstance(value, torch.Tensor) else tuple(value)
    return value


@dataclass
class ContextCache:
    """A context encoded once: per-layer keys/values (B, H, Nc, D) and feature statistics."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    stats: tuple[torch.Tensor, torch.Tensor] | None
    n_features: torch.Tensor | None

    @property
    def n_ctx(self) -> int:
        return int(self.kv[0][0].shape[2])


class SplitAttention(nn.Module):
    """Multi-head attention whose keys and values come from the context rows only."""

    def __init__(
        self, d_model: int, n_heads: int, backend: str, dropout: float, chunk_rows: int = 0
    ) -> None:
        super().__init__()
        self.chunk_rows = chunk_rows
        self.n_heads = n_heads
        self.backend = backend
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor, n_ctx: int, first_query: int = 0) -> torch.Tensor:
        """Attend rows ``[first_query:]`` of h (B, N, E) to its first n_ctx rows."""
        k, v = self.context_kv(h[:, :n_ctx])
        return self.attend_kv(h[:, first_query:], k, v)

    def context_kv(self, h_ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, Nc, D) of the context rows h_ctx (B, Nc, E)."""
        b, n_ctx, e = h_ctx.shape
        kv = self.kv(h_ctx).view(b, n_ctx, 2, self.n_heads, e // self.n_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, Nc, D)
        return k, v

    def attend_kv(
        self,
        hq: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries from hq (B, N, E) attend to given keys/values (only where ``mask``, when
        given, is True); returns (B, N, E)."""
        b, n, e = hq.shape
        q = self.q(hq).view(b, n, self.n_heads, e // self.n_heads).transpose(1, 2)  # (B,H,N,D)
        p = self.dropout if self.training else 0.0
        o = attend(
            q, k, v, backend=self.backend, dropout_p=p, chunk_rows=self.chunk_rows, mask=mask
        )
        return self.out(o.transpose(1, 2).reshape(b, n, e))


class PFNLayer(nn.Module):
    """Pre-norm layer: h + attn(norm(h)), then h + ffn(norm(h))."""

    def __init__(self, config: PFNConfig) -> None:
        super().__init__()
        e = config.d_model
        self.norm1 = nn.LayerNorm(e)
        self.attn = SplitAttention(
            e, config.n_heads, config.attention, config.dropout, config.attention_chunk
        )
        self.norm2 = nn.LayerNorm(e)
        self.ffn: FFNBlock = build_ffn(config.ffn, e, config.ffn_dim, config.ffn_options)
        self.drop = nn.Dropout(config.dropout)
        # residual branches start at zero: a fresh stack is the identity (stable early steps)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)
        self.ffn.zero_init_output()

    def forward(self, h: torch.Tensor, n_ctx: int, test_only: bool = False) -> torch.Tensor:
        """Update all N rows, or with ``test_only`` just the test rows (B, M, E).

        The last layer only needs the test rows (the head reads nothing else), so it skips
        the queries and FFN of the context rows.
        """
        first = n_ctx if test_only else 0
        h_out = h[:, first:] + self.drop(self.attn(self.norm1(h), n_ctx, first))
        return h_out + self.drop(self.ffn(self.norm2(h_out)))

    def forward_kv(
        self,
        h: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update rows h (B, M, E) attending to cached context keys/values (see attend_kv)."""
        h = h + self.drop(self.attn.attend_kv(self.norm1(h), k, v, mask))
        return h + self.drop(self.ffn(self.norm2(h)))


class PFN(nn.Module):
    """A prior-fitted network.

    Args:
        config: the architecture.
        borders: (n_bars + 1,) bucket borders of the bar-distribution head (regression).
    """

    tokens = "row"  # the PFNConfig.tokens value this class builds

    def __init__(self, config: PFNConfig, borders: torch.Tensor | None = None) -> None:
        super().__init__()
        if config.tokens != self.tokens:
            raise InvalidConfigError(
                f"{type(self).__name__} builds tokens={self.tokens!r} PFNs but the config has "
                f"tokens={config.tokens!r}; build it with pfnkit.model.build_model(config)."
            )
        self.config = config
        self._build_body(config)
        self._build_head(config, borders)

    def _build_body(self, config: PFNConfig) -> None:
        """Encoders and the layer stack (a subclass with other tokens replaces this)."""
        e = config.d_model
        self.x_encoder = FeatureEncoder(config.n_features, e, config.normalize_x)
        self.y_encoder = TargetEncoder(config.task, e, config.n_classes)
        # extra per-row inputs get their own projection (absent when n_row_inputs is 0,
        # so checkpoints without them keep their state-dict keys)
        self.row_encoder = (
            nn.Linear(config.n_row_inputs, e, bias=False) if config.n_row_inputs else None
        )
        self.layers = nn.ModuleList(PFNLayer(config) for _ in range(config.n_layers))

    def _build_head(self, config: PFNConfig, borders: torch.Tensor | None) -> None:
        """The final norm, the decoder to K outputs and the bar distribution (regression)."""
        e = config.d_model
        self.norm = nn.LayerNorm(e)
        self.decoder = nn.Sequential(
            nn.Linear(e, 2 * e), nn.GELU(), nn.Linear(2 * e, config.n_outputs)
        )
        self.bar_distribution: BarDistribution | None = None
        if config.task == "regression":
            if borders is None:
                # placeholder borders; a trained checkpoint's borders replace them on load
                borders = torch.linspace(-3, 3, config.n_bars + 1)
            if borders.numel() != config.n_bars + 1:
                raise InvalidConfigError(
                    f"borders must have n_bars + 1 = {config.n_bars + 1} entries. "
                    f"Got {borders.numel()}."
                )
            self.bar_distribution = BarDistribution(borders)

    def embed(
        self,
        x: torch.Tensor,
        y_ctx: torch.Tensor,
        *,
        n_features: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        row_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Rows to tokens: the one place where inputs enter the residual stream.

        Args:
            x: (B, N, F) features of the context rows followed by any test rows.
            y_ctx: (B, Nc) targets of the first Nc rows of x (Nc may be 0 with a prefix).
            n_features: (B,) features used per dataset (default: all F).
            prefix: (1 or B, P, E) learned context tokens (already in embedding space,
                label embedding included); they join the context before the real rows.
            stats: feature (mean, std), each (B, 1, F), for ``normalize_x`` (default: those
                of the Nc context rows; required when Nc is 0).
            row_inputs: (B, N, R) extra per-row inputs, required when the config has
                ``n_row_inputs`` = R > 0 (a treatment indicator, a query's kind); embedded
                by their own projection and added to the row's token.

        Returns:
            (tokens (B, P + N, E), number of context tokens P + Nc).
        """
        n_ctx = y_ctx.shape[1]
        if x.dim() != 3 or y_ctx.dim() != 2 or y_ctx.shape[0] != x.shape[0]:
            raise InvalidConfigError(
                f"PFN expects x (B, N, F) and y_ctx (B, Nc). Got x {tuple(x.shape)}, "
                f"y_ctx {tuple(y_ctx.shape)}."
            )
        if n_ctx > x.shape[1]:
            raise InvalidConfigError(
                f"y_ctx has {n_ctx} context targets but x only {x.shape[1]} rows."
            )
        if self.x_encoder.normalize and stats is None:
            if n_ctx == 0:
                raise InvalidConfigError(
                    "This PFN normalises features with its context rows' statistics; with "
                    "no real context rows (prefix only) pass stats=(mean, std)."
                )
            stats = self.x_encoder.context_stats(x[:, :n_ctx])
        h = self.x_encoder(x, n_features, stats=stats)  # (B, N, E)
        h = self._add_row_inputs(h, row_inputs)
        if n_ctx:
            h = torch.cat([h[:, :n_ctx] + self.y_encoder(y_ctx), h[:, n_ctx:]], dim=1)
        if prefix is not None:
            if prefix.dim() != 3 or prefix.shape[-1] != self.config.d_model:
                raise InvalidConfigError(
                    f"prefix must be (1 or B, P, d_model={self.config.d_model}). "
                    f"Got {tuple(prefix.shape)}."
                )
            prefix = prefix.to(h.dtype).expand(h.shape[0], -1, -1)  # (B, P, E)
            h = torch.cat([prefix, h], dim=1)
            n_ctx += prefix.shape[1]
        return h, n_ctx

    def _add_row_inputs(self, h: torch.Tensor, row_inputs: torch.Tensor | None) -> torch.Tensor:
        """h (B, N, E) plus the embedding of row_inputs (B, N, R), checked against R."""
        r = self.config.n_row_inputs
        if row_inputs is None:
            if r:
                raise InvalidConfigError(
                    f"This PFN takes row_inputs (B, N, {r}) for every row (its prior's "
                    "Batch.extras['row_inputs']); pass row_inputs=."
                )
            return h
        if self.row_encoder is None:
            raise InvalidConfigError(
                "row_inputs were given but this PFN has n_row_inputs=0; train it with "
                "n_row_inputs set (a prior that needs them sets it) or drop them."
            )
        if tuple(row_inputs.shape) != (*h.shape[:2], r):
            raise InvalidConfigError(
                f"row_inputs must be (B, N, n_row_inputs) = {(*h.shape[:2], r)}. "
                f"Got {tuple(row_inputs.shape)}."
            )
        return h + self.row_encoder(row_inputs.to(h.dtype))

    def forward(
        self,
        x: torch.Tensor,
        y_ctx: torch.Tensor,
        *,
        n_features: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        row_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the rows after the context.

        Args:
            x: (B, N, F) features of the context rows followed by the test rows.
            y_ctx: (B, Nc) targets of the context rows (Nc < N).
            n_features: (B,) features used per dataset (default: all F).
            prefix: (1 or B, P, E) learned context tokens placed before the context rows.
            stats: feature (mean, std) for ``normalize_x`` (see ``embed``).
            row_inputs: (B, N, R) extra per-row inputs (see ``embed``).

        Returns:
            (B, M, K) logits for the M = N - Nc test rows.
        """
        h, n_ctx = self.embed(
            x, y_ctx, n_features=n_features, prefix=prefix, stats=stats, row_inputs=row_inputs
        )
        if not 0 < n_ctx < h.shape[1]:
            raise InvalidConfigError(
                f"PFN needs 1 <= Nc < N context rows. Got Nc={y_ctx.shape[1]} with "
                f"N={x.shape[1]}" + (" and a prefix." if prefix is not None else ".")
            )
        return self.layers_forward(h, n_ctx)

    def layers_forward(self, h: torch.Tensor, n_ctx: int) -> torch.Tensor:
        """The layer stack and head: tokens (B, N, E) with n_ctx context tokens -> logits
        (B, N - n_ctx, K) of the rest."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, n_ctx, test_only=i == last)  # the last layer returns (B, M, E)
        return self.decoder(self.norm(h))  # (B, M, K)

    @staticmethod
    def inputs_of(batch: Any) -> dict[str, Any]:
        """The one mapping from a ``Batch`` onto ``forward``'s arguments.

        Rows before ``single_eval_pos`` are the context (their ``y`` is shown), the rest
        are queries. ``batch.extras`` entries named in ``MODEL_EXTRAS`` are passed through
        as keyword arguments (``stats`` for prefix-only batches, ``row_inputs`` (B, N, R)
        for priors with per-row inputs); every other extra is the prior's own bookkeeping
        and never reaches the network.
        """
        sep = batch.single_eval_pos
        kwargs: dict[str, Any] = {"n_features": batch.n_features}
        for key in MODEL_EXTRAS:
            if key in batch.extras:
                kwargs[key] = _extra_value(key, batch.extras[key])
        return {"x": batch.x, "y_ctx": batch.y[:, :sep], **kwargs}

    @torch.no_grad()
    def encode_context(
        self,
        x_ctx: torch.Tensor,
        y_ctx: torch.Tensor,
        *,
        n_features: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        row_inputs: torch.Tensor | None = None,
    ) -> ContextCache:
        """Run the context rows once and keep every layer's keys/values.

        Test rows never influence context rows, so ``predict_cached(cache, x_test)`` equals
        ``forward(cat(x_ctx, x_test), y_ctx)`` while repeated predictions skip the context.
        ``row_inputs`` (B, Nc, R) are the context rows' extra inputs, if the PFN takes them.
        """
        if stats is None and self.x_encoder.normalize and x_ctx.shape[1]:
            stats = self.x_encoder.context_stats(x_ctx)
        h, _ = self.embed(
            x_ctx, y_ctx, n_features=n_features, prefix=prefix, stats=stats, row_inputs=row_inputs
        )
        kv = []
        for i, layer in enumerate(self.pfn_layers):
            k, v = layer.attn.context_kv(layer.norm1(h))
            kv.append((k, v))
            if i < len(self.layers) - 1:
                h = layer.forward_kv(h, k, v)
        return ContextCache(kv=kv, stats=stats, n_features=n_features)

    @torch.no_grad()
    def predict_cached(
        self, cache: ContextCache, x_test: torch.Tensor, row_inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, M, K) for test rows x_test (B, M, F) given an encoded context (and
        the test rows' ``row_inputs`` (B, M, R), if the PFN takes them)."""
        h = self.x_encoder(x_test, cache.n_features, stats=cache.stats)
        h = self._add_row_inputs(h, row_inputs)
        for layer, (k, v) in zip(self.pfn_layers, cache.kv):
            h = layer.forward_kv(h, k, v)
        return self.decoder(self.norm(h))

    def loss(self, batch: Any) -> torch.Tensor:
        """Mean per-test-row loss on a Batch: cross-entropy or bar-distribution NLL."""
        return self.loss_from_logits(self(**self.inputs_of(batch)), batch)

    def loss_from_logits(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        """Mean loss of (B, M, K) logits against the batch's test-row targets."""
        target = batch.target_y[:, batch.single_eval_pos :]
        if self.config.task == "classification":
            losses = classification_loss(logits, target, batch.n_classes)
        else:
            assert self.bar_distribution is not None
            losses = self.bar_distribution.nll(logits, target)
        return losses.mean()

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of auxiliary losses the FFN blocks stored during the last forward."""
        parts: list[torch.Tensor] = []
        for layer in self.layers:
            aux = layer.ffn.aux_loss  # type: ignore[union-attr]
            if isinstance(aux, torch.Tensor):
                parts.append(aux)
        return torch.stack(parts).sum() if parts else None

    def predict_proba(
        self, x: torch.Tensor, y_ctx: torch.Tensor, n_classes: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class probabilities (B, M, C) with classes >= n_classes masked out."""
        logits = self(x, y_ctx)
        if n_classes is not None:
            nc = torch.as_tensor(n_classes, device=logits.device).expand(logits.shape[0])
            logits = mask_classes(logits, nc)
        return F.softmax(logits.float(), dim=-1)

    @property
    def pfn_layers(self) -> list[PFNLayer]:
        return cast(list[PFNLayer], list(self.layers))

    @property
    def feature_limit(self) -> int | None:
        """Most features one forward pass reads (None: any number)."""
        return self.config.n_features

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"task={c.task}, tokens={c.tokens}, d_model={c.d_model}, n_layers={c.n_layers}, "
            f"n_heads={c.n_heads}, ffn={c.ffn}, params={self.n_params:,}"
        )


def build_model(config: PFNConfig, borders: torch.Tensor | None = None) -> PFN:
    """The PFN a config describes: per-row tokens (``PFN``) or per-cell ones (``CellPFN``)."""
    if config.tokens == "cell":
        from pfnkit.model.cell import CellPFN

        return CellPFN(config, borders)
    return PFN(config, borders)
