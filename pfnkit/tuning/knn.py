"""Local contexts (LoCalPFN): each test row is predicted from its nearest training rows.

Distances are measured on the member's own preprocessed view: numeric columns
standardised, categorical columns one-hot (scaled so that a mismatch counts like one
standard deviation), missing values at the mean. Three modes:

- ``"exact"``: every test row gets its own k nearest rows as context: a batch of
  (k + 1)-row datasets per chunk of test rows (no Python loop per row). Exact, and the
  costliest: M * (k + 1) rows through the network.
- ``"graph"`` (the fast variant): every training row is encoded once at ``fit``, attending
  to its own k nearest rows layer by layer, and its keys/values are cached; a test row then
  attends, in every layer, to the cached keys/values of its k nearest rows. Exact in the
  test row's attention, approximate in the context rows' (each sees its own neighbourhood
  instead of the test row's). Costs (n + M) rows, and memory linear in n.
- ``"clusters"`` (LoCalPFN's shared contexts): the training rows are clustered at ``fit``,
  each cluster's context is the k rows nearest its centre and a test row uses the context
  of its nearest centre. Cheap, but in many dimensions a centre's neighbours are not the
  test row's (see the benchmark in the README).

Shape legend: B members, n training rows, k context rows, M test rows, f features,
C cluster centres, H heads, D head dim, E d_model, K outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfnkit.tuning._base import PREDICT_TOKENS, ContextProblem, check_float, check_int

DEFAULT_K = 100  # chosen on the development tables (see the README's large-table benchmark)
ONE_HOT_MAX = 32  # categorical columns with more categories are measured as numbers
CACHE_BYTES = 512 * 2**20  # cluster contexts are encoded at fit when their keys/values fit
KNN_MODES = ("exact", "graph", "clusters")
GATHER_FLOATS = 2**24  # gathered floats per chunk in graph mode


class DistanceSpace:
    """Maps a member's view (n, f) into the Euclidean space its neighbours are found in."""

    def __init__(self, x: np.ndarray, categorical: np.ndarray) -> None:
        xf = x.astype(np.float64)
        self.num = np.flatnonzero(~categorical)
        self.cats: list[tuple[int, np.ndarray]] = []
        for j in np.flatnonzero(categorical):
            values = np.unique(xf[:, j][~np.isnan(xf[:, j])])
            if 0 < values.size <= ONE_HOT_MAX:
                self.cats.append((int(j), values))
            else:
                self.num = np.append(self.num, j)
        self.num = np.sort(self.num)
        xn = xf[:, self.num]
        with np.errstate(all="ignore"):
            self.mean = np.nan_to_num(np.nanmean(xn, axis=0)) if xn.size else np.zeros(0)
            sd = np.nanstd(xn, axis=0) if xn.size else np.zeros(0)
        self.sd = np.where(~np.isfinite(sd) | (sd < 1e-12), 1.0, sd)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xf = x.astype(np.float64)
        parts = [np.nan_to_num((xf[:, self.num] - self.mean) / self.sd, nan=0.0)]
        for j, values in self.cats:
            # a mismatch between two categories adds 1 to the squared distance
            parts.append((xf[:, j][:, None] == values[None, :]) / np.sqrt(2.0))
        return np.concatenate(parts, axis=1).astype(np.float32)


def _neighbours(space_train: np.ndarray, k: int) -> Any:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k).fit(space_train)


