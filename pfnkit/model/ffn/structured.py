"""Structured and activation-sparse FFN blocks: low-rank, block-diagonal, top-k.

Shape legend: E d_model, F d_ffn, R rank, G blocks, K kept activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn._base import FFNBlock


class LowRankBlock(FFNBlock):
    """An MLP whose two projections are each factored through rank R (E->R->F, F->R->E)."""

    def __init__(self, d_model: int, d_ffn: int, rank: int = 0) -> None:
        super().__init__(d_model, d_ffn)
        rank = rank or max(1, d_model // 4)
        if not 1 <= rank <= min(d_model, d_ffn):
            raise InvalidConfigError(
                f"lowrank option rank must be in [1, min(d_model, d_ffn)] = "
                f"[1, {min(d_model, d_ffn)}]. Got {rank}."
            )
        self.rank = rank
        self.up = nn.Sequential(nn.Linear(d_model, rank, bias=False), nn.Linear(rank, d_ffn))
        self.down_out = nn.Linear(rank, d_model)
        self.down = nn.Sequential(nn.Linear(d_ffn, rank, bias=False), self.down_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(h)))

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.down_out.weight)
        nn.init.zeros_(self.down_out.bias)


class BlockDiagLinear(nn.Module):
    """y = blockdiag(W_1..W_G) x + b: G independent (d_in/G -> d_out/G) maps."""

    def __init__(self, d_in: int, d_out: int, n_blocks: int) -> None:
        super().__init__()
        self.n_blocks = n_blocks
        self.weight = nn.Parameter(
            torch.randn(n_blocks, d_in // n_blocks, d_out // n_blocks) / (d_in // n_blocks) ** 0.5
        )
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xb = x.reshape(-1, self.n_blocks, x.shape[-1] // self.n_blocks)  # (T, G, d_in/G)
        y = torch.einsum("tgi,gio->tgo", xb, self.weight)  # (T, G, d_out/G)
        return y.reshape(*lead, -1) + self.bias


class BlockDiagBlock(FFNBlock):
    """An MLP with block-diagonal projections of G blocks (G x fewer weights)."""

    def __init__(self, d_model: int, d_ffn: int, n_blocks: int = 4) -> None:
        super().__init__(d_model, d_ffn)
        if n_blocks < 1 or d_model % n_blocks or d_ffn % n_blocks:
            raise InvalidConfigError(
                f"blockdiag option n_blocks must divide d_model ({d_model}) and d_ffn "
                f"({d_ffn}). Got {n_blocks}."
            )
        self.up = BlockDiagLinear(d_model, d_ffn, n_blocks)
        self.down = BlockDiagLinear(d_ffn, d_model, n_blocks)
        self.mix = n_blocks > 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = F.gelu(self.up(h))
        if self.mix:  # interleave blocks so information crosses them (a fixed shuffle)
            lead = z.shape[:-1]
            z = z.reshape(*lead, self.up.n_blocks, -1).transpose(-1, -2).reshape(*lead, -1)
        return self.down(z)

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)


GATHER_ROWS = 64


class TopKBlock(FFNBlock):
    """Activation-sparse MLP: only the K largest hidden activations of each row survive.

    The up projection is dense; the down projection then reads K of the F hidden units,
    which is where inference can skip work (``active_params_per_token``).
    """

    def __init__(self, d_model: int, d_ffn: int, k: int = 0) -> None:
        super().__init__(d_model, d_ffn)
        k = k or max(1, d_ffn // 8)
        if not 1 <= k <= d_ffn:
            raise InvalidConfigError(f"topk option k must be in [1, d_ffn={d_ffn}]. Got {k}.")
        self.k = k
        self.up = nn.Linear(d_model, d_ffn)
        self.down = nn.Linear(d_ffn, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.up(h))
        if self.k == self.d_ffn:
            return self.down(z)
        vals, idx = z.topk(self.k, dim=-1)
        rows = z.shape[:-1].numel()
        if not self.training and rows <= GATHER_ROWS:
            # inference on few rows: read only the K used columns of the down projection
            w = self.down.weight.T[idx]  # (..., K, E)
            return torch.einsum("...k,...ke->...e", vals, w) + self.down.bias
        return self.down(torch.zeros_like(z).scatter(-1, idx, vals))

    @property
    def active_params_per_token(self) -> int:
        e, f = self.d_model, self.d_ffn
        return e * f + f + self.k * e + e

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)
