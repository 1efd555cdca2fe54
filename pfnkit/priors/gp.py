"""Gaussian-process prior and the exact GP posterior predictive it should be mimicked by.

Shape legend: B batch, N rows, M test rows, F features.
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
    Choice,
    LogUniform,
    Param,
    Task,
    Uniform,
    check_task,
    draw,
    draw_inputs,
    finish_batch,
)

Kernel = Literal["rbf", "matern12", "matern32", "matern52"]
KERNELS = ("rbf", "matern12", "matern32", "matern52")


def kernel_matrix(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: str,
    lengthscale: torch.Tensor,
    outputscale: torch.Tensor,
) -> torch.Tensor:
    """k(a, b) for a (B, N, F), b (B, M, F), per-dataset lengthscale/outputscale (B,)."""
    d = torch.cdist(a, b) / lengthscale[:, None, None]  # (B, N, M) scaled distances
    if kernel == "rbf":
        k = torch.exp(-0.5 * d.square())
    elif kernel == "matern12":
        k = torch.exp(-d)
    elif kernel == "matern32":
        s = math.sqrt(3.0) * d
        k = (1.0 + s) * torch.exp(-s)
    elif kernel == "matern52":
        s = math.sqrt(5.0) * d
        k = (1.0 + s + s.square() / 3.0) * torch.exp(-s)
    else:
        raise InvalidConfigError(f"GP kernel must be one of {KERNELS}. Got {kernel!r}.")
    return outputscale[:, None, None] * k


@dataclass(frozen=True)
class GPPrior:
    """Functions drawn from a zero-mean GP, observed with Gaussian noise.

    Args:
        kernel: "rbf", "matern12", "matern32" or "matern52".
        lengthscale: kernel lengthscale, fixed or a hyperprior.
        outputscale: kernel variance, fixed or a hyperprior.
        noise: observation-noise variance, fixed or a hyperprior.
        min_features: each dataset uses d in [min_features, F] input dims (the rest are 0).
        x_dist: inputs drawn "uniform" on [0, 1] or "normal" N(0, 1).
        task: "regression", or "classification" through random rank thresholds.
        max_classes: largest class count drawn for classification.
    """

    name: ClassVar[str] = "gp"
    kernel: Kernel = "rbf"
    lengthscale: Param = 0.6
    outputscale: Param = 1.0
    noise: Param = 0.01
    min_features: int = 1
    x_dist: Literal["uniform", "normal"] = "uniform"
    task: Task = "regression"
    max_classes: int = 10

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise InvalidConfigError(
                f"GPPrior.kernel must be one of {KERNELS}. Got {self.kernel!r}."
            )
        if self.x_dist not in ("uniform", "normal"):
            raise InvalidConfigError(
                f"GPPrior.x_dist must be 'uniform' or 'normal'. Got {self.x_dist!r}."
            )
        check_task("GPPrior", self.task)
        _check_positive("lengthscale", self.lengthscale, strict=True)
        _check_positive("outputscale", self.outputscale, strict=True)
        _check_positive("noise", self.noise, strict=False)
        if self.min_features < 1:
            raise InvalidConfigError(f"GPPrior.min_features must be >= 1. Got {self.min_features}.")
        if self.max_classes < 2:
            raise InvalidConfigError(f"GPPrior.max_classes must be >= 2. Got {self.max_classes}.")

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n = shape.batch_size, shape.n_rows
        x, n_feat = draw_inputs(shape, self.min_features, generator, self.x_dist)
        ls = draw(self.lengthscale, b, generator).double()
        os_ = draw(self.outputscale, b, generator).double()
        noise = draw(self.noise, b, generator).double()
        xd = x.double()
        cov = kernel_matrix(xd, xd, self.kernel, ls, os_)
        cov = cov + (noise[:, None, None] + 1e-8) * torch.eye(n, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        z = torch.randn(b, n, 1, generator=generator, dtype=torch.float64)
        y = (chol @ z).squeeze(-1).float()  # (B, N)
        extras = {"lengthscale": ls.float(), "outputscale": os_.float(), "noise": noise.float()}
        return finish_batch(x, y, shape, n_feat, extras, self.task, self.max_classes, generator)


def _check_positive(name: str, value: Param, *, strict: bool) -> None:
    """Every value a field (fixed, or a hyperprior's support) can take is > 0 (>= 0)."""
    if isinstance(value, Uniform | LogUniform):
        values: tuple[float, ...] = (value.low, value.high)
    elif isinstance(value, Choice):
        values = tuple(value.values)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        values = (value,)
    else:
        values = ()
    bound = "> 0" if strict else ">= 0"
    ok = bool(values) and all(
        isinstance(v, int | float) and math.isfinite(v) and (v > 0 if strict else v >= 0)
        for v in values
    )
    if not ok:
        what = "kernel variance" if name == "outputscale" else name
        raise InvalidConfigError(
            f"GPPrior.{name} must be a number {bound} or a hyperprior whose values are all "
            f"{bound} (the GP's {what}). Got {value!r}; e.g. {name} = 0.5 or "
            f"{name} = {{log_uniform = [0.1, 1.0]}}."
        )


def exact_predictive(
    x_ctx: torch.Tensor,
    y_ctx: torch.Tensor,
    x_test: torch.Tensor,
    *,
    kernel: str,
    lengthscale: float,
    outputscale: float,
    noise: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact GP posterior predictive of noisy test targets.

    Args:
        x_ctx: (B, N, F) context inputs; y_ctx: (B, N) context targets; x_test: (B, M, F).

    Returns:
        mean (B, M) and variance (B, M) of y at x_test (noise included), in float64.
    """
    b = x_ctx.shape[0]
    xc, xt, yc = x_ctx.double(), x_test.double(), y_ctx.double()
    ls = torch.full((b,), float(lengthscale), dtype=torch.float64)
    os_ = torch.full((b,), float(outputscale), dtype=torch.float64)
    n = xc.shape[1]
    k_cc = kernel_matrix(xc, xc, kernel, ls, os_) + noise * torch.eye(n, dtype=torch.float64)
    k_tc = kernel_matrix(xt, xc, kernel, ls, os_)  # (B, M, N)
    chol = torch.linalg.cholesky(k_cc)
    alpha = torch.cholesky_solve(yc[..., None], chol)  # (B, N, 1)
    mean = (k_tc @ alpha).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, k_tc.transpose(1, 2), upper=False)  # (B, N, M)
    var = outputscale - v.square().sum(1) + noise
    return mean, var.clamp_min(1e-12)