@dataclass(frozen=True)
class KNNContext:
    """Each test row's context is its k nearest training rows (in each member's view).

    Args:
        k: context rows per test row (None: 100, capped by the checkpoint's training
            context limit and the table). Larger than the table is fine: every row is used.
        mode: "exact", "graph" (the fast variant) or "clusters" (see the module docstring).
        overlap: with "clusters", how many contexts each training row lands in on average
            (more centres: more local contexts, more compute).
        scale: "local" z-scores features with each local context's own statistics (what
            the PFN does for any context), "global" with the whole table's.
    """

    k: int | None = None
    mode: str = "exact"
    overlap: float = 2.0
    scale: str = "local"
    name = "knn"

    def __post_init__(self) -> None:
        from pfnkit.exceptions import InvalidConfigError

        check_int("KNNContext", "k", self.k, 1, allow_none=True)
        if self.mode not in KNN_MODES:
            raise InvalidConfigError(
                f"The 'mode' parameter of KNNContext must be one of {KNN_MODES}. "
                f"Got {self.mode!r} instead."
            )
        check_float("KNNContext", "overlap", self.overlap, 0.0, open_low=True)
        if self.scale not in ("global", "local"):
            raise InvalidConfigError(
                "The 'scale' parameter of KNNContext must be 'global' or 'local'. "
                f"Got {self.scale!r} instead."
            )

    def n_neighbours(self, problem: ContextProblem) -> int:
        k = self.k if self.k is not None else min(DEFAULT_K, problem.context_limit)
        return max(1, min(k, problem.n_rows))

    def fit(self, problem: ContextProblem) -> Any:
        k = self.n_neighbours(problem)
        spaces = [
            DistanceSpace(problem.x[b], problem.categorical[b]) for b in range(problem.n_members)
        ]
        train = [spaces[b](problem.x[b]) for b in range(problem.n_members)]
        if self.mode == "graph":
            return GraphContext.fit(problem, k, spaces, train, self.scale)
        stats = None
        if self.scale == "global" and problem.model.x_encoder.normalize:
            mean, std = problem.stats()
            stats = torch.stack([mean, std], dim=1)  # (B, 2, 1, f)
        centres: list[np.ndarray] | None = None
        ctx_rows: list[np.ndarray] | None = None
        if self.mode == "clusters" and k < problem.n_rows:
            n_centres = int(np.ceil(self.overlap * problem.n_rows / k))
            centres, ctx_rows = [], []
            for b in range(problem.n_members):
                c = _centres(train[b], n_centres, problem.seed + b)
                centres.append(c)
                ctx_rows.append(_neighbours(train[b], k).kneighbors(c, return_distance=False))
        fitted = LocalContext(
            problem=problem,
            stats=stats,
            k=k,
            spaces=spaces,
            index=[_neighbours(t, k) for t in train] if centres is None else None,
            centres=centres,
            ctx_rows=ctx_rows,
        )
        if ctx_rows is not None and fitted.cache_bytes() <= CACHE_BYTES:
            fitted.caches = [
                fitted.encode_centres(b, np.arange(len(r))) for b, r in enumerate(ctx_rows)
            ]
        return fitted


