"""Ensemble members: each one a view of the training table that the PFN reads.

A member fixes a preprocessing (quantile / power / none), a feature map (a permutation, a
random subset, or principal components when the table is wider than the checkpoint) and,
for classifiers, a class code. ``member_views`` turns an encoded table (n, d) into the
stacked views (B, n, f) that a context strategy consumes.

Shape legend: B members, n rows, d table columns, f features the PFN reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pfnkit.estimators.preprocessing import MODES, MemberTransform

FEATURE_REDUCTIONS = ("subset", "pca")


@dataclass(frozen=True)
class FeatureMap:
    """Columns the PFN reads: ``cols`` of the member's view, then (optionally) principal
    components of its numeric columns.

    ``cols`` (f_keep,) indexes the view's columns; ``components`` (d, n_comp) projects the
    view's standardised numeric columns (``center``, ``scale``: (d,)), NaN read as the mean.
    """

    cols: np.ndarray
    components: np.ndarray | None = None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def n_out(self) -> int:
        n_comp = 0 if self.components is None else self.components.shape[1]
        return int(self.cols.size + n_comp)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(n, d) view -> (n, f) features for the PFN."""
        kept = x[:, self.cols]
        if self.components is None:
            return kept
        assert self.center is not None and self.scale is not None
        z = np.nan_to_num((x - self.center) / self.scale, nan=0.0)
        return np.concatenate([kept, (z @ self.components).astype(np.float32)], axis=1)

    def categorical(self, categorical: np.ndarray) -> np.ndarray:
        """Which output columns are categorical (components never are)."""
        n_comp = 0 if self.components is None else self.components.shape[1]
        return np.concatenate([categorical[self.cols], np.zeros(n_comp, dtype=bool)])


@dataclass(frozen=True)
class Member:
    """One ensemble member.

    Attributes:
        mode: the preprocessing ("quantile", "power" or "none").
        features: which columns (or components) the PFN reads, in which order.
        code: class -> the PFN class it is shown as (classification; None for regression).
        seed: seeds whatever the context strategy draws for this member.
    """

    mode: str
    features: FeatureMap
    code: np.ndarray | None
    seed: int


def member_modes(preprocessing: str, n_members: int) -> list[str]:
    if preprocessing != "alternate":
        return [preprocessing] * n_members
    return [MODES[i % len(MODES)] for i in range(n_members)]


def fit_transforms(
    modes: list[str], categorical: np.ndarray, x: np.ndarray, rng: np.random.RandomState
) -> dict[str, MemberTransform]:
    """One fitted preprocessing per distinct mode (shared by the members that use it)."""
    return {
        mode: MemberTransform(mode, categorical, int(rng.randint(2**31))).fit(x)
        for mode in dict.fromkeys(modes)
    }


def feature_map(
    view: np.ndarray,
    categorical: np.ndarray,
    f_model: int,
    reduction: str,
    rng: np.random.RandomState,
) -> FeatureMap:
    """A member's columns: a permutation of all d when they fit, else reduce to f_model.

    ``"subset"`` keeps a random f_model columns. ``"pca"`` keeps the categorical columns
    (up to half of f_model, at random) and fills the rest with the leading principal
    components of the standardised numeric columns, in a random order.
    """
    d = view.shape[1]
    if d <= f_model:
        return FeatureMap(cols=rng.permutation(d))
    if reduction == "subset":
        return FeatureMap(cols=rng.permutation(d)[:f_model])
    cat = np.flatnonzero(categorical)
    num = np.flatnonzero(~categorical)
    keep = rng.permutation(cat)[: f_model // 2]
    n_comp = min(f_model - keep.size, num.size, view.shape[0])
    if n_comp < 1:
        return FeatureMap(cols=rng.permutation(d)[:f_model])
    xn = view[:, num].astype(np.float64)
    center = np.nanmean(np.where(np.isfinite(xn), xn, np.nan), axis=0)
    center = np.nan_to_num(center)
    scale = np.nanstd(xn, axis=0)
    scale = np.where(~np.isfinite(scale) | (scale < 1e-12), 1.0, scale)
    z = np.nan_to_num((xn - center) / scale, nan=0.0)
    if z.shape[0] > 20_000:  # components from a row sample: the same directions, less work
        z = z[rng.choice(z.shape[0], 20_000, replace=False)]
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    comps = vt[:n_comp].T  # (n_num, n_comp)
    # unit variance per component: the PFN saw standardised-scale features
    comps = comps / np.maximum(s[:n_comp] / np.sqrt(max(1, z.shape[0])), 1e-12)
    full = np.zeros((d, n_comp))
    full[num] = comps
    center_d = np.zeros(d)
    scale_d = np.ones(d)
    center_d[num], scale_d[num] = center, scale
    order = rng.permutation(n_comp)
    return FeatureMap(
        cols=keep,
        components=full[:, order].astype(np.float32),
        center=center_d.astype(np.float32),
        scale=scale_d.astype(np.float32),
    )
