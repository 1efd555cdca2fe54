"""2:4 semi-structured sparse MLP for inference on CUDA (Ampere or newer)."""

from __future__ import annotations

import torch
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn.dense import MLPBlock


def mask_24(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every group of 4 along the input dim."""
    out_dim, in_dim = weight.shape
    groups = weight.abs().reshape(out_dim, in_dim // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter(-1, keep, True)
    return mask.reshape(out_dim, in_dim)


class Semi24Block(MLPBlock):
    """An MLP whose weights follow the 2:4 pattern (2 of every 4 inputs kept).

    Trains densely with the 2:4 mask applied in forward; ``to_sparse()`` converts the
    weights to torch's semi-structured format for the sparse tensor-core kernels. These
    kernels exist on CUDA only (compute capability 8.0+), so the constructor refuses
    elsewhere rather than silently running dense.
    """

    def __init__(self, d_model: int, d_ffn: int) -> None:
        ok = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
        if not ok:
            raise InvalidConfigError(
                "The semi24 FFN block needs a CUDA GPU of compute capability 8.0 or newer "
                "(2:4 sparse kernels are CUDA-only); on this machine use 'mlp', 'topk' or "
                "'fff' instead."
            )
        if d_model % 64 or d_ffn % 64:
            raise InvalidConfigError(
                f"semi24 needs d_model and d_ffn divisible by 64. Got {d_model}, {d_ffn}."
            )
        super().__init__(d_model, d_ffn)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if isinstance(self.up.weight, nn.Parameter) and self.training:
            for lin in (self.up, self.down):
                lin.weight.data.mul_(mask_24(lin.weight.data))
        return super().forward(h)

    @torch.no_grad()
    def to_sparse(self) -> Semi24Block:
        """Swap the weights for semi-structured sparse tensors (inference only)."""
        from torch.sparse import to_sparse_semi_structured

        for lin in (self.up, self.down):
            w = lin.weight.data * mask_24(lin.weight.data)
            lin.weight = nn.Parameter(to_sparse_semi_structured(w.half()), requires_grad=False)
            if lin.bias is not None:
                lin.bias = nn.Parameter(lin.bias.data.half(), requires_grad=False)
        return self

    @property
    def active_params_per_token(self) -> int:
        e, f = self.d_model, self.d_ffn
        return (e * f) // 2 + f + (f * e) // 2 + e