def _centres(z: np.ndarray, n_centres: int, seed: int) -> np.ndarray:
    """n_centres cluster centres of z (k-means on a row sample; cheap, seeded)."""
    from sklearn.cluster import MiniBatchKMeans

    n_centres = min(n_centres, z.shape[0])
    rng = np.random.RandomState(seed % 2**31)
    sample = z if z.shape[0] <= 50_000 else z[rng.choice(z.shape[0], 50_000, replace=False)]
    km = MiniBatchKMeans(
        n_clusters=n_centres,
        n_init=1,
        max_iter=20,
        batch_size=max(1024, 4 * n_centres),
        random_state=seed % 2**31,
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate rows: fewer distinct clusters is fine
        km.fit(sample)
    return km.cluster_centers_.astype(np.float32)


@dataclass
class LocalContext:
    """kNN contexts after fit: neighbour indices (exact) or centre contexts (shared)."""

    problem: ContextProblem
    k: int
    spaces: list[DistanceSpace]
    index: list[Any] | None
    centres: list[np.ndarray] | None
    ctx_rows: list[np.ndarray] | None
    caches: list[Any] | None = None
    stats: torch.Tensor | None = None  # (B, 2, 1, f) with scale="global"

    def member_stats(self, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Member b's global feature statistics for n datasets, or None (local)."""
        if self.stats is None:
            return None
        s = self.stats[b : b + 1].expand(n, -1, -1, -1)
        return s[:, 0], s[:, 1]

    def cache_bytes(self) -> int:
        """Memory the shared contexts' keys/values take when all are encoded."""
        if self.ctx_rows is None:
            return 0
        c = self.problem.model.config
        rows = sum(r.size for r in self.ctx_rows)
        return rows * c.d_model * 2 * c.n_layers * 4

    def encode_centres(self, b: int, centres: np.ndarray) -> Any:
        """Member b's contexts of the given centres, encoded (one batch item per centre)."""
        assert self.ctx_rows is not None
        p = self.problem
        r = self.ctx_rows[b][centres]  # (g, k)
        return p.model.encode_context(
            p.tensor(p.x[b][r]), p.tensor(p.y[b][r]), stats=self.member_stats(b, len(r))
        )

    @property
    def n_context_rows(self) -> int:
        return self.k

    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        p = self.problem
        outs = []
        for b in range(p.n_members):
            z = self.spaces[b](x_test[b])
            if self.index is not None:
                rows = self.index[b].kneighbors(z, return_distance=False)  # (M, k)
                outs.append(self._per_row(b, rows, x_test[b]))
            else:
                assert self.centres is not None and self.ctx_rows is not None
                outs.append(self._per_centre(b, _nearest(z, self.centres[b]), x_test[b]))
        return torch.stack(outs)

    def _per_row(self, b: int, rows: np.ndarray, x_test: np.ndarray) -> torch.Tensor:
        """Every test row with its own context: a batch of (k + 1)-row datasets."""
        p, model = self.problem, self.problem.model
        step = max(1, PREDICT_TOKENS // (self.k + 1))
        outs = []
        for s in range(0, rows.shape[0], step):
            r = rows[s : s + step]  # (m, k)
            x = np.concatenate([p.x[b][r], x_test[s : s + step, None]], axis=1)  # (m, k+1, f)
            with torch.no_grad():
                stats = self.member_stats(b, len(r))
                out = model(p.tensor(x), p.tensor(p.y[b][r]), stats=stats)  # (m, 1, K)
            outs.append(out[:, 0].float().cpu())
        return torch.cat(outs)

    def _per_centre(self, b: int, assign: np.ndarray, x_test: np.ndarray) -> torch.Tensor:
        """Test rows against the contexts of their centres (each encoded once)."""
        p, model = self.problem, self.problem.model
        used = np.unique(assign)
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], used, side="left")
        ends = np.searchsorted(assign[order], used, side="right")
        out: torch.Tensor | None = None
        per_batch = max(1, PREDICT_TOKENS // self.k)
        for s in range(0, used.size, per_batch):
            group = used[s : s + per_batch]
            cache = self.caches[b] if self.caches is not None else self.encode_centres(b, group)
            for i, c in enumerate(group):
                rows = order[bounds[s + i] : ends[s + i]]
                one = _slice_cache(cache, int(c) if self.caches is not None else i)
                logits = model.predict_cached(one, p.tensor(x_test[rows][None]))[0]
                if out is None:
                    out = torch.empty(assign.size, logits.shape[-1])
                out[torch.as_tensor(rows)] = logits.float().cpu()
        assert out is not None
        return out


def _nearest(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centre (squared Euclidean), in bounded-memory chunks."""
    c2 = (centres**2).sum(1)[None]
    out = np.empty(z.shape[0], dtype=np.int64)
    step = max(1, 2**24 // max(1, centres.shape[0]))
    for s in range(0, z.shape[0], step):
        zz = z[s : s + step]
        out[s : s + step] = (c2 - 2 * zz @ centres.T).argmin(1)
    return out


def _slice_cache(cache: Any, i: int) -> Any:
    from pfnkit.model.transformer import ContextCache

    stats = None if cache.stats is None else (cache.stats[0][i : i + 1], cache.stats[1][i : i + 1])
    nf = None if cache.n_features is None else cache.n_features[i : i + 1]
    kv = [(k[i : i + 1], v[i : i + 1]) for k, v in cache.kv]
    return ContextCache(kv=kv, stats=stats, n_features=nf)


@dataclass
class GraphContext:
    """kNN contexts in "graph" mode: every training row's per-layer keys/values, computed
    once with each row attending to its own k nearest rows; a test row attends to those of
    its k nearest rows.

    ``kv[b][layer]`` holds (n, 2, E) keys and values of member b's training rows.
    """

    problem: ContextProblem
    k: int
    spaces: list[DistanceSpace]
    index: list[Any]
    kv: list[list[torch.Tensor]]
    global_stats: list[tuple[torch.Tensor, torch.Tensor]] | None

    @property
    def n_context_rows(self) -> int:
        return self.k

    @classmethod
    def fit(
        cls,
        problem: ContextProblem,
        k: int,
        spaces: list[DistanceSpace],
        train: list[np.ndarray],
        scale: str,
    ) -> GraphContext:
        index = [_neighbours(t, k) for t in train]
        global_stats = None
        if scale == "global" and problem.model.x_encoder.normalize:
            mean, std = problem.stats()
            global_stats = [(mean[b : b + 1], std[b : b + 1]) for b in range(problem.n_members)]
        self = cls(problem, k, spaces, index, [], global_stats)
        for b in range(problem.n_members):
            rows = torch.as_tensor(index[b].kneighbors(train[b], return_distance=False))
            self.kv.append(self._encode_training_rows(b, rows))
        return self

    @torch.no_grad()
    def _encode_training_rows(self, b: int, rows: torch.Tensor) -> list[torch.Tensor]:
        p, model = self.problem, self.problem.model
        x = self._x(b)
        h = self._embed(b, x, rows) + model.y_encoder(p.tensor(p.y[b])[:, None])[:, 0]  # (n, E)
        blocks = _blocks(self.spaces[b](p.x[b]), rows)
        kv = []
        for layer in model.pfn_layers:
            kv.append(_layer_kv(layer, h))
            h = _attend_blocks(layer, h, kv[-1], blocks)
        return kv

    def _embed(self, b: int, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Tokens (m, E) of rows x (m, f) whose contexts are the training rows ``rows``."""
        enc = self.problem.model.x_encoder
        parts = []
        step = max(1, GATHER_FLOATS // max(1, rows.shape[1] * x.shape[1]))
        for s in range(0, len(x), step):
            xs, rs = x[s : s + step], rows[s : s + step]
            stats = None
            if enc.normalize:
                if self.global_stats is not None:
                    g = self.global_stats[b]
                    stats = (g[0].expand(len(xs), -1, -1), g[1].expand(len(xs), -1, -1))
                else:
                    stats = enc.context_stats(self._x(b)[rs])  # each row's own neighbourhood
            parts.append(enc(xs[:, None], None, stats=stats)[:, 0])
        return torch.cat(parts)

    def _x(self, b: int) -> torch.Tensor:
        return self.problem.tensor(self.problem.x[b])

    @torch.no_grad()
    def logits(self, x_test: np.ndarray) -> torch.Tensor:
        p, model = self.problem, self.problem.model
        outs = []
        for b in range(p.n_members):
            z = self.spaces[b](x_test[b])
            rows = torch.as_tensor(self.index[b].kneighbors(z, return_distance=False))
            h = self._embed(b, p.tensor(x_test[b]), rows)
            blocks = _blocks(z, rows)
            for layer, kv in zip(model.pfn_layers, self.kv[b]):
                h = _attend_blocks(layer, h, kv, blocks)
            outs.append(model.decoder(model.norm(h)).float().cpu())
        return torch.stack(outs)


BLOCK_ROWS = 64  # query rows that share one gathered key block in graph mode


def _layer_kv(layer: Any, h: torch.Tensor) -> torch.Tensor:
    """Keys and values (n, 2, E) of rows h (n, E) in one layer."""
    return layer.attn.kv(layer.norm1(h)).view(h.shape[0], 2, -1)


def _blocks(
    z: np.ndarray, rows: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Groups of nearby query rows with the union of their neighbours and a mask.

    Nearby rows share most neighbours, so gathering the union once per group moves far
    less memory than gathering k keys per row; the mask keeps every row attending to
    exactly its own k neighbours, so the grouping changes speed, not results.
    Returns (query rows (g,), union of their neighbours (u,), mask (g, u)) per group.
    """
    out = []
    for idx in _kd_leaves(z, BLOCK_ROWS):
        q = torch.as_tensor(idx)
        union, inverse = torch.unique(rows[q], return_inverse=True)  # inverse (g, k)
        mask = torch.zeros(len(q), len(union), dtype=torch.bool)
        mask.scatter_(1, inverse, True)
        out.append((q, union, mask))
    return out


def _kd_leaves(z: np.ndarray, size: int) -> list[np.ndarray]:
    """Split rows at the median of their widest coordinate until groups hold <= size."""
    leaves, stack = [], [np.arange(z.shape[0])]
    while stack:
        idx = stack.pop()
        if idx.size <= size:
            leaves.append(idx)
            continue
        pts = z[idx]
        dim = int(np.argmax(pts.max(0) - pts.min(0)))
        order = idx[np.argsort(pts[:, dim], kind="stable")]
        half = order.size // 2
        stack += [order[:half], order[half:]]
    return leaves


def _attend_blocks(
    layer: Any, h: torch.Tensor, kv: torch.Tensor, blocks: list[Any]
) -> torch.Tensor:
    """Update rows h (m, E), each attending to the cached keys/values of its neighbours."""
    n_heads = layer.attn.n_heads
    out = torch.empty_like(h)
    for q, union, mask in blocks:
        g = kv.index_select(0, union)  # (u, 2, E)
        g = g.view(1, len(union), 2, n_heads, -1).permute(2, 0, 3, 1, 4)  # (2, 1, H, u, D)
        out[q] = layer.forward_kv(h[q][None], g[0], g[1], mask[None, None])[0]
    return out
