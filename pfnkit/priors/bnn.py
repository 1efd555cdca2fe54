"""Bayesian-neural-network prior: functions drawn from randomly initialised MLPs.

Shape legend: B batch, N rows, F features, H hidden units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import (
    Batch,
    BatchShape,
    Param,
    Task,
    check_task,
    draw,
    draw_inputs,
    finish_batch,
)

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sin": torch.sin,
    "gelu": torch.nn.functional.gelu,
}


@dataclass(frozen=True)
class BNNPrior:
    """y = MLP(x) + noise, with the MLP's weights drawn fresh for every dataset.

    Args:
        n_layers: hidden layers of the random MLP.
        hidden_size: width of each hidden layer.
        activation: "tanh", "relu", "sin" or "gelu".
        weight_std: weights ~ N(0, weight_std^2 / fan_in); fixed or a hyperprior.
        bias_std: biases ~ N(0, bias_std^2).
        noise_std: standard deviation of the observation noise; fixed or a hyperprior.
        min_features: each dataset uses d in [min_features, F] inputs (the rest are 0).
        task: "regression", or "classification" through random rank thresholds.
        max_classes: largest class count drawn for classification.
    """

    name: ClassVar[str] = "bnn"
    n_layers: int = 2
    hidden_size: int = 32
    activation: Literal["tanh", "relu", "sin", "gelu"] = "tanh"
    weight_std: Param = 1.5
    bias_std: Param = 0.5
    noise_std: Param = 0.1
    min_features: int = 1
    task: Task = "regression"
    max_classes: int = 10

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise InvalidConfigError(
                f"BNNPrior.activation must be one of {sorted(ACTIVATIONS)}. "
                f"Got {self.activation!r}."
            )
        check_task("BNNPrior", self.task)
        for name in ("n_layers", "hidden_size", "min_features"):
            if getattr(self, name) < 1:
                raise InvalidConfigError(
                    f"BNNPrior.{name} must be >= 1. Got {getattr(self, name)}."
                )
        if self.max_classes < 2:
            raise InvalidConfigError(f"BNNPrior.max_classes must be >= 2. Got {self.max_classes}.")

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n, h = shape.batch_size, shape.n_rows, self.hidden_size
        x, n_feat = draw_inputs(shape, self.min_features, generator)
        act = ACTIVATIONS[self.activation]
        w_std = draw(self.weight_std, b, generator)[:, None, None]
        b_std = draw(self.bias_std, b, generator)[:, None, None]
        hidden = x
        fan_in = n_feat.float()[:, None, None]  # only used inputs count
        for _ in range(self.n_layers):
            d_in = hidden.shape[-1]
            w = torch.randn(b, d_in, h, generator=generator) * w_std / fan_in.sqrt()
            bias = torch.randn(b, 1, h, generator=generator) * b_std
            hidden = act(hidden @ w + bias)  # (B, N, H)
            fan_in = torch.full_like(fan_in, float(h))
        w_out = torch.randn(b, h, 1, generator=generator) / math.sqrt(h)
        y = (hidden @ w_out).squeeze(-1)  # (B, N)
        # standardise the function per dataset so noise_std means the same everywhere
        y = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True).clamp_min(1e-6)
        noise_std = draw(self.noise_std, b, generator)
        y = y + noise_std[:, None] * torch.randn(b, n, generator=generator)
        extras = {"noise_std": noise_std}
        return finish_batch(x, y, shape, n_feat, extras, self.task, self.max_classes, generator)
