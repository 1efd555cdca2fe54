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


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "sdpa",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Run the named attention backend."""
    return ATTENTION_BACKENDS.get(backend)(q, k, v, dropout_p)
