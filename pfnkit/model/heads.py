"""Output heads: classification over up to C classes, and the bar (Riemann) distribution.

Shape legend: B batch, M test rows, K outputs (classes or bars).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.exceptions import InvalidConfigError

_HALF_NORMAL_MEDIAN = 0.6744897501960817  # Phi^-1(0.75): half the tail mass lies in its bar


def classification_loss(
    logits: torch.Tensor, target: torch.Tensor, n_classes: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row cross-entropy (B, M); classes >= n_classes[b] are masked out."""
    logits = mask_classes(logits, n_classes)
    return F.cross_entropy(logits.transpose(1, 2).float(), target.long(), reduction="none")


def mask_classes(logits: torch.Tensor, n_classes: torch.Tensor | None) -> torch.Tensor:
    """Set logits of classes a dataset does not have to -inf. logits: (B, M, C)."""
    if n_classes is None:
        return logits
    valid = torch.arange(logits.shape[-1], device=logits.device) < n_classes[:, None, None]
    return logits.masked_fill(~valid, float("-inf"))


class BarDistribution(nn.Module):
    """A piecewise-constant density over K buckets with half-normal tails (full support).

    The interior buckets are uniform on [borders[i], borders[i + 1]]; the first and last
    buckets are half-normals reaching to -inf and +inf from borders[1] and borders[-2],
    scaled so that half of their mass lies within the bucket's width.

    Args:
        borders: (K + 1,) strictly increasing bucket borders.
    """

    borders: torch.Tensor

    def __init__(self, borders: torch.Tensor) -> None:
        super().__init__()
        borders = torch.as_tensor(borders, dtype=torch.float32)
        if borders.dim() != 1 or borders.numel() < 3:
            raise InvalidConfigError(
                "BarDistribution borders must be 1-D with >= 3 entries. "
                f"Got {tuple(borders.shape)}."
            )
        if not bool((borders[1:] > borders[:-1]).all()):
            raise InvalidConfigError("BarDistribution borders must be strictly increasing.")
        self.register_buffer("borders", borders)

    @property
    def n_bars(self) -> int:
        return self.borders.numel() - 1

    @property
    def widths(self) -> torch.Tensor:
        return self.borders[1:] - self.borders[:-1]

    def _tail_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.widths
        return w[0] / _HALF_NORMAL_MEDIAN, w[-1] / _HALF_NORMAL_MEDIAN

    def bucket(self, y: torch.Tensor) -> torch.Tensor:
        """Index of the bucket each y falls in (tails include everything beyond)."""
        return torch.searchsorted(
            self.borders[1:-1].contiguous(), y.contiguous(), right=False
        ).clamp(0, self.n_bars - 1)

    def nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log density of y (...,) under logits (..., K)."""
        logp = logits.float().log_softmax(-1)
        y = y.float()
        idx = self.bucket(y)
        lp = logp.gather(-1, idx[..., None]).squeeze(-1)
        w = self.widths
        s_lo, s_hi = self._tail_scales()
        b1, bk = self.borders[1], self.borders[-2]
        log_in = -torch.log(w[idx])
        log_lo = _half_normal_logpdf((b1 - y).clamp_min(0), s_lo)
        log_hi = _half_normal_logpdf((y - bk).clamp_min(0), s_hi)
        log_dens = torch.where(
            idx == 0, log_lo, torch.where(idx == self.n_bars - 1, log_hi, log_in)
        )
        return -(lp + log_dens)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        p = logits.float().softmax(-1)
        mids = (self.borders[1:] + self.borders[:-1]) / 2
        s_lo, s_hi = self._tail_scales()
        c = math.sqrt(2 / math.pi)
        mids = torch.cat(
            [(self.borders[1] - c * s_lo)[None], mids[1:-1], (self.borders[-2] + c * s_hi)[None]]
        )
        return p @ mids

    def _mean_below(self, c: torch.Tensor) -> torch.Tensor:
        """E[min(Y_k, c)] for each bucket's own distribution Y_k: (..., K) for c (...)."""
        b = self.borders.double()
        lo, hi = b[:-1], b[1:]
        c = c.double()[..., None]
        # interior buckets, uniform on [lo, hi]: c below, the midpoint above, else in part
        part = ((c.square() - lo.square()) / 2 + c * (hi - c)) / (hi - lo)
        inner = torch.where(c <= lo, c, torch.where(c >= hi, (lo + hi) / 2, part))
        s_lo, s_hi = (s.double() for s in self._tail_scales())
        phi0 = 1 / math.sqrt(2 * math.pi)

        def normal_pdf(v: torch.Tensor) -> torch.Tensor:
            return phi0 * torch.exp(-0.5 * v.square())

        # right tail Y = b_K + T, T = s|Z|: E[min(T, u)] = 2 s (v Phi(-v) - phi(v) + phi(0))
        v = ((c[..., 0] - b[-2]) / s_hi).clamp_min(0)
        right = b[-2] + 2 * s_hi * (v * torch.special.ndtr(-v) - normal_pdf(v) + phi0)
        right = torch.where(c[..., 0] <= b[-2], c[..., 0], right)
        # left tail Y = b_1 - T: min(Y, c) = c - (c - Y)+, E[(T - d)+] = 2 s (phi(v) - v Phi(-v))
        v = ((b[1] - c[..., 0]) / s_lo).clamp_min(0)
        left = c[..., 0] - 2 * s_lo * (normal_pdf(v) - v * torch.special.ndtr(-v))
        left = torch.where(c[..., 0] >= b[1], b[1] - s_lo * math.sqrt(2 / math.pi), left)
        return torch.cat([left[..., None], inner[..., 1:-1], right[..., None]], dim=-1)

    def clipped_mean(
        self, logits: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor
    ) -> torch.Tensor:
        """E[clip(Y, low, high)]: the mean of the predictive with the mass beyond [low, high]
        moved onto those bounds (exact for the uniform buckets and half-normal tails).
        ``low``/``high`` are floats or tensors broadcastable to logits[..., 0]; low <= high."""
        p = logits.double().softmax(-1)
        low_t = torch.as_tensor(low, dtype=torch.float64).expand(p.shape[:-1])
        high_t = torch.as_tensor(high, dtype=torch.float64).expand(p.shape[:-1])
        if bool((low_t > high_t).any()):
            raise InvalidConfigError("clipped_mean needs low <= high.")
        # min(max(Y, low), high) = min(Y, high) - min(Y, low) + low
        per_bar = self._mean_below(high_t) - self._mean_below(low_t)
        return ((p * per_bar).sum(-1) + low_t).float()

    def variance(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictive variance (law of total variance over buckets)."""
        p = logits.float().softmax(-1)
        lo, hi = self.borders[:-1], self.borders[1:]
        m2 = (lo.square() + lo * hi + hi.square()) / 3  # E[y^2] of a uniform bucket
        s_lo, s_hi = self._tail_scales()
        c = math.sqrt(2 / math.pi)
        b1, bk = self.borders[1], self.borders[-2]
        # half-normal tail: E[(b - s|Z|)^2] = b^2 - 2 b s c + s^2
        m2 = torch.cat(
            [
                (b1.square() - 2 * b1 * s_lo * c + s_lo.square())[None],
                m2[1:-1],
                (bk.square() + 2 * bk * s_hi * c + s_hi.square())[None],
            ]
        )
        mean = self.mean(logits)
        return (p @ m2 - mean.square()).clamp_min(0)

    def quantile(self, logits: torch.Tensor, q: float | torch.Tensor) -> torch.Tensor:
        """The q-quantile(s); q a float or a tensor broadcastable to logits[..., 0]."""
        p = logits.float().softmax(-1)
        q_t = torch.as_tensor(q, dtype=p.dtype, device=p.device).expand(p.shape[:-1])
        if bool(((q_t <= 0) | (q_t >= 1)).any()):
            raise InvalidConfigError(f"Quantile levels must lie strictly in (0, 1). Got {q}.")
        cdf = p.cumsum(-1)
        idx = torch.searchsorted(cdf.contiguous(), q_t[..., None].contiguous()).squeeze(-1)
        idx = idx.clamp(0, self.n_bars - 1)
        before = torch.where(
            idx > 0, cdf.gather(-1, (idx - 1).clamp_min(0)[..., None]).squeeze(-1), 0.0
        )
        pi = p.gather(-1, idx[..., None]).squeeze(-1).clamp_min(1e-12)
        rel = ((q_t - before) / pi).clamp(1e-6, 1 - 1e-6)
        lo = self.borders[idx]
        inner = lo + rel * self.widths[idx]
        s_lo, s_hi = self._tail_scales()
        # left tail: P(Y <= y | tail) = 2 (1 - Phi((b1 - y) / s))
        left = self.borders[1] - s_lo * torch.special.ndtri(1 - rel / 2)
        right = self.borders[-2] + s_hi * torch.special.ndtri((1 + rel) / 2)
        return torch.where(idx == 0, left, torch.where(idx == self.n_bars - 1, right, inner))

    def median(self, logits: torch.Tensor) -> torch.Tensor:
        return self.quantile(logits, 0.5)

    def cdf(self, logits: torch.Tensor, y: float | torch.Tensor) -> torch.Tensor:
        """P(Y <= y) under logits (..., K); y a float or a tensor broadcastable to (...)."""
        p = logits.float().softmax(-1)
        y_t = torch.as_tensor(y, dtype=p.dtype, device=p.device).expand(p.shape[:-1])
        idx = self.bucket(y_t)
        cum = p.cumsum(-1)
        before = torch.where(
            idx > 0, cum.gather(-1, (idx - 1).clamp_min(0)[..., None]).squeeze(-1), 0.0
        )
        pi = p.gather(-1, idx[..., None]).squeeze(-1)
        rel = ((y_t - self.borders[idx]) / self.widths[idx]).clamp(0.0, 1.0)
        s_lo, s_hi = self._tail_scales()
        # the inverse of quantile()'s tails: left 2 (1 - Phi((b1 - y) / s)), right 2 Phi - 1
        left = 2 * torch.special.ndtr(-(self.borders[1] - y_t).clamp_min(0) / s_lo)
        right = 2 * torch.special.ndtr((y_t - self.borders[-2]).clamp_min(0) / s_hi) - 1
        frac = torch.where(idx == 0, left, torch.where(idx == self.n_bars - 1, right, rel))
        return (before + pi * frac).clamp(0.0, 1.0)


def _half_normal_logpdf(d: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (
        math.log(2.0) - 0.5 * math.log(2 * math.pi) - torch.log(scale) - 0.5 * (d / scale).square()
    )


def borders_from_targets(targets: torch.Tensor, n_bars: int) -> torch.Tensor:
    """n_bars + 1 borders at equal-mass quantiles of sampled targets, strictly increasing."""
    t = targets.flatten().double()
    t = t[torch.isfinite(t)]
    if t.numel() < 2 * n_bars:
        raise InvalidConfigError(
            f"Need at least {2 * n_bars} target samples to place {n_bars} bars. Got {t.numel()}."
        )
    if t.numel() > 4_000_000:
        t = t[torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))[:4_000_000]]
    qs = torch.linspace(0, 1, n_bars + 1, dtype=torch.float64)
    borders = torch.quantile(t, qs)
    span = float(borders[-1] - borders[0]) or 1.0
    min_gap = span * 1e-6
    # discrete targets give repeated quantiles; push each border past the previous one
    for i in range(1, borders.numel()):
        if borders[i] <= borders[i - 1] + min_gap:
            borders[i] = borders[i - 1] + min_gap
    return borders.float()
