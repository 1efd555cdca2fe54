"""Learning-curve prior: parametric curve families with noise, plateaus and divergence.

A dataset is one learning curve. Row i holds the step ``t_i`` as the feature
``x_i = t_i / T`` (T is the curve's horizon, so x lies in (0, 1]) and the curve's value as the
target. The context rows are the first ``single_eval_pos`` steps (1, 2, ..., in order: the
curve is right-censored there) and the test rows are later steps up to the horizon, always
including the last one. Horizons vary per curve, so one network serves curves of 10 to a few
hundred steps.

The curve families are those of Domhan et al. (2015) used by LC-PFN, written as *progress*
functions g(t) that rise from g(0) = 0 towards 1 with a random speed s (t = s * x). After this
normalisation some of Domhan's families coincide: Janoschek, Weibull and exp4 all become
1 - exp(-t^d) ("janoschek"), MMF and log power both become t^d / (1 + t^d) ("mmf"), and pow4
differs from pow3 by a shape exponent. A curve is

    y(x) = y0 + (c - y0) * sum_k w_k g_k(s_k x)   (+ plateau, jump, divergence)   + noise

with K families drawn per curve and Dirichlet(1) weights w. Curves increase (accuracies);
``direction="minimize"`` flips them (1 - y) for priors over losses. Observation noise is
Gaussian and is not clipped: the noise-free curve stays in [0, 1], observations may leave it
by the noise.

Shape legend: B batch, N rows, F features.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import Batch, BatchShape, LogUniform, Param, Task, draw


@dataclass(frozen=True)
class ParamSpec:
    """A curve parameter drawn uniformly (or log-uniformly) from [low, high]."""

    name: str
    low: float
    high: float
    log: bool = False

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return torch.exp(lo + (hi - lo) * u)
        return self.low + (self.high - self.low) * u

    def log_density(self, v: torch.Tensor) -> torch.Tensor:
        """Log density of the parameter's prior at v (-inf outside [low, high])."""
        inside = (v >= self.low) & (v <= self.high)
        if self.log:
            dens = -torch.log(v.clamp_min(1e-300)) - math.log(math.log(self.high / self.low))
        else:
            dens = torch.full_like(v, -math.log(self.high - self.low))
        return torch.where(inside, dens, torch.full_like(v, -math.inf))


Progress = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]

SPEED = ParamSpec("speed", 0.3, 300.0, log=True)
SHAPE = ParamSpec("shape", 0.3, 3.0, log=True)


