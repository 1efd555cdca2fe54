"""Fast feedforward networks (Belcak & Wattenhofer): a binary tree of decision nodes over
leaf MLPs. Trained soft (every leaf, weighted by its path probability), run hard at
inference (each row descends depth nodes and evaluates one leaf).

Shape legend: T tokens (rows), E d_model, D depth, L = 2^D leaves, H leaf width.
Nodes are numbered heap-style: node i has children 2i + 1 (left) and 2i + 2 (right).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn._base import FFNBlock


class FFFBlock(FFNBlock):
    """Fast feedforward block; d_ffn = L * H is the total width of the leaves.

    Args:
        depth: tree depth D (L = 2^D leaves of width d_ffn / L).
        master_leaf: add an always-active dense leaf of width H ("Enhancing Fast Feed
            Forward Networks with Load Balancing and a Master Leaf Node").
        balance_weight: weight of the leaf load-balancing loss L * sum_l mean_p_l^2 - 1.
        hardening_weight: final weight of the hardening loss (mean binary entropy of the
            node decisions), ramped linearly over ``harden_steps`` training forwards.
        harden_steps: length of the hardening ramp.
        inference: "hard" (descend the tree; default) or "soft" outside training.
    """

    step: torch.Tensor

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        depth: int = 3,
        master_leaf: bool = False,
        balance_weight: float = 0.0,
        hardening_weight: float = 0.01,
        harden_steps: int = 2000,
        inference: str = "hard",
    ) -> None:
        super().__init__(d_model, d_ffn)
        if depth < 0 or (2**depth) > d_ffn:
            raise InvalidConfigError(
                f"fff option depth must be in [0, log2(d_ffn)={int(math.log2(d_ffn))}] so that "
                f"every leaf keeps at least one unit. Got depth {depth} for d_ffn {d_ffn}."
            )
        if inference not in ("hard", "soft"):
            raise InvalidConfigError(
                f"fff option inference must be 'hard' or 'soft'. Got {inference!r}."
            )
        self.depth, self.n_leaves = depth, 2**depth
        self.leaf_dim = d_ffn // self.n_leaves
        self.balance_weight, self.hardening_weight = balance_weight, hardening_weight
        self.harden_steps, self.inference = max(1, harden_steps), inference
        n_nodes, lw = self.n_leaves - 1, self.n_leaves * self.leaf_dim
        self.node_w = nn.Parameter(torch.randn(n_nodes, d_model) / math.sqrt(d_model))
        self.node_b = nn.Parameter(torch.zeros(n_nodes))
        self.w1 = nn.Parameter(torch.randn(d_model, lw) / math.sqrt(d_model))  # leaves side by side
        self.b1 = nn.Parameter(torch.zeros(lw))
        self.w2 = nn.Parameter(torch.randn(lw, d_model) / math.sqrt(self.leaf_dim))
        self.b2 = nn.Parameter(torch.zeros(self.n_leaves, d_model))
        self.master: nn.Sequential | None = None
        if master_leaf:
            self.master_out = nn.Linear(self.leaf_dim, d_model)
            self.master = nn.Sequential(
                nn.Linear(d_model, self.leaf_dim), nn.GELU(), self.master_out
            )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ soft path

    def leaf_probs(self, x: torch.Tensor, hard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Path probabilities of every leaf (T, L), and node logits (T, L - 1)."""
        z = x @ self.node_w.T + self.node_b  # (T, nodes)
        probs = x.new_ones(x.shape[0], 1)
        for level in range(self.depth):
            lo = 2**level - 1
            zl = z[:, lo : lo + 2**level]
            right = (zl > 0).to(x.dtype) if hard else torch.sigmoid(zl)
            probs = torch.stack([probs * (1 - right), probs * right], dim=-1).flatten(1)
        return probs, z[:, : self.n_leaves - 1]

    def forward_soft(self, x: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """All leaves, weighted by their path probabilities (step functions with ``hard``)."""
        probs, z = self.leaf_probs(x, hard)
        hid = F.gelu(x @ self.w1 + self.b1).view(x.shape[0], self.n_leaves, self.leaf_dim)
        hid = (hid * probs[..., None]).flatten(1)  # weight each leaf's units by its path
        out = hid @ self.w2 + probs @ self.b2
        if self.training:
            self.aux_loss = self._aux(probs, z)
        return out

    def _aux(self, probs: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        terms = []
        if self.balance_weight > 0 and self.n_leaves > 1:
            usage = probs.float().mean(0)
            terms.append(self.balance_weight * (self.n_leaves * usage.square().sum() - 1))
        if self.hardening_weight > 0 and self.depth > 0:
            ramp = min(1.0, float(self.step) / self.harden_steps)
            p = torch.sigmoid(z.float())
            entropy = -(p * torch.log(p + 1e-9) + (1 - p) * torch.log(1 - p + 1e-9)).mean()
            terms.append(self.hardening_weight * ramp * entropy)
            self.step += 1
        return torch.stack(terms).sum() if terms else None

    # ------------------------------------------------------------------ hard path

    def leaf_index(self, x: torch.Tensor) -> torch.Tensor:
        """The leaf each row lands in by hard descent (T,), touching D nodes per row."""
        node = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for _ in range(self.depth):
            z = (x * self.node_w[node]).sum(-1) + self.node_b[node]
            node = 2 * node + 1 + (z > 0).long()
        return node - (self.n_leaves - 1)

    def forward_hard(self, x: torch.Tensor) -> torch.Tensor:
        """Each row evaluates one leaf: rows are grouped by leaf, one small MLP per group."""
        w1 = self.w1.view(-1, self.n_leaves, self.leaf_dim)  # (E, L, H)
        b1 = self.b1.view(self.n_leaves, self.leaf_dim)
        w2 = self.w2.view(self.n_leaves, self.leaf_dim, -1)  # (L, H, E)
        if x.shape[0] == 1:
            # one row: descend with scalar decisions and views of one leaf's weights, so a
            # call reads D node vectors and one leaf, with no gathers or copies
            node, x0 = 0, x[0]
            for _ in range(self.depth):
                node = 2 * node + 1 + int(float(self.node_w[node] @ x0 + self.node_b[node]) > 0)
            lf = node - (self.n_leaves - 1)
            hid = F.gelu(x @ w1[:, lf] + b1[lf])
            return hid @ w2[lf] + self.b2[lf]
        leaf = self.leaf_index(x)
        if x.shape[0] <= 8:  # a few rows: gather their leaves' weights directly
            hid = F.gelu(torch.einsum("te,eth->th", x, w1[:, leaf]) + b1[leaf])
            return torch.einsum("th,the->te", hid, w2[leaf]) + self.b2[leaf]
        order = torch.argsort(leaf)
        counts = torch.bincount(leaf, minlength=self.n_leaves).tolist()
        xs = x[order]
        parts = []
        for lf, seg in enumerate(xs.split(counts)):
            if seg.shape[0]:
                hid = F.gelu(seg @ w1[:, lf] + b1[lf])
                parts.append(hid @ w2[lf] + self.b2[lf])
        out = torch.empty_like(x)
        out[order] = torch.cat(parts)
        return out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead, e = h.shape[:-1], h.shape[-1]
        x = h.reshape(-1, e)
        if self.training or self.inference == "soft":
            out = self.forward_soft(x)
        else:
            self.aux_loss = None
            out = self.forward_hard(x)
        if self.master is not None:
            out = out + self.master(x)
        return out.reshape(*lead, e)

    @property
    def active_params_per_token(self) -> int:
        e, h = self.d_model, self.leaf_dim
        leaf = e * h + h + h * e + e
        master = sum(p.numel() for p in self.master.parameters()) if self.master is not None else 0
        return self.depth * (e + 1) + leaf + master

    def zero_init_output(self) -> None:
        nn.init.zeros_(self.w2)
        nn.init.zeros_(self.b2)
        if self.master is not None:
            nn.init.zeros_(self.master_out.weight)
            nn.init.zeros_(self.master_out.bias)
