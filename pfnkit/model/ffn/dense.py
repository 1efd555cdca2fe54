"""Dense FFN blocks: the classic MLP and the gated linear unit (SwiGLU)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.model.ffn._base import FFNBlock


class MLPBlock(FFNBlock):
    """Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_ffn: int) -> None:
        super().__init__(d_model, d_ffn)
        self.up = nn.Linear(d_model, d_ffn)
        self.down = nn.Linear(d_ffn, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(h)))

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)


class GLUBlock(FFNBlock):
    """SwiGLU: down(silu(gate(h)) * up(h)); d_ffn is the width of the gated hidden layer."""

    def __init__(self, d_model: int, d_ffn: int, activation: str = "silu") -> None:
        super().__init__(d_model, d_ffn)
        acts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "silu": F.silu,
            "gelu": F.gelu,
            "relu": F.relu,
        }
        if activation not in acts:
            from pfnkit.exceptions import InvalidConfigError

            raise InvalidConfigError(
                f"GLUBlock.activation must be one of {sorted(acts)}. Got {activation!r}."
            )
        self.act = acts[activation]
        self.gate_up = nn.Linear(d_model, 2 * d_ffn, bias=False)
        self.down = nn.Linear(d_ffn, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.down.weight)
