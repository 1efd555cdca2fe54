"""Input encoders: features (variable count, padded and rescaled) and targets.

Shape legend: B batch, N rows, F features (F_max in the config), E d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from pfnkit.exceptions import InvalidConfigError


class FeatureEncoder(nn.Module):
    """Features (B, N, F) -> tokens (B, N, E).

    Missing values (NaN) become 0 plus a learned per-feature "missing" embedding. With
    ``normalize``, each feature is z-scored with the mean and standard deviation of the
    context rows (ignoring NaN) and clipped to [-clip, clip]. x is zero-padded to F_max
    features and rescaled by sqrt(F_max / n_used), which keeps the projection's variance
    independent of how many features a dataset uses, so one network serves 1..F_max.
    """

    def __init__(
        self, n_features: int, d_model: int, normalize: bool = False, clip: float = 30.0
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.normalize = normalize
        self.clip = clip
        self.proj = nn.Linear(n_features, d_model)
        self.missing = nn.Linear(n_features, d_model, bias=False)

    @staticmethod
    def context_stats(x_ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dataset feature mean and std (B, 1, F) of the context rows, NaN ignored."""
        ctx = x_ctx.masked_fill(torch.isinf(x_ctx), float("nan"))
        valid = ~torch.isnan(ctx)
        count = valid.sum(1, keepdim=True).clamp_min(1)
        mean = torch.where(valid, ctx, 0.0).sum(1, keepdim=True) / count
        var = torch.where(valid, ctx - mean, 0.0).square().sum(1, keepdim=True) / count
        std = var.sqrt()
        return mean, torch.where(std < 1e-6, torch.ones_like(std), std)  # constant columns

    def forward(
        self,
        x: torch.Tensor,
        n_features: torch.Tensor | None = None,
        n_ctx: int | None = None,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Encode x (B, N, F); normalisation uses ``stats`` or the first n_ctx rows."""
        b, n, f = x.shape
        if f > self.n_features:
            raise InvalidConfigError(
                f"The input has {f} features but this PFN takes at most {self.n_features}; "
                "select or compress features first."
            )
        x = x.masked_fill(torch.isinf(x), float("nan"))
        nan = torch.isnan(x)
        if self.normalize:
            mean, std = stats if stats is not None else self.context_stats(x[:, :n_ctx])
            x = ((x - mean) / std).clamp(-self.clip, self.clip)
        x = torch.nan_to_num(x, nan=0.0)
        used = torch.full((b,), f, device=x.device) if n_features is None else n_features
        if f < self.n_features:
            x = nn.functional.pad(x, (0, self.n_features - f))  # (B, N, F_max)
            nan = nn.functional.pad(nan, (0, self.n_features - f))
        scale = (self.n_features / used.to(x.dtype).clamp_min(1)).sqrt()
        return self.proj(x * scale[:, None, None]) + self.missing(nan.to(x.dtype))


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
