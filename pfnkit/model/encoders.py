"""Input encoders: features (variable count, padded and rescaled) and targets.

Shape legend: B batch, N rows, F features (F_max in the config), E d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from pfnkit.exceptions import InvalidConfigError


class FeatureEncoder(nn.Module):
    """Zero-pad x to F_max features, rescale by sqrt(F_max / n_used), project to E.

    The rescaling keeps the projection's variance independent of how many features a
    dataset uses, so one network serves datasets of 1..F_max features.
    """

    def __init__(self, n_features: int, d_model: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.proj = nn.Linear(n_features, d_model)

    def forward(self, x: torch.Tensor, n_features: torch.Tensor | None = None) -> torch.Tensor:
        b, n, f = x.shape
        if f > self.n_features:
            raise InvalidConfigError(
                f"The input has {f} features but this PFN takes at most {self.n_features}; "
                "select or compress features first."
            )
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        used = torch.full((b,), f, device=x.device) if n_features is None else n_features
        if f < self.n_features:
            x = nn.functional.pad(x, (0, self.n_features - f))  # (B, N, F_max)
        scale = (self.n_features / used.to(x.dtype).clamp_min(1)).sqrt()
        return self.proj(x * scale[:, None, None])


class TargetEncoder(nn.Module):
    """Embed the context targets: linear for regression, a lookup for class ids."""

    def __init__(self, task: str, d_model: int, n_classes: int) -> None:
        super().__init__()
        self.task = task
        if task == "classification":
            self.embed: nn.Module = nn.Embedding(n_classes, d_model)
        else:
            self.embed = nn.Linear(1, d_model)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return self.embed(y.long())  # (B, Nc, E)
        return self.embed(torch.nan_to_num(y)[..., None].float())
