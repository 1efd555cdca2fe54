"""The FFN block contract: (d_model, d_ffn, **typed_options), (..., E) -> (..., E)."""

from __future__ import annotations

import torch
from torch import nn


class FFNBlock(nn.Module):
    """Base class of FFN blocks.

    Subclasses take ``(d_model, d_ffn, **typed_options)`` and map (..., d_model) to
    (..., d_model). A block with an auxiliary loss (e.g. load balancing) stores it in
    ``self.aux_loss`` during forward; the trainer collects it.
    """

    aux_loss: torch.Tensor | None = None

    def __init__(self, d_model: int, d_ffn: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_ffn = d_ffn

    @property
    def total_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token's forward pass touches (all of them for dense blocks)."""
        return self.total_params

    def zero_init_output(self) -> None:
        """Zero the output projection so a fresh residual block starts as the identity."""
