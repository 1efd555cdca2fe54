"""The in-context freeze-thaw surrogate (FT-PFN): all partial curves in, predictions out.

Rows are (step / max_steps, curve tag, h_1..h_d) as in the ``freeze_thaw`` prior, with
values already mapped to [0, 1] (higher is better). One forward pass conditions on every
observed point of every configuration and predicts any (configuration, step) query.

Shape legend: Q queries, K bars, d hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pfnkit.exceptions import CheckpointError, InvalidConfigError

DEFAULT_CHECKPOINT = "freeze-thaw.safetensors"
N_FIXED = 2  # step / max_steps and the curve tag


@dataclass
class Curve:
    """The observed part of one configuration's curve (values mapped to [0, 1])."""

    h: np.ndarray  # (d,) hyperparameters in [0, 1]
    tag: float  # random identity in [0, 1]
    values: np.ndarray  # values at steps 1..n


class FreezeThawSurrogate:
    """Predictive distributions of later curve values given all partial curves.

    Args:
        checkpoint: "default" (bundled FT-PFN), a run directory, a checkpoint file, or a
            loaded PFN trained on the ``freeze_thaw`` prior.
        device: "cpu", "cuda", ...
        seed: seeds the choice of context points when there are more than the network's
            context holds (each curve's last point is always kept).
    """

    def __init__(self, checkpoint: Any = "default", *, device: str = "cpu", seed: int = 0):
        from pfnkit.model import BarDistribution
        from pfnkit.train.checkpoint import bundled_checkpoint_path, load_pfn

        source = (
            bundled_checkpoint_path(DEFAULT_CHECKPOINT, "freeze-thaw surrogate")
            if checkpoint == "default"
            else checkpoint
        )
        model, info = load_pfn(
            source, expect="freeze-thaw", device=device, what="FreezeThawSurrogate"
        )
        if model.bar_distribution is None or model.config.n_features <= N_FIXED:
            raise CheckpointError(
                "FreezeThawSurrogate needs a regression PFN trained on the freeze_thaw prior "
                f"(n_features >= 3). Got task {model.config.task!r}, n_features "
                f"{model.config.n_features}."
            )
        self.model = model
        self.device = device
        self.bars = BarDistribution(model.bar_distribution.borders.detach().cpu())
        self.max_hyperparameters = model.config.n_features - N_FIXED
        self.max_context = info.context_limit or 448
        self.rng = np.random.default_rng(seed)

    def _context(self, curves: list[Curve], max_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Context rows (step / max_steps, tag, h) and values of every observed point; when
        there are more than the network holds, each curve's last point plus a random
        subset of the others."""
        blocks, ys = [], []
        for c in curves:
            n = len(c.values)
            block = np.empty((n, N_FIXED + c.h.size), dtype=np.float32)
            block[:, 0] = np.arange(1, n + 1) / max_steps
            block[:, 1] = c.tag
            block[:, N_FIXED:] = c.h
            blocks.append(block)
            ys.append(np.asarray(c.values, dtype=np.float32))
        x, y = np.concatenate(blocks), np.concatenate(ys)
        if len(x) > self.max_context:
            last = np.cumsum([len(v) for v in ys]) - 1
            keep = last[: self.max_context]
            rest = np.setdiff1d(np.arange(len(x)), keep)
            room = self.max_context - keep.size
            if room > 0:
                keep = np.concatenate([keep, self.rng.choice(rest, room, replace=False)])
            keep.sort()
            x, y = x[keep], y[keep]
        return x, y

    @torch.no_grad()
    def logits(
        self,
        curves: list[Curve],
        query_h: np.ndarray,
        query_tag: np.ndarray,
        query_step: np.ndarray,
        max_steps: int,
    ) -> torch.Tensor:
        """Logits (Q, K) of the normalised value of each query (h, tag, step)."""
        d = query_h.shape[1]
        if d > self.max_hyperparameters:
            raise InvalidConfigError(
                f"The search space has {d} hyperparameters but this surrogate reads at most "
                f"{self.max_hyperparameters}. Fix some of them or train a wider FT-PFN "
                "(priors/freeze-thaw.toml, [model] n_features = 2 + d)."
            )
        q = np.concatenate(
            [(query_step / max_steps)[:, None], query_tag[:, None], query_h], axis=1
        ).astype(np.float32)
        observed = [c for c in curves if len(c.values)]
        if not observed:
            raise InvalidConfigError(
                "The surrogate needs at least one observed curve point to condition on."
            )
        x_ctx, y_ctx = self._context(observed, max_steps)
        x = np.zeros((1, len(x_ctx) + len(q), self.model.config.n_features), dtype=np.float32)
        x[0, : len(x_ctx), : N_FIXED + d] = x_ctx
        x[0, len(x_ctx) :, : N_FIXED + d] = q
        n_feat = torch.tensor([N_FIXED + d])
        out = self.model(
            torch.from_numpy(x).to(self.device),
            torch.from_numpy(y_ctx[None]).to(self.device),
            n_features=n_feat.to(self.device),
        )
        return out[0].float().cpu()

    def prob_above(self, logits: torch.Tensor, threshold: np.ndarray | float) -> np.ndarray:
        """P(value > threshold) per query (normalised units)."""
        t = torch.as_tensor(np.asarray(threshold, dtype=np.float32)).expand(logits.shape[0])
        return (1.0 - self.bars.cdf(logits, t)).double().numpy()

    def mean(self, logits: torch.Tensor) -> np.ndarray:
        return self.bars.mean(logits).double().numpy()
