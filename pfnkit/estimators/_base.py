"""What PFNClassifier and PFNRegressor share: checkpoints, validation, the ensemble.

An ensemble member is one view of the training table: a preprocessing (quantile / power /
none, alternating), a feature permutation (a random subset when the table has more
features than the checkpoint), for classifiers a class permutation, and a context subsample
when the table has more rows than the checkpoint was trained on. ``fit`` encodes every
member's context once (keys/values cached); ``predict`` runs only the test rows.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from pfnkit.estimators.preprocessing import MODES, MemberTransform, TableEncoder
from pfnkit.exceptions import CheckpointError

DEFAULT_CHECKPOINTS = {
    "classification": "tabular-clf.safetensors",
    "regression": "tabular-reg.safetensors",
}
PREDICT_CHUNK = 4096  # test rows per forward pass


def bundled_checkpoint(task: str) -> Path:
    """Path of the checkpoint shipped inside the package for ``task``."""
    from pfnkit.train.checkpoint import bundled_checkpoint_path

    return bundled_checkpoint_path(DEFAULT_CHECKPOINTS[task], task)


def load_model(checkpoint: Any, task: str, device: str) -> Any:
    """A PFN for ``task`` from "default", a path, or an already loaded PFN."""
    from pfnkit.model import PFN

    if isinstance(checkpoint, PFN):
        model = checkpoint.to(device).eval()
    else:
        from pfnkit.train.checkpoint import load_frozen

        path = bundled_checkpoint(task) if checkpoint == "default" else Path(os.fspath(checkpoint))
        model = load_frozen(path, device)
    if model.config.task != task:
        raise CheckpointError(
            f"The checkpoint is a {model.config.task} PFN; this estimator needs a {task} one."
        )
    return model


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class PFNEstimatorBase(BaseEstimator):
    """Shared machinery; see PFNClassifier and PFNRegressor for the parameters."""

    _task = "classification"
    _parameter_constraints: dict[str, list[Any]] = {
        "checkpoint": [str, os.PathLike, torch.nn.Module],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "softmax_temperature": [Interval(Real, 0.0, None, closed="neither")],
        "device": [str],
        "random_state": ["random_state"],
        "ignore_pretraining_limits": ["boolean"],
        "max_context": [Interval(Integral, 1, None, closed="left"), None],
        "preprocessing": [StrOptions({"alternate", *MODES})],
    }

    def __init__(
        self,
        checkpoint: Any = "default",
        n_estimators: int = 8,
        softmax_temperature: float = 0.9,
        device: str = "auto",
        random_state: Any = None,
        ignore_pretraining_limits: bool = False,
        max_context: int | None = None,
        preprocessing: str = "alternate",
    ) -> None:
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.device = device
        self.random_state = random_state
        self.ignore_pretraining_limits = ignore_pretraining_limits
        self.max_context = max_context
        self.preprocessing = preprocessing

    # ---------------------------------------------------------------- fit helpers

    def _validate_fit_X(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(
            self,
            X,
            y,
            dtype=None,
            ensure_all_finite="allow-nan",
            y_numeric=False,
            ensure_min_samples=2,
        )
        self.encoder_ = TableEncoder().fit(X)
        return self.encoder_.transform(X), y

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "members_")
        X = validate_data(self, X, dtype=None, ensure_all_finite="allow-nan", reset=False)
        return self.encoder_.transform(X)

    def _context_limit(self, model: Any) -> int:
        if self.max_context is not None:
            return self.max_context
        train = model.card.get("train_config", {}) if hasattr(model, "card") else {}
        rows = int(train.get("rows", 1024))
        hi = train.get("max_context") or rows - max(1, rows // 8)
        return int(hi)

    def _build_members(self, x: np.ndarray, y_model: np.ndarray, n_members: int) -> None:
        """Draw every member's view of the training table and encode its context."""
        model = self.model_
        rng = check_random_state(self.random_state)
        n, d = x.shape
        f_model = model.config.n_features
        if d > f_model:
            warnings.warn(
                f"X has {d} features but the checkpoint reads at most {f_model}; every "
                f"ensemble member sees a different random subset of {f_model} features. "
                "Select or compress features first for full control.",
                UserWarning,
                stacklevel=3,
            )
        limit = self._context_limit(model)
        n_ctx = n if self.ignore_pretraining_limits else min(n, limit)
        if n_ctx < n:
            warnings.warn(
                f"X has {n} training rows but the checkpoint was trained on contexts of up to "
                f"{limit}; each ensemble member uses a random subset of {n_ctx} rows. Pass "
                "ignore_pretraining_limits=True to use all rows in one context.",
                UserWarning,
                stacklevel=3,
            )
        modes = (
            [self.preprocessing] * n_members
            if self.preprocessing != "alternate"
            else [MODES[i % len(MODES)] for i in range(n_members)]
        )
        transforms: dict[str, MemberTransform] = {}
        for mode in set(modes):
            transforms[mode] = MemberTransform(
                mode, self.encoder_.categorical_, int(rng.randint(2**31))
            ).fit(x)
        self.transforms_ = transforms
        self.members_: list[dict[str, Any]] = []
        xs, ys = [], []
        for m in range(n_members):
            cols = rng.permutation(d)[: min(d, f_model)]
            rows = np.sort(self._context_rows(rng, y_model, n_ctx)) if n_ctx < n else np.arange(n)
            member = {"mode": modes[m], "cols": cols}
            member.update(self._member_target(rng, m))
            xs.append(transforms[modes[m]].transform(x[rows])[:, cols])
            ys.append(self._encode_member_y(member, y_model[rows]))
            self.members_.append(member)
        device = resolve_device(self.device)
        x_ctx = torch.as_tensor(np.stack(xs), dtype=torch.float32, device=device)
        y_ctx = torch.as_tensor(np.stack(ys), dtype=torch.float32, device=device)
        self.context_ = model.encode_context(x_ctx, y_ctx)

    def _context_rows(self, rng: np.random.RandomState, y: np.ndarray, n_ctx: int) -> np.ndarray:
        return rng.choice(y.shape[0], size=n_ctx, replace=False)

    def _member_target(self, rng: np.random.RandomState, m: int) -> dict[str, Any]:
        return {}

    def _encode_member_y(self, member: dict[str, Any], y: np.ndarray) -> np.ndarray:
        return y

    def _member_logits(self, x: np.ndarray) -> torch.Tensor:
        """Logits (n_members, M, K) of every member for encoded test rows x (M, d)."""
        device = resolve_device(self.device)
        views = {mode: t.transform(x) for mode, t in self.transforms_.items()}
        outs = []
        for start in range(0, x.shape[0], PREDICT_CHUNK):
            sl = slice(start, start + PREDICT_CHUNK)
            xt = np.stack([views[mb["mode"]][sl][:, mb["cols"]] for mb in self.members_])
            xt_t = torch.as_tensor(xt, dtype=torch.float32, device=device)
            outs.append(self.model_.predict_cached(self.context_, xt_t).float().cpu())
        return torch.cat(outs, dim=1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags
