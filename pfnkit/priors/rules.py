"""Rule prior: tables whose label is a logical rule over categorical and discretised cells.

Tic-tac-toe ("three in a row"), DNA motifs, board-game end positions and many business
tables are labelled by a rule over a few cells among many irrelevant ones. SCM tables
rarely look like that, so a PFN trained on them reads categorical codes as ordinal numbers
and misses such rules. Every dataset here draws one rule family:

- ``dnf``: a disjunction of conjunctions of cell tests (a conjunction, a disjunction, or
  "any of these lines is all x").
- ``parity``: XOR of 2-4 cell tests.
- ``m_of_n``: at least m of n cell tests hold (majority, "three in a row"), or the label
  is the count of tests that hold (multi-class).
- ``lookup``: a random class for every value combination of 1-3 cells.
- ``decision_list``: the first of a few rules (conjunctions of cell tests) that holds
  decides the class, a default class otherwise (multi-class).

A cell test is ``cell == v``, ``cell != v``, ``cell in S`` for a categorical cell and
``cell > t`` / ``cell <= t`` for a numeric one. Numeric cells are discretised into 2-4
bins at random quantiles, so every test is a mask over a column's codes. Categorical
cells are integer codes 0..k-1 stored as floats (``extras["categorical"]`` marks them),
as ``TableEncoder`` presents real categorical columns, or (a share ``onehot_share`` of the
tables) one 0/1 column per category, as ``categorical_encoding="onehot"`` presents them to
the network; missing cells are NaN (the label is computed from the value before it went
missing). Shares and noise are drawn per dataset from their hyperpriors; everything but
the one-hot layout (a loop over the tables it expands) is vectorised over the batch.

Shape legend: B batch, N rows, F features, K codes per column (max), L cell tests,
R cells a rule may read, T terms of a DNF, M tests per term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import Batch, BatchShape, Choice, LogUniform, Param, Task, Uniform, draw

FAMILIES = ("dnf", "parity", "m_of_n", "lookup", "decision_list")
MAX_TERMS = 8  # DNF terms: tic-tac-toe has 8 lines
MAX_TERM_LEN = 3
MAX_PARITY = 4
MAX_LOOKUP = 3
MAX_DLIST = 6
NUM_BINS = 4  # numeric cells are cut into 2..NUM_BINS bins for the rule
ONEHOT_MIN, ONEHOT_MAX = 3, 10  # categories of a column one-hot presented (as the estimators)
RETRIES = 12  # redraws of a rule whose labels are (nearly) one class


@dataclass(frozen=True)
class RulePrior:
    """Classification tables labelled by a logical rule over a few of their cells.

    Args:
        task: "classification" (the only task a rule defines).
        max_classes: largest class count (lookup tables, decision lists and counts draw
            2..max_classes, smaller counts more often; the other families are binary).
        families: the rule families to draw from, equally likely (repeat a name to
            weight it): "dnf", "parity", "m_of_n", "lookup", "decision_list".
        min_features: each dataset uses d in [min_features, F] columns; all but the few
            the rule reads are irrelevant.
        max_rule_cells: most distinct cells one rule reads (9 covers tic-tac-toe).
        categorical_share: share of columns that are categorical (the rest numeric).
        max_categories: most categories of a categorical column (2..30).
        skew_share: share of numeric columns given a skewed (exponential) marginal.
        label_noise: share of labels replaced by a uniformly random class.
        min_class_share: rules are redrawn until the classes other than the largest hold
            at least this share of the rows (so no table is all one class).
        missing_datasets: probability that a dataset has missing values.
        missing_share: share of its cells made missing (MCAR).
        onehot_share: probability that a table's categorical columns of 3 to 10 categories
            are presented one-hot, as ``PFNClassifier(categorical_encoding="onehot")``
            presents real nominal columns: the other columns in order, then one 0/1 column
            per category seen in the table (NaN across the block where the cell is
            missing), when the widened table fits the batch's features (else codes). Such
            tables have ``extras["onehot"]`` set; their ``rule_cells`` index the columns
            before the expansion. 0 (the default) draws nothing extra, so recipes without
            it sample exactly as before.
    """

    name: ClassVar[str] = "rules"
    task: Task = "classification"
    max_classes: int = 10
    families: tuple[str, ...] = FAMILIES
    min_features: int = 1
    max_rule_cells: int = 9
    categorical_share: Param = Uniform(0.3, 1.0)
    max_categories: int = 10
    skew_share: Param = Uniform(0.0, 0.3)
    label_noise: Param = Uniform(0.0, 0.1)
    min_class_share: float = 0.03
    missing_datasets: float = 0.3
    missing_share: Param = Uniform(0.01, 0.2)
    onehot_share: float = 0.0

    def __post_init__(self) -> None:
        if self.task != "classification":
            raise InvalidConfigError(
                f"RulePrior.task must be 'classification' (a rule gives class labels). "
                f"Got {self.task!r}."
            )
        _check_int("max_classes", self.max_classes, 2, None)
        _check_int("min_features", self.min_features, 1, None)
        _check_int("max_rule_cells", self.max_rule_cells, 1, 32)
        _check_int("max_categories", self.max_categories, 2, 30)
        if not isinstance(self.families, tuple) or not self.families:
            raise InvalidConfigError(
                f"RulePrior.families must be a non-empty list of {', '.join(FAMILIES)}. "
                f"Got {self.families!r}."
            )
        for fam in self.families:
            if fam not in FAMILIES:
                raise InvalidConfigError(
                    f"RulePrior.families holds unknown family {fam!r}; allowed: "
                    f"{', '.join(FAMILIES)}."
                )
        for name in ("categorical_share", "skew_share", "label_noise", "missing_share"):
            _check_share(name, getattr(self, name))
        for name in ("missing_datasets",):
            _check_share(name, getattr(self, name))
        value = self.onehot_share
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise InvalidConfigError(
                f"RulePrior.onehot_share must be a probability in [0, 1] (0: categorical "
                f"cells always as codes). Got {value!r}."
            )
        if not isinstance(self.min_class_share, int | float) or not (
            0.0 <= self.min_class_share < 0.5
        ):
            raise InvalidConfigError(
                f"RulePrior.min_class_share must be a number in [0, 0.5). "
                f"Got {self.min_class_share!r}."
            )

    # ------------------------------------------------------------------ sampling

    def sample(self, shape: BatchShape, *, generator: torch.Generator) -> Batch:
        g = generator
        b, n, f = shape.batch_size, shape.n_rows, shape.n_features
        k_max = max(self.max_categories, NUM_BINS)
        n_feat = torch.randint(min(self.min_features, f), f + 1, (b,), generator=g)
        used = torch.arange(f)[None, :] < n_feat[:, None]  # (B, F)
        cat_share = draw(self.categorical_share, b, g)
        is_cat = (torch.rand(b, f, generator=g) < cat_share[:, None]) & used

        # categories per column; half the tables share one alphabet (board cells, bases)
        k_col = torch.randint(2, self.max_categories + 1, (b, f), generator=g)
        k_tab = torch.randint(2, self.max_categories + 1, (b, 1), generator=g)
        shared = torch.rand(b, 1, generator=g) < 0.5
        k_col = torch.where(shared, k_tab.expand(b, f), k_col)
        k_num = torch.randint(2, NUM_BINS + 1, (b, f), generator=g)
        k = torch.where(is_cat, k_col, k_num)  # (B, F) codes per column

        # categorical codes with random, often uneven, frequencies: inverse-CDF sampling
        conc = 1.5 * torch.rand(b, 1, 1, generator=g)
        logits = conc * torch.randn(b, f, k_max, generator=g)
        logits = logits.masked_fill(torch.arange(k_max) >= k[:, :, None], -math.inf)
        cdf = torch.softmax(logits, -1).cumsum(-1).contiguous()  # (B, F, K)
        u = torch.rand(b, f, n, generator=g)
        cat_codes = torch.searchsorted(cdf, u).minimum(k[:, :, None] - 1)  # (B, F, N)
        # numeric cells: a latent normal, cut at k - 1 random quantiles for the rule
        z = torch.randn(b, f, n, generator=g)
        q = 0.05 + 0.9 * torch.rand(b, f, NUM_BINS - 1, generator=g)
        thr = math.sqrt(2.0) * torch.erfinv(2.0 * q - 1.0)
        thr = thr.masked_fill(torch.arange(NUM_BINS - 1) >= (k[:, :, None] - 1), math.inf)
        thr = thr.sort(-1).values.contiguous()
        num_codes = torch.searchsorted(thr, z.contiguous())  # (B, F, N) bins below z
        codes = torch.where(is_cat[:, :, None], cat_codes, num_codes).transpose(1, 2)  # (B,N,F)

        # the numbers the network sees: codes for categorical cells, a monotone transform
        # of the latent for numeric ones (so a threshold on x is a threshold on the latent)
        skew = (torch.rand(b, f, generator=g) < draw(self.skew_share, b, g)[:, None])[:, None]
        rate = (0.5 + torch.rand(b, 1, f, generator=g)).expand(b, n, f)
        zt = z.transpose(1, 2)
        num_x = torch.where(skew, torch.exp(rate * zt.clamp(max=8.0)), zt)
        x = torch.where(is_cat[:, None, :], codes.float(), num_x)

        # the cells a rule may read: the first R of a random order of the used columns
        r_max = min(self.max_rule_cells, f)
        keys = torch.rand(b, f, generator=g) + 2.0 * ~used
        rel = keys.argsort(-1)[:, :r_max]  # (B, R) column ids
        n_rel = n_feat.clamp(max=r_max)  # (B,) cells available to the rule
        table = _Table(codes, k, is_cat, rel, n_rel, k_max)

        fam = torch.tensor([FAMILIES.index(name) for name in self.families])
        family = fam[torch.randint(0, len(fam), (b,), generator=g)]  # (B,) index in FAMILIES
        noise = draw(self.label_noise, b, g)
        y = torch.zeros(b, n, dtype=torch.long)
        n_classes = torch.full((b,), 2, dtype=torch.long)
        reads = torch.zeros(b, r_max, dtype=torch.bool)
        todo = torch.arange(b)
        for attempt in range(RETRIES + 1):
            for fi, fam_name in enumerate(FAMILIES):
                idx = todo[family[todo] == fi]
                if idx.numel() == 0:
                    continue
                yi, ci, ri = _RULES[fam_name](self, table.select(idx), g)
                y[idx], n_classes[idx], reads[idx] = yi, ci, ri
            y[todo] = _add_noise(y[todo], n_classes[todo], noise[todo], g)
            counts = torch.zeros(todo.numel(), max(self.max_classes, 2), dtype=torch.long)
            counts.scatter_add_(1, y[todo], torch.ones_like(y[todo]))
            bad = counts.max(1).values > (1.0 - self.min_class_share) * n
            if not bool(bad.any()) or attempt == RETRIES:
                break
            todo = todo[bad]

        # missing cells (after the label: the rule saw the value)
        missing = (torch.rand(b, generator=g) < self.missing_datasets).float()
        p_miss = draw(self.missing_share, b, g) * missing
        mask = torch.rand(b, n, f, generator=g) < p_miss[:, None, None]
        x = x.masked_fill(mask & used[:, None, :], math.nan)
        x = x.masked_fill(~used[:, None, :], 0.0)
        rule_cells = torch.where(reads, rel, torch.full_like(rel, -1))
        extras = {"rule_family": family, "rule_cells": rule_cells, "label_noise": noise}
        if self.onehot_share > 0:
            hot = torch.rand(b, generator=g) < self.onehot_share
            x, n_feat, is_cat, hot = _onehot(x, n_feat, is_cat, k, hot)
            extras["onehot"] = hot
        yf = y.float()
        return Batch(
            x=x.float(),
            y=yf,
            target_y=yf.clone(),
            single_eval_pos=shape.single_eval_pos,
            n_features=n_feat,
            n_classes=n_classes,
            extras={"categorical": is_cat, **extras},
        )


def _onehot(
    x: torch.Tensor, n_feat: torch.Tensor, is_cat: torch.Tensor, k: torch.Tensor,
    hot: torch.Tensor,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Present the categorical columns of the tables ``hot`` (B,) one-hot where the table
    holds ONEHOT_MIN..ONEHOT_MAX of their categories, as the estimators do: kept columns in
    order, then a 0/1 block per expanded column, one column per category seen (NaN across
    the block where the cell is missing), zeros after. A table whose widened width exceeds
    F stays codes. Returns x, n_features, the categorical mask and the tables expanded."""
    x, n_feat, is_cat = x.clone(), n_feat.clone(), is_cat.clone()
    hot = hot & is_cat.any(1)
    f = x.shape[2]
    codes = torch.arange(int(k.max()), dtype=x.dtype)
    for i in torch.nonzero(hot).flatten().tolist():
        cols = torch.nonzero(is_cat[i]).flatten()
        xi = x[i, :, cols]  # (N, C) codes, NaN where missing
        block = xi[:, :, None] == codes  # (N, C, K)
        seen = block.any(0)  # (C, K) categories present in the table
        n_seen = seen.sum(1)
        wide = (n_seen >= ONEHOT_MIN) & (n_seen <= ONEHOT_MAX)
        width = int(n_feat[i]) + int((n_seen[wide] - 1).sum())
        if not bool(wide.any()) or width > f:
            hot[i] = False
            continue
        cols, xi, block, seen = cols[wide], xi[:, wide], block[:, wide], seen[wide]
        block = block.to(x.dtype).masked_fill(torch.isnan(xi)[:, :, None], math.nan)
        keep = torch.arange(f) < n_feat[i]
        keep[cols] = False
        n_keep = int(keep.sum())
        parts = torch.cat([x[i][:, keep], block[:, seen]], dim=1)  # (N, width)
        x[i] = 0.0
        x[i, :, :width] = parts
        cat = torch.zeros(f, dtype=torch.bool)
        cat[:n_keep] = is_cat[i][keep]
        cat[n_keep:width] = True
        is_cat[i] = cat
        n_feat[i] = width
    return x, n_feat, is_cat, hot


