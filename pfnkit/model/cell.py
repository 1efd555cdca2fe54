"""The per-cell PFN (``PFNConfig.tokens = "cell"``): one token per table cell.

Every cell (row i, feature j) is a token, and every row has one more, its target token:
the embedded label for context rows, a learned "unknown" vector for query rows. Each layer
runs, pre-norm and residual:

1. attention between the tokens of one row (its features and its target);
2. train/test-split attention down each column (every row queries, the context rows are
   the keys and values; the target tokens form one more column);
3. the FFN block on every token.

The head reads the target token of each query row. The layout is TabPFN v2's: no feature
limit and no padding (a table of any width is read whole), at a cost that grows with rows
x features. Test rows never influence context rows, so the context's keys and values can
be cached exactly as for the row model.

Telling features apart: a cell token is its normalised value and a NaN flag, embedded,
plus an identity vector for its column. TabPFN v2 draws the identity vectors at random per
column position; here they are random features of the column's own context values (a
quantile sketch through a fixed random projection and a sine, then a learned projection),
so two columns with different values get unrelated vectors while the prediction stays
exactly invariant to permuting columns and context rows. Columns whose context quantiles
coincide share a vector; their cells differ through the rows they sit in.

Shape legend: B batch, N rows, Nc context rows, M = N - Nc test rows, F features,
T = F + 1 tokens per row, H heads, D head dim, E d_model, K outputs, Q sketch quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.config import PFNConfig
from pfnkit.model.encoders import FeatureEncoder, TargetEncoder
from pfnkit.model.ffn import FFNBlock, build_ffn
from pfnkit.model.transformer import PFN, ContextCache, SplitAttention

N_QUANTILES = 16  # Q: context quantiles per column that seed its identity vector
IDENTITY_SEED = 20_250_314  # the fixed random projection of the sketch (a buffer, saved)
PREDICT_CELLS = 1 << 19  # test-row tokens per chunk in predict_cached (B x M x T)


class CellEncoder(nn.Module):
    """Cells (B, N, F) -> tokens (B, N, F, E): value and NaN flag, plus a column identity.

    With ``normalize``, each feature is z-scored with its context rows' mean and standard
    deviation (NaN ignored) and clipped to [-clip, clip], as ``FeatureEncoder`` does.
    """

    context_stats = staticmethod(FeatureEncoder.context_stats)

    def __init__(self, d_model: int, normalize: bool, clip: float = 30.0) -> None:
        super().__init__()
        self.normalize = normalize
        self.clip = clip
        d_id = max(4, d_model // 4)
        self.value = nn.Linear(2, d_model)  # (normalised value, is-NaN)
        g = torch.Generator().manual_seed(IDENTITY_SEED)
        self.register_buffer("id_weight", torch.randn(N_QUANTILES + 1, d_id, generator=g))
        self.register_buffer("id_phase", 2 * torch.pi * torch.rand(d_id, generator=g))
        self.identity_proj = nn.Linear(d_id, d_model, bias=False)
        self.register_buffer("levels", torch.linspace(0, 1, N_QUANTILES))

    id_weight: torch.Tensor
    id_phase: torch.Tensor
    levels: torch.Tensor

    def identity(self, x_ctx: torch.Tensor) -> torch.Tensor:
        """Identity vectors (B, F, E) of the columns of the context rows x_ctx (B, Nc, F).

        Only order-free functions of each column's values enter (sorted values, their
        count), so permuting rows or columns permutes nothing but the output's columns.
        """
        v = x_ctx.float().masked_fill(torch.isinf(x_ctx), float("nan"))
        n_ctx = v.shape[1]
        valid = (~torch.isnan(v)).sum(1)  # (B, F)
        ranked = v.sort(dim=1).values  # NaN sort last
        last = (valid - 1).clamp_min(0).to(v.dtype)  # (B, F)
        idx = (self.levels[None, :, None] * last[:, None, :]).round().long()  # (B, Q, F)
        q = torch.nan_to_num(ranked.gather(1, idx), nan=0.0).transpose(1, 2)  # (B, F, Q)
        q = (q - q.mean(-1, keepdim=True)) / (q.std(-1, keepdim=True, correction=0) + 1e-6)
        missing = 1.0 - valid.to(v.dtype) / max(n_ctx, 1)  # (B, F)
        sketch = torch.cat([q.clamp(-10, 10), missing[..., None]], dim=-1)  # (B, F, Q + 1)
        return self.identity_proj(torch.sin(sketch @ self.id_weight + self.id_phase))

    def forward(
        self, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """Value embeddings (B, N, F, E) of x (B, N, F), normalised with ``stats``."""
        x = x.masked_fill(torch.isinf(x), float("nan"))
        nan = torch.isnan(x)
        if self.normalize:
            assert stats is not None
            mean, std = stats
            x = ((x - mean) / std).clamp(-self.clip, self.clip)
        x = torch.nan_to_num(x, nan=0.0)
        return self.value(torch.stack([x, nan.to(x.dtype)], dim=-1))


class CellLayer(nn.Module):
    """Pre-norm: attention between a row's tokens, then down each column (keys and
    values from the context rows), then the FFN; each adds to the residual stream."""

    def __init__(self, config: PFNConfig) -> None:
        super().__init__()
        e, h = config.d_model, config.n_heads
        self.norm_features = nn.LayerNorm(e)
        self.feature_attn = SplitAttention(e, h, config.attention, config.dropout)
        self.norm_rows = nn.LayerNorm(e)
        self.row_attn = SplitAttention(
            e, h, config.attention, config.dropout, config.attention_chunk
        )
        self.norm_ffn = nn.LayerNorm(e)
        self.ffn: FFNBlock = build_ffn(config.ffn, e, config.ffn_dim, config.ffn_options)
        self.drop = nn.Dropout(config.dropout)
        for attn in (self.feature_attn, self.row_attn):  # a fresh stack is the identity
            nn.init.zeros_(attn.out.weight)
            nn.init.zeros_(attn.out.bias)
        self.ffn.zero_init_output()

    def between_features(
        self, h: torch.Tensor, mask: torch.Tensor | None, target_only: bool
    ) -> torch.Tensor:
        """h (B, N, T, E) after attention among each row's tokens; with ``target_only``
        just the target tokens (B, N, 1, E) are updated and returned."""
        b, n, t, e = h.shape
        hn = self.norm_features(h).reshape(b * n, t, e)
        k, v = self.feature_attn.context_kv(hn)  # each (B*N, H, T, D)
        m = None if mask is None else mask.expand(b, n, t).reshape(b * n, 1, 1, t)
        hq = hn[:, -1:] if target_only else hn
        a = self.feature_attn.attend_kv(hq, k, v, m).view(b, n, -1, e)
        return (h[:, :, -1:] if target_only else h) + self.drop(a)

    def column_kv(self, h_ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B*T, H, Nc, D) of the context tokens h_ctx (B, Nc, T, E)."""
        b, n_ctx, t, e = h_ctx.shape
        hc = self.norm_rows(h_ctx).transpose(1, 2).reshape(b * t, n_ctx, e)
        return self.row_attn.context_kv(hc)

    def down_columns(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Rows h (B, M, T, E) attend down their columns to keys/values (B*T, H, Nc, D),
        then the FFN."""
        b, m, t, e = h.shape
        hq = self.norm_rows(h).transpose(1, 2).reshape(b * t, m, e)  # (B*T, M, E)
        a = self.row_attn.attend_kv(hq, k, v).view(b, t, m, e).transpose(1, 2)
        h = h + self.drop(a)
        return h + self.drop(self.ffn(self.norm_ffn(h)))

    def forward(
        self, h: torch.Tensor, n_ctx: int, mask: torch.Tensor | None, test_only: bool = False
    ) -> torch.Tensor:
        """Update all tokens (B, N, T, E), or with ``test_only`` only the test rows' target
        tokens (B, M, 1, E): the last layer's output the head reads."""
        h = self.between_features(h, mask, target_only=test_only)
        k, v = self.column_kv(h[:, :n_ctx])
        return self.down_columns(h[:, n_ctx:] if test_only else h, k, v)


@dataclass
class CellContextCache(ContextCache):
    """A context encoded once (see ``ContextCache``), plus what its test rows need: the
    column identity vectors (B, F, E) and the padded-feature mask (B, 1, T) or None."""

    identity: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class CellPFN(PFN):
    """A prior-fitted network over per-cell tokens (see the module docstring).

    Takes the same inputs and gives the same outputs as ``PFN`` (``forward``, ``loss``,
    ``encode_context`` / ``predict_cached``, checkpoints), but reads tables of any width.
    Not supported, since they work on row tokens: per-row inputs, learned prefix tokens
    (``context='tuned'``) and the kNN modes that reuse the row model's keys and values
    ("knn-fast", "knn-shared"); asking for them raises. ``context='knn'`` works.

    Args:
        config: the architecture (``tokens="cell"``).
        borders: (n_bars + 1,) bucket borders of the bar-distribution head (regression).
    """

    tokens = "cell"

    def _build_body(self, config: PFNConfig) -> None:
        e = config.d_model
        self.cell_encoder = CellEncoder(e, config.normalize_x)
        self.y_encoder = TargetEncoder(config.task, e, config.n_classes)
        self.unknown = nn.Parameter(0.02 * torch.randn(e))  # target token of a query row
        self.layers = nn.ModuleList(CellLayer(config) for _ in range(config.n_layers))

    # the row model's internals, which some context strategies reach into
    @property
    def x_encoder(self) -> NoReturn:  # type: ignore[override]
        self._unsupported(
            "Learned prompts (context='tuned'), kNN contexts with scale='global' or mode='graph'"
        )

    @property
    def pfn_layers(self) -> NoReturn:  # type: ignore[override]
        self._unsupported("kNN contexts in mode='graph' (context='knn-fast')")

    @property
    def feature_limit(self) -> int | None:
        return None

    def _unsupported(self, what: str) -> NoReturn:
        raise InvalidConfigError(
            f"{what}: needs a PFN with row tokens; this one has tokens='cell'. Use "
            "context='subsample', 'full' or 'knn', or a tokens='row' checkpoint."
        )

    def _check_inputs(
        self, x: torch.Tensor, y_ctx: torch.Tensor, prefix: Any, row_inputs: Any
    ) -> None:
        if prefix is not None:
            self._unsupported("Learned prefix tokens (prompt tuning, context='tuned')")
        if row_inputs is not None:
            self._unsupported("row_inputs (per-row inputs such as a treatment)")
        if x.dim() != 3 or y_ctx.dim() != 2 or y_ctx.shape[0] != x.shape[0]:
            raise InvalidConfigError(
                f"PFN expects x (B, N, F) and y_ctx (B, Nc). Got x {tuple(x.shape)}, "
                f"y_ctx {tuple(y_ctx.shape)}."
            )
        if not 0 < y_ctx.shape[1] <= x.shape[1]:
            raise InvalidConfigError(
                f"The cell PFN needs 1 <= Nc <= N context rows. Got Nc={y_ctx.shape[1]} "
                f"with N={x.shape[1]}."
            )

    def _columns(
        self,
        x: torch.Tensor,
        n_features: torch.Tensor | None,
        stats: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
        """Drop the columns no dataset of the batch uses; the (B, 1, T) mask of the padded
        ones that remain (None when every dataset uses them all)."""
        if n_features is None:
            return x, stats, None
        f = min(int(n_features.max()), x.shape[-1])
        x = x[..., :f]
        if stats is not None:
            stats = (stats[0][..., :f], stats[1][..., :f])
        if bool((n_features >= f).all()):
            return x, stats, None
        col = torch.arange(f + 1, device=x.device)
        mask = (col < n_features[:, None]) | (col == f)  # the target token is always there
        return x, stats, mask[:, None, :]

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
        """Cells to tokens (B, N, T, E), target token last; returns (tokens, Nc).

        Args as for ``PFN.embed`` (``prefix`` and ``row_inputs`` are not supported).
        Padded columns (beyond ``n_features``) are dropped when no dataset uses them;
        ``forward`` masks the others out of the attention between features.
        """
        h, _ = self._tokens(x, y_ctx, n_features, stats, prefix, row_inputs)
        return h, y_ctx.shape[1]

    def _tokens(
        self,
        x: torch.Tensor,
        y_ctx: torch.Tensor,
        n_features: torch.Tensor | None,
        stats: tuple[torch.Tensor, torch.Tensor] | None,
        prefix: Any,
        row_inputs: Any,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor, Any]]:
        """Checked inputs to tokens (B, N, T, E) (x (B, N, F) whose first Nc rows have
        targets y_ctx), and what the layers and a cache need besides: the padded-feature
        mask (B, 1, T) or None, the identity vectors (B, F, E), the normalisation stats."""
        self._check_inputs(x, y_ctx, prefix, row_inputs)
        x, stats, mask = self._columns(x, n_features, stats)
        n_ctx = y_ctx.shape[1]
        enc = self.cell_encoder
        if enc.normalize and stats is None:
            stats = enc.context_stats(x[:, :n_ctx])
        identity = enc.identity(x[:, :n_ctx])
        cells = enc(x, stats) + identity[:, None]  # (B, N, F, E)
        return self._with_targets(cells, y_ctx), (mask, identity, stats)

    def _with_targets(self, cells: torch.Tensor, y_ctx: torch.Tensor | None) -> torch.Tensor:
        """Append the target token to every row of cells (B, N, F, E): the embedded label
        for the first Nc = y_ctx.shape[1] rows, "unknown" for the rest."""
        b, n, _, e = cells.shape
        n_ctx = 0 if y_ctx is None else y_ctx.shape[1]
        target = self.unknown.to(cells.dtype).expand(b, n - n_ctx, e)
        if y_ctx is not None and n_ctx:
            target = torch.cat([self.y_encoder(y_ctx).to(cells.dtype), target], dim=1)
        return torch.cat([cells, target[:, :, None]], dim=2)  # (B, N, T, E)

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
        """Logits (B, M, K) of the rows after the context; args as for ``PFN.forward``."""
        h, (mask, _, _) = self._tokens(x, y_ctx, n_features, stats, prefix, row_inputs)
        n_ctx = y_ctx.shape[1]
        if n_ctx >= x.shape[1]:
            raise InvalidConfigError(
                f"PFN needs 1 <= Nc < N context rows. Got Nc={n_ctx} with N={x.shape[1]}."
            )
        return self.layers_forward(h, n_ctx, mask)

    def layers_forward(
        self, h: torch.Tensor, n_ctx: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens (B, N, T, E) with n_ctx context rows -> logits (B, N - n_ctx, K)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h, n_ctx, mask, test_only=i == last)  # the last returns (B, M, 1, E)
        return self.decoder(self.norm(h[:, :, -1]))

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
    ) -> CellContextCache:
        """Run the context rows once and keep every layer's column keys/values (B*T, H,
        Nc, D); ``predict_cached`` then equals ``forward`` on the concatenated rows."""
        h, (mask, identity, stats) = self._tokens(
            x_ctx, y_ctx, n_features, stats, prefix, row_inputs
        )
        kv = []
        for i, layer in enumerate(self.cell_layers):
            last = i == len(self.layers) - 1
            h = layer.between_features(h, mask, target_only=last)
            k, v = layer.column_kv(h)
            kv.append((k, v))
            if not last:
                h = layer.down_columns(h, k, v)
        return CellContextCache(
            kv=kv, stats=stats, n_features=n_features, identity=identity, mask=mask
        )

    @torch.no_grad()
    def predict_cached(
        self, cache: ContextCache, x_test: torch.Tensor, row_inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, M, K) of test rows x_test (B, M, F) given an encoded context."""
        if row_inputs is not None:
            self._unsupported("row_inputs (per-row inputs such as a treatment)")
        if not isinstance(cache, CellContextCache) or cache.identity is None:
            self._unsupported(
                "A context cache not made by this PFN's encode_context (kNN contexts in "
                "mode='clusters', context='knn-shared', slice the row model's caches)"
            )
        f = cache.identity.shape[1]
        if x_test.shape[-1] < f:
            raise InvalidConfigError(
                f"x_test has {x_test.shape[-1]} features but the context had {f}."
            )
        # test rows are independent: chunks bound the memory of (B, M, T, E) activations
        step = max(1, PREDICT_CELLS // (x_test.shape[0] * (f + 1)))
        return torch.cat(
            [
                self._predict_rows(cache, x_test[:, s : s + step, :f])
                for s in range(0, x_test.shape[1], step)
            ],
            dim=1,
        )

    def _predict_rows(self, cache: CellContextCache, x_test: torch.Tensor) -> torch.Tensor:
        assert cache.identity is not None
        cells = self.cell_encoder(x_test, cache.stats) + cache.identity[:, None]
        h = self._with_targets(cells, None)  # (B, M, T, E)
        last = len(self.layers) - 1
        for i, (layer, (k, v)) in enumerate(zip(self.cell_layers, cache.kv)):
            # the last layer's cache holds the target column only: all the head reads
            h = layer.between_features(h, cache.mask, target_only=i == last)
            h = layer.down_columns(h, k, v)
        return self.decoder(self.norm(h[:, :, -1]))

    @property
    def cell_layers(self) -> list[CellLayer]:
        return [layer for layer in self.layers if isinstance(layer, CellLayer)]
