"""Freeze-thaw prior: many learning curves per task, shaped by their hyperparameters.

A dataset is one HPO task: ``n`` configurations with hyperparameters h in [0, 1]^d, each
with a learning curve over steps 1..T. The curve parameters of the learning-curve prior
(start, gain, family speeds and shapes, family weights) are a smooth random function of h:
a random tanh network per task maps h to latent values, which pass through a normal CDF
into each parameter's range. Configurations close in h have similar curves, so observing
some curves tells the network about the others (what a freeze-thaw surrogate must learn).

Rows are (step / T, curve tag, h_1..h_d) -> value. The curve tag is a random number per
configuration: it tells rows of different configurations apart even when their h coincide
(categorical hyperparameters). The context holds the observed prefix of every curve (most
configurations are seen for a few steps, a few for many; some not at all); the test rows
are later steps of any configuration, a third of them the final step T.

Shape legend: B batch, N rows, F features (F = 2 + largest d), C configurations, T steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import Batch, BatchShape, LogUniform, Param, Task, draw
from pfnkit.priors.learning_curves import (
    FAMILIES,
    GAIN,
    START,
    ParamSpec,
    check_families,
    curve_mean,
)

N_FIXED_FEATURES = 2  # step / T and the curve tag


@dataclass(frozen=True)
class FreezeThawPrior:
    """Correlated learning curves of many configurations of one task (FT-PFN's prior).

    Args:
        families: curve families (see ``pfnkit.priors.learning_curves.FAMILIES``).
        max_components: most families combined per task (each configuration weights them
            by its own hyperparameters).
        min_configs: fewest configurations per task.
        max_configs: most configurations per task (more are added when the context needs
            them).
        min_horizon: shortest horizon T in steps.
        max_horizon: longest horizon T in steps.
        hidden: width of the random network from hyperparameters to curve parameters.
        sensitivity: how strongly the hyperparameters move the curve parameters; fixed or
            a hyperprior (small: all curves alike; large: every configuration different).
        noise: observation noise standard deviation; fixed or a hyperprior.
        p_divergence: per-task ceiling of the probability that a configuration collapses to
            its start value at a random step.
        task: always "regression".
    """

    name: ClassVar[str] = "freeze_thaw"
    families: tuple[str, ...] = tuple(FAMILIES)
    max_components: int = 3
    min_configs: int = 2
    max_configs: int = 40
    min_horizon: int = 10
    max_horizon: int = 100
    hidden: int = 16
    sensitivity: Param = LogUniform(0.3, 3.0)
    noise: Param = LogUniform(0.001, 0.03)
    p_divergence: float = 0.2
    task: Task = "regression"

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", check_families("FreezeThawPrior", self.families))
        checks = [
            ("max_components", self.max_components >= 1),
            ("min_configs", self.min_configs >= 1),
            ("max_configs", self.max_configs >= self.min_configs),
            ("min_horizon", self.min_horizon >= 2),
            ("max_horizon", self.max_horizon >= self.min_horizon),
            ("hidden", self.hidden >= 1),
            ("p_divergence", 0.0 <= self.p_divergence <= 1.0),
        ]
        for name, ok in checks:
            if not ok:
                raise InvalidConfigError(
                    f"FreezeThawPrior.{name} is out of range ({getattr(self, name)!r}): need "
                    "max_components >= 1, 1 <= min_configs <= max_configs, "
                    "2 <= min_horizon <= max_horizon, hidden >= 1, p_divergence in [0, 1]."
                )
        if self.task != "regression":
            raise InvalidConfigError(
                f"FreezeThawPrior.task must be 'regression'. Got {self.task!r}."
            )

    # ------------------------------------------------------------------ one task

    def curves(self, h: torch.Tensor, horizon: int, generator: torch.Generator) -> torch.Tensor:
        """Noise-free curves (C, T) at steps 1..T of configurations h (C, d) of one task."""
        c, d = h.shape
        fams = [
            self.families[i]
            for i in torch.randperm(len(self.families), generator=generator)[
                : int(
                    torch.randint(
                        1,
                        min(self.max_components, len(self.families)) + 1,
                        (1,),
                        generator=generator,
                    )
                )
            ].tolist()
        ]
        specs: list[ParamSpec] = [START, GAIN]
        for fam in fams:
            specs += list(FAMILIES[fam].params)
        n_latent = len(specs) + len(fams)  # curve parameters, then family weight logits
        sens = float(draw(self.sensitivity, 1, generator))
        w1 = torch.randn(d, self.hidden, generator=generator, dtype=torch.float64) * (
            2.0 / math.sqrt(d)
        )
        b1 = torch.randn(self.hidden, generator=generator, dtype=torch.float64)
        w2 = torch.randn(self.hidden, n_latent, generator=generator, dtype=torch.float64)
        z = torch.tanh(h.double() @ w1 + b1) @ w2 / math.sqrt(self.hidden)  # (C, L)
        offset = torch.randn(n_latent, generator=generator, dtype=torch.float64)
        u = torch.special.ndtr(offset + sens * z)  # (C, L) in (0, 1)
        values = []
        for j, spec in enumerate(specs):
            if spec.log:
                lo, hi = math.log(spec.low), math.log(spec.high)
                values.append(torch.exp(lo + (hi - lo) * u[:, j]))
            else:
                values.append(spec.low + (spec.high - spec.low) * u[:, j])
        params: dict[str, dict[str, torch.Tensor]] = {}
        j = 2
        for fam in fams:
            params[fam] = {}
            for spec in FAMILIES[fam].params:
                params[fam][spec.name] = values[j]
                j += 1
        weights = (offset[j:] + sens * z[:, j:]).softmax(1)  # (C, K)
        x = (torch.arange(1, horizon + 1, dtype=torch.float64) / horizon).expand(c, horizon)
        y = curve_mean(x, values[0], values[1], weights, params, tuple(fams))
        # some configurations collapse to their start value (diverged training)
        p_div = float(torch.rand(1, generator=generator)) * self.p_divergence
        div = torch.rand(c, 1, generator=generator) < p_div
        x_d = torch.rand(c, 1, generator=generator, dtype=torch.float64)
        return torch.where(div & (x > x_d), values[0][:, None].expand_as(y), y)

    def allocate(
        self, n_configs: int, horizon: int, n_ctx: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Observed steps per configuration (C,), summing to n_ctx, each at most horizon."""
        # Dirichlet(1/2) shares (squared normals): most configurations get a few steps, a
        # few get many, as in successive halving or freeze-thaw
        g = torch.randn(n_configs, generator=generator).square()
        counts = torch.floor(g / g.sum() * n_ctx).long().clamp_max(horizon)
        # hand out what is left one step at a time to configurations with room, at random
        left = n_ctx - int(counts.sum())
        while left > 0:
            room = (counts < horizon).nonzero().squeeze(1)
            pick = room[
                torch.randint(0, room.numel(), (min(left, room.numel()),), generator=generator)
            ]
            counts.index_add_(0, pick, torch.ones_like(pick))
            counts.clamp_max_(horizon)
            left = n_ctx - int(counts.sum())
        return counts

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n, f = shape.batch_size, shape.n_rows, shape.n_features
        sep = shape.single_eval_pos
        if f < N_FIXED_FEATURES + 1:
            raise InvalidConfigError(
                f"FreezeThawPrior needs n_features >= 3 (step, curve tag, one hyperparameter). "
                f"Got {f}."
            )
        m = n - sep
        x = torch.zeros(b, n, f)
        y = torch.zeros(b, n, dtype=torch.float64)
        n_feat = torch.zeros(b, dtype=torch.int64)
        horizons = torch.zeros(b, dtype=torch.int64)
        for i in range(b):
            d = int(torch.randint(1, f - N_FIXED_FEATURES + 1, (1,), generator=generator))
            horizon = int(
                torch.randint(self.min_horizon, self.max_horizon + 1, (1,), generator=generator)
            )
            n_cfg = int(
                torch.randint(self.min_configs, self.max_configs + 1, (1,), generator=generator)
            )
            n_cfg = max(n_cfg, math.ceil(sep / horizon) + 1)  # room for the context and a test
            h = torch.rand(n_cfg, d, generator=generator, dtype=torch.float64)
            tag = torch.rand(n_cfg, generator=generator)
            curves = self.curves(h, horizon, generator)
            noise = float(draw(self.noise, 1, generator))
            obs = curves + noise * torch.randn(
                curves.shape, generator=generator, dtype=torch.float64
            )
            counts = self.allocate(n_cfg, horizon, sep, generator)
            # context rows: every configuration's observed prefix
            cfg_ctx = torch.repeat_interleave(torch.arange(n_cfg), counts)
            step_ctx = torch.cat([torch.arange(1, int(k) + 1) for k in counts]).long()
            # test rows: later steps of configurations that are not finished
            open_cfg = (counts < horizon).nonzero().squeeze(1)
            cfg_test = open_cfg[torch.randint(0, open_cfg.numel(), (m,), generator=generator)]
            lo = counts[cfg_test] + 1
            u = torch.rand(m, generator=generator)
            step_test = lo + (u * (horizon - lo + 1).double()).floor().long()
            step_test = step_test.clamp_max(horizon)
            final = torch.rand(m, generator=generator) < 1 / 3
            step_test = torch.where(final, torch.full_like(step_test, horizon), step_test)
            cfg = torch.cat([cfg_ctx, cfg_test])
            step = torch.cat([step_ctx, step_test])
            x[i, :, 0] = (step.double() / horizon).float()
            x[i, :, 1] = tag[cfg]
            x[i, :, 2 : 2 + d] = h[cfg].float()
            y[i] = obs[cfg, step - 1]
            n_feat[i] = N_FIXED_FEATURES + d
            horizons[i] = horizon
        y32 = y.float()
        return Batch(
            x=x,
            y=y32,
            target_y=y32.clone(),
            single_eval_pos=sep,
            n_features=n_feat,
            extras={"horizon": horizons},
        )