# ---------------------------------------------------------------- rule families


@dataclass
class _Table:
    """The parts of a batch a rule reads (a subset of datasets after ``select``)."""

    codes: torch.Tensor  # (B, N, F) long
    k: torch.Tensor  # (B, F) codes per column
    is_cat: torch.Tensor  # (B, F)
    rel: torch.Tensor  # (B, R) columns a rule may read
    n_rel: torch.Tensor  # (B,) how many of them exist
    k_max: int

    def select(self, idx: torch.Tensor) -> _Table:
        return _Table(
            self.codes[idx], self.k[idx], self.is_cat[idx], self.rel[idx], self.n_rel[idx],
            self.k_max,
        )  # fmt: skip

    @property
    def b(self) -> int:
        return int(self.codes.shape[0])


def _randint(high: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Uniform integers in [0, high) elementwise (high >= 1)."""
    return (torch.rand(high.shape, generator=g) * high).long().minimum(high - 1)


def _small_int(lo: int, hi: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Integers in [lo, hi] elementwise, smaller ones more likely (u^2 skew)."""
    hi = hi.clamp(min=lo)
    u = torch.rand(hi.shape, generator=g) ** 2
    return (lo + (u * (hi - lo + 1)).long()).minimum(hi)


def _tests(
    t: _Table, cell: torch.Tensor, g: torch.Generator, *, p_eq: float, p_neg: float
) -> torch.Tensor:
    """Draw a cell test for every slot and evaluate it on every row.

    Args:
        cell: (B, L) index into ``t.rel`` of the cell each test reads.
        p_eq: probability that a categorical test is ``== v`` (else ``in S``).
        p_neg: probability that a test is negated.

    Returns:
        (B, N, L) bool, the truth of each test on each row.
    """
    b, n = t.b, t.codes.shape[1]
    ell, kk = cell.shape[1], t.k_max
    col = torch.gather(t.rel, 1, cell)  # (B, L) column ids
    kj = torch.gather(t.k, 1, col)  # (B, L)
    catj = torch.gather(t.is_cat, 1, col)
    ar = torch.arange(kk)
    # numeric: cell > t (bins >= t, t in 1..k-1)
    cut = 1 + _randint(kj - 1, g)
    num_mask = ar >= cut[:, :, None]
    # categorical: == v (v shared by the table's tests half the time: "all x") or in S
    v_tab = torch.randint(0, kk, (b, 1), generator=g).expand(b, ell) % kj
    v = torch.where(torch.rand(b, 1, generator=g) < 0.5, v_tab, _randint(kj, g))
    eq_mask = ar == v[:, :, None]
    other = (v + 1 + _randint(kj - 1, g)) % kj  # a category other than v
    subset = torch.rand(b, ell, kk, generator=g) < 0.5
    subset = (subset | eq_mask) & (ar != other[:, :, None])
    use_eq = torch.rand(b, ell, generator=g) < p_eq
    cat_mask = torch.where(use_eq[:, :, None], eq_mask, subset)
    mask = torch.where(catj[:, :, None], cat_mask, num_mask)  # (B, L, K)
    mask ^= (torch.rand(b, ell, generator=g) < p_neg)[:, :, None]
    cell_codes = torch.gather(t.codes, 2, col[:, None, :].expand(b, n, ell))  # (B, N, L)
    return torch.gather(mask[:, None].expand(b, n, ell, kk), 3, cell_codes[..., None])[..., 0]


def _reads(t: _Table, cell: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, R) bool: which of the cells a rule may read it does read."""
    out = torch.zeros(t.b, t.rel.shape[1], dtype=torch.bool)
    rows = torch.arange(t.b)[:, None].expand_as(cell)
    out[rows[valid], cell[valid]] = True
    return out


def _binary(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Bool labels (B, N) -> class ids, the positive class 0 or 1 at random per dataset."""
    flip = torch.rand(y.shape[0], 1, generator=g) < 0.5
    return (y ^ flip).long()


def _n_classes(t: _Table, max_classes: int, g: torch.Generator) -> torch.Tensor:
    return _small_int(2, torch.full((t.b,), max_classes), g)


def _dnf(p: RulePrior, t: _Table, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    b = t.b
    n_cells = _small_int(1, t.n_rel, g)  # (B,) cells this rule reads from
    n_terms = _small_int(1, torch.full((b,), MAX_TERMS), g)
    term_len = 1 + _randint(torch.full((b, MAX_TERMS), MAX_TERM_LEN), g)  # (B, T)
    cell = _randint(n_cells[:, None].expand(b, MAX_TERMS * MAX_TERM_LEN), g)  # (B, T*M)
    truth = _tests(t, cell, g, p_eq=0.6, p_neg=0.2)
    truth = truth.view(b, -1, MAX_TERMS, MAX_TERM_LEN)  # (B, N, T, M)
    in_term = torch.arange(MAX_TERM_LEN) < term_len[:, :, None]  # (B, T, M)
    in_rule = torch.arange(MAX_TERMS)[None, :] < n_terms[:, None]  # (B, T)
    term = (truth | ~in_term[:, None]).all(-1)  # (B, N, T)
    y = (term & in_rule[:, None]).any(-1)
    valid = (in_term & in_rule[:, :, None]).view(b, -1)
    return _binary(y, g), torch.full((b,), 2), _reads(t, cell, valid)


def _parity(p: RulePrior, t: _Table, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    b = t.b
    m = min(MAX_PARITY, t.rel.shape[1])
    n_cells = torch.minimum(2 + _randint(torch.full((b,), MAX_PARITY - 1), g), t.n_rel)
    cell = torch.arange(m).expand(b, m)  # distinct cells
    truth = _tests(t, cell, g, p_eq=0.3, p_neg=0.0)  # (B, N, m)
    valid = cell < n_cells[:, None]
    y = (truth & valid[:, None]).sum(-1) % 2 == 1
    return _binary(y, g), torch.full((b,), 2), _reads(t, cell, valid)


def _m_of_n(p: RulePrior, t: _Table, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    b, m = t.b, t.rel.shape[1]
    n_cells = torch.minimum(2 + _randint(torch.full((b,), max(m - 1, 1)), g), t.n_rel)
    cell = torch.arange(m).expand(b, m)
    truth = _tests(t, cell, g, p_eq=0.6, p_neg=0.2)
    valid = cell < n_cells[:, None]
    count = (truth & valid[:, None]).sum(-1)  # (B, N)
    need = 1 + _randint(n_cells, g)  # at least `need` of n hold
    y_bin = _binary(count >= need[:, None], g)
    # a third of them: the label is the count itself, capped at c - 1 (multi-class)
    c = torch.minimum(_n_classes(t, p.max_classes, g), n_cells + 1).clamp(min=2)
    ranks = torch.rand(b, p.max_classes, generator=g).masked_fill(
        torch.arange(p.max_classes) >= c[:, None], 2.0
    )
    relabel = ranks.argsort(-1).argsort(-1)  # (B, C) a permutation of 0..c-1 first
    y_cnt = torch.gather(relabel, 1, count.minimum(c[:, None] - 1))
    counted = torch.rand(b, generator=g) < 1.0 / 3.0
    y = torch.where(counted[:, None], y_cnt, y_bin)
    return y, torch.where(counted, c, 2), _reads(t, cell, valid)


def _lookup(p: RulePrior, t: _Table, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    b, kk = t.b, t.k_max
    m = min(MAX_LOOKUP, t.rel.shape[1])
    n_cells = torch.minimum(_small_int(1, torch.full((b,), MAX_LOOKUP), g), t.n_rel)
    cell = torch.arange(m).expand(b, m)
    valid = cell < n_cells[:, None]
    col = torch.gather(t.rel, 1, cell)
    codes = torch.gather(t.codes, 2, col[:, None, :].expand(b, t.codes.shape[1], m))
    codes = codes * valid[:, None]  # unused cells read as code 0
    index = (codes * kk ** torch.arange(m)).sum(-1)  # (B, N) mixed radix
    c = _n_classes(t, p.max_classes, g)
    table = _randint(c[:, None].expand(b, kk**m), g)
    return torch.gather(table, 1, index), c, _reads(t, cell, valid)


def _decision_list(p: RulePrior, t: _Table, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    b = t.b
    n_cells = _small_int(1, t.n_rel, g)
    n_rules = 2 + _randint(torch.full((b,), MAX_DLIST - 1), g)
    rule_len = 1 + _randint(torch.full((b, MAX_DLIST), 2), g)  # (B, Rl) 1 or 2 tests
    cell = _randint(n_cells[:, None].expand(b, MAX_DLIST * 2), g)
    truth = _tests(t, cell, g, p_eq=0.6, p_neg=0.2).view(b, -1, MAX_DLIST, 2)
    in_rule = torch.arange(2) < rule_len[:, :, None]  # (B, Rl, 2)
    active = torch.arange(MAX_DLIST)[None, :] < n_rules[:, None]  # (B, Rl)
    fires = (truth | ~in_rule[:, None]).all(-1) & active[:, None]  # (B, N, Rl)
    fires = torch.cat([fires, torch.ones_like(fires[..., :1])], -1)  # default rule last
    first = fires.long().argmax(-1)  # (B, N) the first rule that fires
    c = _n_classes(t, p.max_classes, g)
    classes = _randint(c[:, None].expand(b, MAX_DLIST + 1), g)
    valid = (in_rule & active[:, :, None]).view(b, -1)
    return torch.gather(classes, 1, first), c, _reads(t, cell, valid)


_RULES = {
    "dnf": _dnf,
    "parity": _parity,
    "m_of_n": _m_of_n,
    "lookup": _lookup,
    "decision_list": _decision_list,
}


def _add_noise(
    y: torch.Tensor, c: torch.Tensor, noise: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """Replace a share ``noise`` (B,) of the labels by a uniformly random class."""
    hit = torch.rand(y.shape, generator=g) < noise[:, None]
    return torch.where(hit, _randint(c[:, None].expand_as(y), g), y)


# ---------------------------------------------------------------- validation


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    if ok and hi is not None:
        ok = value <= hi  # type: ignore[operator]
    if not ok:
        allowed = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"
        raise InvalidConfigError(f"RulePrior.{name} must be {allowed}. Got {value!r}.")


def _check_share(name: str, value: Param) -> None:
    """Every value a field (fixed, or a hyperprior's support) can take lies in [0, 1]."""
    if isinstance(value, Uniform | LogUniform):
        values: tuple[float, ...] = (value.low, value.high)
    elif isinstance(value, Choice):
        values = tuple(value.values)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        values = (float(value),)
    else:
        values = ()
    if not values or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise InvalidConfigError(
            f"RulePrior.{name} must be a share in [0, 1] or a hyperprior over [0, 1]. "
            f"Got {value!r}."
        )
