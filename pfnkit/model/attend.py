"""Attention kernels, picked by name from ``ATTENTION_BACKENDS``.

Every backend maps q (B, H, N, D), k and v (B, H, M, D) to (B, H, N, D) with no mask:
train/test-split attention is expressed by passing only the context rows as k and v.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pfnkit.registry import Registry

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
ATTENTION_BACKENDS: Registry[AttentionFn] = Registry("attention backend")


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """torch's fused scaled-dot-product attention (flash / memory-efficient / CPU kernels)."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """Reference implementation: softmax(q k^T / sqrt(D)) v in plain ops."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, M)
    weights = scores.softmax(-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


ATTENTION_BACKENDS.register("sdpa", sdpa)
ATTENTION_BACKENDS.register("math", math_attention)


def _register_optional() -> None:
    """Backends from optional packages, registered only when they import."""
    try:
        from flash_attn import flash_attn_func  # type: ignore[import-not-found]
    except ImportError:
        return

    def flash(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
    ) -> torch.Tensor:
        # flash-attn wants (B, N, H, D) in fp16/bf16 on CUDA
        o = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p)
        return o.transpose(1, 2)

    ATTENTION_BACKENDS.register("flash_attn", flash)


_register_optional()


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "sdpa",
    dropout_p: float = 0.0,
    chunk_rows: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the named attention backend.

    With ``chunk_rows`` > 0 the queries are processed in chunks of that many rows, which
    bounds the peak memory of kernels that materialise the (N, M) score matrix; rows are
    independent, so the result is the same. ``mask`` (broadcastable to (B, H, N, M), True =
    attend) restricts each query to some of the keys (kNN contexts that share one key
    block); it runs torch's SDPA, or the math reference with ``backend="math"``.
    """
    if mask is not None:
        if backend == "math":
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    fn = ATTENTION_BACKENDS.get(backend)
    n = q.shape[-2]
    if chunk_rows <= 0 or n <= chunk_rows:
        return fn(q, k, v, dropout_p)
    return torch.cat(
        [fn(q[..., i : i + chunk_rows, :], k, v, dropout_p) for i in range(0, n, chunk_rows)],
        dim=-2,
    )