def _pow3(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return 1 - (1 + t) ** (-p["alpha"])


def _pow4(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return 1 - (1 + t ** p["beta"]) ** (-p["alpha"])


def _exp3(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -torch.expm1(-t)


def _janoschek(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -torch.expm1(-(t ** p["shape"]))


def _mmf(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    td = t ** p["shape"]
    return td / (1 + td)


def _ilog2(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return 1 - 1 / (1 + torch.log1p(t))


def _log_log_linear(t: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    # unbounded in t: normalised to reach 1 at the horizon (x = 1, t = speed)
    return torch.log1p(torch.log1p(t)) / torch.log1p(torch.log1p(p["speed"]))


@dataclass(frozen=True)
class CurveFamily:
    """A progress function g(t; params) with g(0) = 0, rising towards 1."""

    params: tuple[ParamSpec, ...]
    fn: Progress

    def __call__(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """g at x (..., N) with parameters p[name] of shape (..., 1)."""
        return self.fn(p["speed"] * x, p)


FAMILIES: dict[str, CurveFamily] = {
    "pow3": CurveFamily((SPEED, ParamSpec("alpha", 0.2, 3.0, log=True)), _pow3),
    "pow4": CurveFamily(
        (SPEED, ParamSpec("alpha", 0.2, 3.0, log=True), ParamSpec("beta", 0.5, 2.0)), _pow4
    ),
    "exp3": CurveFamily((SPEED,), _exp3),
    "janoschek": CurveFamily((SPEED, SHAPE), _janoschek),
    "mmf": CurveFamily((SPEED, SHAPE), _mmf),
    "ilog2": CurveFamily((SPEED,), _ilog2),
    "log_log_linear": CurveFamily((SPEED,), _log_log_linear),
}


def check_families(owner: str, families: Any) -> tuple[str, ...]:
    """``families`` as a tuple of distinct known family names, or a clear error."""
    fams = tuple(families)
    if not fams or len(set(fams)) != len(fams) or any(f not in FAMILIES for f in fams):
        unknown = [f for f in fams if f not in FAMILIES]
        raise InvalidConfigError(
            f"{owner}.families must name distinct families from {', '.join(FAMILIES)}."
            + "".join(f" Got an unknown family {u!r}." for u in unknown[:1])
            + f" Got {fams!r}."
        )
    return fams


# shared curve parameters: start value, and the asymptote as a fraction of the way to 1
START = ParamSpec("y0", 0.0, 0.7)
GAIN = ParamSpec("gain", 0.05, 1.0)


def curve_mean(
    x: torch.Tensor,
    y0: torch.Tensor,
    gain: torch.Tensor,
    weights: torch.Tensor,
    family_params: dict[str, dict[str, torch.Tensor]],
    families: tuple[str, ...],
) -> torch.Tensor:
    """Noise-free curves (B, N) at x (B, N) of the plain parametric model.

    y0, gain: (B,); weights: (B, K) over ``families``; family_params[f][name]: (B,).
    This is the model an MCMC baseline samples; the prior adds plateaus and divergence.
    """
    progress = torch.zeros_like(x)
    for k, fam in enumerate(families):
        p = {name: v[:, None] for name, v in family_params[fam].items()}
        progress = progress + weights[:, k : k + 1] * FAMILIES[fam](x, p)
    c = y0 + (1 - y0) * gain
    return y0[:, None] + (c - y0)[:, None] * progress


@dataclass(frozen=True)
class LearningCurvePrior:
    """Learning curves from weighted parametric families (LC-PFN's prior, extended).

    Args:
        families: curve families to draw from (see ``FAMILIES``).
        min_components: fewest families combined in one curve.
        max_components: most families combined in one curve (Dirichlet(1) weights; at
            most all of ``families``).
        noise: observation noise standard deviation; fixed or a hyperprior.
        p_plateau: probability of a flat start (training that takes a while to move).
        p_jump: probability of a late jump up (a learning-rate decay step).
        p_divergence: probability that the curve degrades after a random point: slowly
            (overfitting) or, in a third of those cases, collapsing to its start value.
        min_horizon: shortest curve horizon T in steps.
        max_horizon: longest curve horizon T in steps.
        direction: "maximize" (rising curves such as accuracies) or "minimize" (1 - y:
            falling curves such as normalised losses).
        task: always "regression".
    """

    name: ClassVar[str] = "learning_curve"
    families: tuple[str, ...] = tuple(FAMILIES)
    min_components: int = 1
    max_components: int = 3
    noise: Param = LogUniform(0.001, 0.05)
    p_plateau: float = 0.1
    p_jump: float = 0.1
    p_divergence: float = 0.1
    min_horizon: int = 10
    max_horizon: int = 200
    direction: Literal["maximize", "minimize"] = "maximize"
    task: Task = "regression"

    def __post_init__(self) -> None:
        fams = check_families("LearningCurvePrior", self.families)
        object.__setattr__(self, "families", fams)  # recipes give lists; keep it hashable
        if not 1 <= self.min_components <= min(self.max_components, len(fams)):
            raise InvalidConfigError(
                "LearningCurvePrior needs 1 <= min_components <= max_components and "
                f"min_components <= len(families) = {len(fams)}. Got "
                f"min_components={self.min_components}, max_components={self.max_components}."
            )
        for name in ("p_plateau", "p_jump", "p_divergence"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidConfigError(f"LearningCurvePrior.{name} must be in [0, 1]. Got {v}.")
        if not 2 <= self.min_horizon <= self.max_horizon:
            raise InvalidConfigError(
                "LearningCurvePrior needs 2 <= min_horizon <= max_horizon. Got "
                f"min_horizon={self.min_horizon}, max_horizon={self.max_horizon}."
            )
        if self.direction not in ("maximize", "minimize"):
            raise InvalidConfigError(
                "LearningCurvePrior.direction must be 'maximize' or 'minimize'. "
                f"Got {self.direction!r}."
            )
        if self.task != "regression":
            raise InvalidConfigError(
                f"LearningCurvePrior.task must be 'regression'. Got {self.task!r}."
            )

    # ------------------------------------------------------------------ sampling

    def steps(
        self, shape: BatchShape, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps (B, N) and horizons (B,): context 1..sep, then later test steps."""
        b, n, sep = shape.batch_size, shape.n_rows, shape.single_eval_pos
        lo = max(sep + 1, self.min_horizon)
        hi = max(self.max_horizon, lo)
        horizon = torch.randint(lo, hi + 1, (b,), generator=generator)
        m = n - sep
        # test steps: uniform over sep+1 .. horizon (with repeats when there are fewer
        # steps than test rows), plus the last step itself
        u = torch.rand(b, m - 1, generator=generator, dtype=torch.float64)
        span = (horizon - sep).double()[:, None]
        test = sep + 1 + (u * span).floor().clamp_max(span - 1)
        test = torch.cat([test.sort(1).values, horizon.double()[:, None]], 1)
        steps = torch.cat([torch.arange(1, sep + 1, dtype=torch.float64).expand(b, sep), test], 1)
        return steps, horizon

    def draw_parameters(
        self, b: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """(y0, gain, weights (B, K), per-family parameters) of B curves."""
        fams = self.families
        y0 = START.sample(b, generator)
        gain = GAIN.sample(b, generator)
        most = min(self.max_components, len(fams))
        k = torch.randint(self.min_components, most + 1, (b,), generator=generator)
        keys = torch.rand(b, len(fams), generator=generator)
        rank = keys.argsort(1).argsort(1)  # a random order of the families per curve
        chosen = rank < k[:, None]
        w = -torch.log(torch.rand(b, len(fams), generator=generator, dtype=torch.float64))
        w = torch.where(chosen, w, torch.zeros_like(w))
        w = w / w.sum(1, keepdim=True)
        params = {
            fam: {spec.name: spec.sample(b, generator) for spec in FAMILIES[fam].params}
            for fam in fams
        }
        return y0, gain, w, params

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        b, n, f = shape.batch_size, shape.n_rows, shape.n_features
        steps, horizon = self.steps(shape, generator)
        x = steps / horizon[:, None].double()  # (B, N) in (0, 1]
        y0, gain, w, params = self.draw_parameters(b, generator)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, 1, generator=generator, dtype=torch.float64)

        def coin(p: float) -> torch.Tensor:
            return torch.rand(b, 1, generator=generator) < p

        # a flat start: progress begins at x_p instead of 0
        x_p = torch.where(coin(self.p_plateau), uniform(0.0, 0.3), torch.zeros(b, 1).double())
        x_eff = ((x - x_p) / (1 - x_p)).clamp_min(0.0)
        y = curve_mean(x_eff, y0, gain, w, params, self.families)
        # a learning-rate step: a quick rise by a fraction of the remaining gap to 1
        jump = coin(self.p_jump)
        x_j, size = uniform(0.2, 0.9), uniform(0.1, 0.8)
        rise = -torch.expm1(-50.0 * (x - x_j).clamp_min(0.0))
        y = torch.where(jump, y + size * (1 - y) * rise, y)
        # divergence: a slow decline towards the start value, or a collapse to it
        div = coin(self.p_divergence)
        collapse = coin(1 / 3)
        x_d, depth = uniform(0.1, 1.0), uniform(0.05, 1.0)
        past = ((x - x_d) / (1 - x_d).clamp_min(1e-6)).clamp(0.0, 1.0)
        start = y0[:, None]
        declined = y - depth * (y - start) * past
        collapsed = torch.where(x > x_d, start.expand_as(y), y)
        y = torch.where(div, torch.where(collapse, collapsed, declined), y)

        noise = draw(self.noise, b, generator).double()
        y = y + noise[:, None] * torch.randn(b, n, generator=generator, dtype=torch.float64)
        if self.direction == "minimize":
            y = 1 - y
        xs = torch.zeros(b, n, f)
        xs[:, :, 0] = x.float()
        y32 = y.float()
        return Batch(
            x=xs,
            y=y32,
            target_y=y32.clone(),
            single_eval_pos=shape.single_eval_pos,
            n_features=torch.ones(b, dtype=torch.int64),
            extras={"horizon": horizon, "noise_std": noise.float()},
        )
