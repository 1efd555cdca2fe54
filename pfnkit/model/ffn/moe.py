"""Mixture of experts with top-k routing (Mixtral-style top-2 of 8 by default).

Shape legend: T tokens (rows), E d_model, H expert hidden width, X experts, K experts per
token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn._base import FFNBlock

DISPATCHES = ("loop", "sorted", "grouped")
ROUTERS = ("learned", "hash")


class MoEBlock(FFNBlock):
    """Top-k mixture of GELU-MLP experts.

    Args:
        n_experts: number of experts X.
        top_k: experts per token K (gates: softmax over the K chosen router logits).
        expert_dim: hidden width of each expert (default d_ffn: every expert is as wide as
            the dense FFN, as in Mixtral).
        router: "learned" (a linear router) or "hash" (a fixed random projection picks one
            expert per token; nothing to learn, no balance loss needed).
        capacity_factor: 0 for dropless dispatch; else each expert takes at most
            ceil(capacity_factor * T * K / X) tokens and the rest of its tokens are dropped
            (their residual passes through unchanged).
        dispatch: "loop" (per expert, gather its tokens), "sorted" (sort assignments by
            expert and run contiguous segments) or "grouped" (sorted, one grouped matmul via
            torch.nn.functional.grouped_mm). All three agree numerically.
        balance_weight: weight of the Switch load-balancing loss X * sum_i f_i P_i.
        z_weight: weight of the router z-loss mean(logsumexp(logits)^2).
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        n_experts: int = 8,
        top_k: int = 2,
        expert_dim: int = 0,
        router: str = "learned",
        capacity_factor: float = 0.0,
        dispatch: str = "sorted",
        balance_weight: float = 0.01,
        z_weight: float = 0.001,
    ) -> None:
        super().__init__(d_model, d_ffn)
        if n_experts < 1:
            raise InvalidConfigError(f"moe option n_experts must be >= 1. Got {n_experts}.")
        if not 1 <= top_k <= n_experts:
            raise InvalidConfigError(
                f"moe option top_k must be in [1, n_experts={n_experts}]. Got {top_k}."
            )
        if router not in ROUTERS:
            raise InvalidConfigError(f"moe option router must be one of {ROUTERS}. Got {router!r}.")
        if dispatch not in DISPATCHES:
            raise InvalidConfigError(
                f"moe option dispatch must be one of {DISPATCHES}. Got {dispatch!r}."
            )
        if capacity_factor < 0:
            raise InvalidConfigError(
                f"moe option capacity_factor must be >= 0 (0 = dropless). Got {capacity_factor}."
            )
        h = expert_dim or d_ffn
        if dispatch == "grouped" and (not hasattr(F, "grouped_mm") or d_model % 4 or h % 4):
            raise InvalidConfigError(
                "moe dispatch 'grouped' needs torch.nn.functional.grouped_mm and d_model and "
                f"expert_dim divisible by 4 (got {d_model}, {h}); use dispatch='sorted'."
            )
        self.n_experts, self.top_k, self.expert_dim = n_experts, top_k, h
        self.router_kind, self.dispatch = router, dispatch
        self.capacity_factor = capacity_factor
        self.balance_weight, self.z_weight = balance_weight, z_weight
        self.router = nn.Linear(d_model, n_experts, bias=False)
        if router == "hash":
            self.router.weight.requires_grad_(False)
        self.w1 = nn.Parameter(torch.randn(n_experts, d_model, h) / math.sqrt(d_model))
        self.b1 = nn.Parameter(torch.zeros(n_experts, h))
        self.w2 = nn.Parameter(torch.randn(n_experts, h, d_model) / math.sqrt(h))
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model))

    # ------------------------------------------------------------------ routing

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert ids (T, K'), gates (T, K'), router logits (T, X)) for tokens x (T, E)."""
        logits = self.router(x)
        if self.router_kind == "hash":
            idx = logits.argmax(-1, keepdim=True)  # a fixed random projection decides
            return idx, torch.ones_like(idx, dtype=x.dtype), logits
        top, idx = logits.topk(self.top_k, dim=-1)
        return idx, top.softmax(-1), logits

    def _assignments(
        self, idx: torch.Tensor, gates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat (expert, token, gate) triples, capacity-limited when configured."""
        t, k = idx.shape
        expert = idx.reshape(-1)
        token = torch.arange(t, device=idx.device).repeat_interleave(k)
        gate = gates.reshape(-1)
        if self.capacity_factor > 0:
            cap = math.ceil(self.capacity_factor * t * k / self.n_experts)
            onehot = F.one_hot(expert, self.n_experts)
            position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # rank within its expert
            keep = position < cap
            expert, token, gate = expert[keep], token[keep], gate[keep]
        return expert, token, gate

    # ------------------------------------------------------------------ experts

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead, e_dim = h.shape[:-1], h.shape[-1]
        x = h.reshape(-1, e_dim)
        idx, gates, logits = self.route(x)
        expert, token, gate = self._assignments(idx, gates)
        out = torch.zeros_like(x)
        if self.dispatch == "loop":
            for e in range(self.n_experts):
                sel = expert == e
                if sel.any():
                    y = self._expert(e, x[token[sel]]) * gate[sel, None]
                    out = out.index_add(0, token[sel], y)
        else:
            order = torch.argsort(expert, stable=True)
            expert, token, gate = expert[order], token[order], gate[order]
            counts = torch.bincount(expert, minlength=self.n_experts)
            xs = x[token]  # (A, E) assignments grouped by expert
            if self.dispatch == "grouped" and xs.shape[0] > 0:
                offs = counts.cumsum(0).to(torch.int32)
                hid = F.grouped_mm(xs, self.w1, offs=offs) + self.b1[expert]
                ys = F.grouped_mm(F.gelu(hid), self.w2, offs=offs) + self.b2[expert]
            else:
                parts = [
                    self._expert(e, seg)
                    for e, seg in enumerate(xs.split(counts.tolist()))
                    if seg.shape[0] > 0
                ]
                ys = torch.cat(parts) if parts else xs.new_zeros(0, e_dim)
            out = out.index_add(0, token, ys * gate[:, None])
        self.aux_loss = self._aux(logits, idx) if self.training else None
        return out.reshape(*lead, e_dim)

    def _aux(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | None:
        if self.router_kind == "hash":
            return None
        probs = logits.float().softmax(-1)  # (T, X)
        frac = torch.bincount(idx.reshape(-1), minlength=self.n_experts).float() / idx.numel()
        balance = self.n_experts * (frac * probs.mean(0)).sum()
        z = torch.logsumexp(logits.float(), dim=-1).square().mean()
        return self.balance_weight * balance + self.z_weight * z

    @property
    def active_params_per_token(self) -> int:
        e, h = self.d_model, self.expert_dim
        k = 1 if self.router_kind == "hash" else self.top_k
        return self.router.weight.numel() + k * (e * h + h + h * e + e)

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.w2)
        nn.init.zeros_(self.b2)
