"""What PFNClassifier and PFNRegressor share: checkpoints, validation, the ensemble.

``fit`` validates the table, loads the checkpoint (checking its kind), draws the ensemble
members (``members.py``: preprocessing, feature map, class code), builds each member's view
of the table, optionally fine-tunes the PFN (``pfnkit.tuning.fine_tune``) and hands the
views to the context strategy (``pfnkit.tuning``), which chooses and encodes each member's
context. ``predict`` builds the test rows' views and asks the fitted strategy for logits.
This module orchestrates; the strategies decide.
"""

from __future__ import annotations

import copy
import dataclasses
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

from pfnkit.estimators.members import (
    FEATURE_REDUCTIONS,
    Member,
    feature_map,
    fit_transforms,
    member_modes,
)
from pfnkit.estimators.preprocessing import MODES, dates_as_objects
from pfnkit.estimators.selection import ONEHOT_MAX_CATEGORIES, plan_table
from pfnkit.tuning import (
    CONTEXTS,
    STRATEGY_TYPES,
    ContextProblem,
    FineTune,
    SubsampleContext,
    fine_tune,
    resolve_context,
    resolve_fine_tune,
)

DEFAULT_CHECKPOINTS = {
    "classification": "tabular-clf.safetensors",
    "regression": "tabular-reg.safetensors",
}
KIND = {"classification": "classifier", "regression": "regressor"}
CATEGORICAL_ENCODINGS = ("ordinal", "onehot", "cv")


def bundled_checkpoint(task: str) -> Path:
    """Path of the checkpoint shipped inside the package for ``task``."""
    from pfnkit.train.checkpoint import bundled_checkpoint_path

    return bundled_checkpoint_path(DEFAULT_CHECKPOINTS[task], task)


def load_model(checkpoint: Any, task: str, device: str) -> tuple[Any, Any]:
    """A frozen PFN for ``task`` and its typed card, from "default", a path or a PFN."""
    from pfnkit.model import PFN
    from pfnkit.train.checkpoint import load_pfn

    if isinstance(checkpoint, PFN):
        # never change the caller's module: freeze a copy when it is trainable
        if any(p.requires_grad for p in checkpoint.parameters()):
            checkpoint = copy.deepcopy(checkpoint).requires_grad_(False)
        source: Any = checkpoint
    else:
        source = bundled_checkpoint(task) if checkpoint == "default" else checkpoint
        if not isinstance(source, str | os.PathLike):
            raise TypeError(
                "The 'checkpoint' parameter must be 'default', a path or a PFN. "
                f"Got {type(checkpoint).__name__}."
            )
    what = "PFNClassifier" if task == "classification" else "PFNRegressor"
    return load_pfn(source, expect=KIND[task], device=device, what=what)


DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' (an available GPU) or 'mps'"


def resolve_device(device: str, what: str = "PFNClassifier") -> str:
    """The torch device for ``device``; a ValueError naming the parameter when it is not
    one that this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    start = f"The 'device' parameter of {what} must be {DEVICES}. Got {device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{start}, which is not a device name. Use device='auto' or 'cpu'.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{start}, but CUDA is not available here (torch.cuda.is_available() is "
                "False). Use device='cpu', or 'auto' to take a GPU only when there is one."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{start}, but this machine has {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}). Pick one of those, or "
                "use device='auto'."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{start}, but MPS (Apple GPU) is not available here. Use device='cpu' or 'auto'."
        )
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
        "context": [StrOptions(set(CONTEXTS)), *STRATEGY_TYPES],
        "fine_tune": ["boolean", FineTune],
        "feature_reduction": [StrOptions(set(FEATURE_REDUCTIONS))],
        "categorical_encoding": [StrOptions(set(CATEGORICAL_ENCODINGS))],
        "feature_selection": [StrOptions({"cv", "none"})],
        "append_original": ["boolean"],
    }

    def __init__(
        self,
        checkpoint: Any = "default",
        n_estimators: int = 8,
        softmax_temperature: Any = "auto",
        device: str = "auto",
        random_state: Any = 0,
        ignore_pretraining_limits: bool = False,
        max_context: int | None = None,
        preprocessing: str = "alternate",
        context: Any = "auto",
        fine_tune: Any = False,
        feature_reduction: str = "subset",
        categorical_encoding: str = "cv",
        feature_selection: str = "none",
        append_original: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.device = device
        self.random_state = random_state
        self.ignore_pretraining_limits = ignore_pretraining_limits
        self.max_context = max_context
        self.preprocessing = preprocessing
        self.context = context
        self.fine_tune = fine_tune
        self.feature_reduction = feature_reduction
        self.categorical_encoding = categorical_encoding
        self.feature_selection = feature_selection
        self.append_original = append_original

    # ---------------------------------------------------------------- fit helpers

    def _validate_fit_X(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """The validated table (raw cells, (n, d)) and targets; ``_encode_fit`` encodes it."""
        X, y = validate_data(
            self,
            dates_as_objects(X),
            y,
            dtype=None,
            ensure_all_finite="allow-nan",
            y_numeric=False,
            ensure_min_samples=2,
        )
        return X, y

    def _encode_fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Plan the table (``selection.plan_table``: the columns kept under
        ``feature_selection``, the nominal encoding under ``categorical_encoding="cv"``),
        fit the encoder on the kept columns and return the encoded training rows.
        ``selected_features_`` indexes the columns of X kept; ``feature_selection_report_``
        and ``categorical_encoding_report_`` say what was compared (None when not asked)."""
        seed = int(check_random_state(self.random_state).randint(2**31))
        plan = plan_table(self, X, np.asarray(y), self._task, seed)
        self.selected_features_ = plan.columns
        self.feature_selection_report_: dict[str, Any] | None = plan.selection_report
        self.categorical_encoding_report_: dict[str, Any] | None = plan.encoding_report
        self._encoding_wanted = plan.encoding
        self.encoder_ = plan.encoder
        return plan.encoder.transform(X[:, plan.columns])

    def _fit_categorical_encoding(self, x: np.ndarray) -> np.ndarray:
        """Choose how the nominal columns reach the PFN (after ``_load``); returns x so.

        "ordinal" keeps the encoder's codes. "onehot" expands each nominal column (one that
        held strings, objects or categories) of 3 to ``ONEHOT_MAX_CATEGORIES`` categories
        into 0/1 columns, missing as NaN in all of them, when the widened table fits the
        checkpoint's features (else ordinal, with a warning). ``categorical_encoding_``
        says which was used; ``categorical_mask_`` marks the categorical columns PFN-side.
        """
        enc = self.encoder_
        expand = [
            (j, len(c))
            for j, c in enumerate(enc.categories_)
            if c is not None and 2 < len(c) <= ONEHOT_MAX_CATEGORIES
        ]
        self.onehot_columns_: list[tuple[int, int]] = []
        self.categorical_encoding_ = "ordinal"
        wanted = getattr(self, "_encoding_wanted", self.categorical_encoding)
        if wanted == "onehot" and expand:
            width = x.shape[1] + sum(k - 1 for _, k in expand)
            f_model = self.model_.feature_limit
            if f_model is not None and width > f_model:
                warnings.warn(
                    f"categorical_encoding='onehot' would widen X from {x.shape[1]} to {width} "
                    f"columns, more than the checkpoint reads ({f_model}); its nominal columns "
                    "stay ordinal codes. Use categorical_encoding='ordinal' to silence this.",
                    UserWarning,
                    stacklevel=4,
                )
            else:
                self.onehot_columns_ = expand
                self.categorical_encoding_ = "onehot"
        hot = {j for j, _ in self.onehot_columns_}
        keep = [j for j in range(x.shape[1]) if j not in hot]
        self.categorical_mask_ = np.concatenate(
            [enc.categorical_[keep], np.ones(sum(k for _, k in self.onehot_columns_), bool)]
        )
        return self._apply_categorical_encoding(x)

    def _apply_categorical_encoding(self, x: np.ndarray) -> np.ndarray:
        """Encoded rows (n, d) -> the columns the members read: kept columns in order, then
        one 0/1 block per one-hot column (NaN across the block where the code is missing)."""
        columns = getattr(self, "onehot_columns_", [])
        if not columns:
            return x
        hot = {j for j, _ in columns}
        parts = [x[:, [j for j in range(x.shape[1]) if j not in hot]]]
        for j, k in columns:
            code = x[:, j]
            block = (code[:, None] == np.arange(k)[None, :]).astype(x.dtype)
            block[np.isnan(code)] = np.nan
            parts.append(block)
        return np.concatenate(parts, axis=1)

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "members_")
        X = validate_data(
            self, dates_as_objects(X), dtype=None, ensure_all_finite="allow-nan", reset=False
        )
        selected = getattr(self, "selected_features_", None)  # None: pickled before selection
        if selected is not None and selected.size < X.shape[1]:
            X = X[:, selected]
        return self._apply_categorical_encoding(self.encoder_.transform(X))

    def _load(self) -> None:
        self.device_ = resolve_device(self.device, type(self).__name__)
        self.model_, self.card_ = load_model(self.checkpoint, self._task, self.device_)

    def _context_limit(self, n_rows: int) -> int:
        """Most context rows per member: max_context, else the checkpoint's training limit;
        ignore_pretraining_limits lifts it to every row."""
        if self.ignore_pretraining_limits:
            return n_rows
        if self.max_context is not None:
            return int(self.max_context)
        return int(self.card_.context_limit or 1024)

    def _fit_ensemble(self, x: np.ndarray, y_model: np.ndarray, n_members: int) -> None:
        """Members, their views, optional fine-tuning, then the context strategy."""
        x = self._fit_categorical_encoding(x)
        n, d = x.shape
        limit = self._context_limit(n)
        prompts = self.model_.config.tokens == "row"
        strategy = resolve_context(self.context, n, limit, prompts)
        self.context_strategy_ = strategy
        n_members = min(n_members, getattr(strategy, "max_members", n_members))
        self._warn_limits(n, d, limit, strategy)
        rng = check_random_state(self.random_state)
        views, categorical = self._build_members(x, n_members, rng)
        y_views = np.stack([self._encode_member_y(m, y_model) for m in self.members_])
        problem = ContextProblem(
            model=self.model_,
            x=views,
            y=y_views,
            categorical=categorical,
            task=self._task,
            n_classes=getattr(self, "_n_meta", 0),
            context_limit=limit,
            seed=int(rng.randint(2**31)),
            device=self.device_,
        )
        options = resolve_fine_tune(self.fine_tune)
        self.fine_tune_report_: dict[str, Any] | None = None
        if options is not None:
            tuned, self.fine_tune_report_ = fine_tune(problem, strategy, options)
            problem = dataclasses.replace(problem, model=tuned)
            self.model_ = tuned
        self.context_ = strategy.fit(problem)

    def _warn_limits(self, n: int, d: int, limit: int, strategy: Any) -> None:
        f_model = self.model_.feature_limit  # None: a cell-token PFN reads any width
        if f_model is not None and d > f_model:
            how = (
                f"a different random subset of {f_model} features"
                if self.feature_reduction == "subset"
                else f"{f_model} columns: categorical ones and principal components"
            )
            warnings.warn(
                f"X has {d} features but the checkpoint reads at most {f_model}; every "
                f"ensemble member sees {how} (feature_reduction={self.feature_reduction!r}).",
                UserWarning,
                stacklevel=4,
            )
        kept = (strategy.max_rows or limit) if isinstance(strategy, SubsampleContext) else n
        if kept < n:
            warnings.warn(
                f"X has {n} training rows but the checkpoint was trained on contexts of up to "
                f"{limit}; each ensemble member uses a random subset of {kept} rows. Use "
                "context='knn' or 'tuned' to use every row, or ignore_pretraining_limits=True "
                "to put all rows in one context.",
                UserWarning,
                stacklevel=4,
            )

    def _build_members(
        self, x: np.ndarray, n_members: int, rng: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw the members; return their views (B, n, f) and categorical masks (B, f)."""
        modes = member_modes(self.preprocessing, n_members)
        mask = self.categorical_mask_
        self.transforms_ = fit_transforms(modes, mask, x, rng)
        f_model = self.model_.feature_limit
        numeric = np.flatnonzero(~mask)
        # the numeric columns as given, appended to every member's preprocessed view when
        # the widened table still fits the checkpoint (row-token checkpoints only)
        fits = f_model is not None and x.shape[1] + numeric.size <= f_model
        self.appended_ = numeric if self.append_original and fits else numeric[:0]
        mask = np.concatenate([mask, np.zeros(self.appended_.size, dtype=bool)])
        pre = self._member_inputs(x)
        if f_model is None:  # every column of every view
            f_model = max(view.shape[1] for view in pre.values())
        self.members_: list[Member] = []
        for mode in modes:
            fmap = feature_map(pre[mode], mask, f_model, self.feature_reduction, rng)
            code = self._member_code(rng)
            self.members_.append(Member(mode, fmap, code, int(rng.randint(2**31))))
        views = np.stack([mb.features.apply(pre[mb.mode]) for mb in self.members_])
        cats = np.stack([mb.features.categorical(mask) for mb in self.members_])
        return views.astype(np.float32), cats

    def _member_inputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Encoded rows (n, d) -> each preprocessing's columns (n, d + appended)."""
        pre = {mode: t.transform(x) for mode, t in self.transforms_.items()}
        appended = getattr(self, "appended_", None)  # absent in pickles of older fits
        if appended is None or appended.size == 0:
            return pre
        raw = x[:, appended].astype(np.float32)
        return {mode: np.concatenate([v, raw], axis=1) for mode, v in pre.items()}

    def _member_code(self, rng: np.random.RandomState) -> np.ndarray | None:
        return None

    def _encode_member_y(self, member: Member, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float32)

    def _member_logits(self, x: np.ndarray) -> torch.Tensor:
        """Logits (n_members, M, K) of every member for encoded test rows x (M, d)."""
        pre = self._member_inputs(x)
        views = np.stack([mb.features.apply(pre[mb.mode]) for mb in self.members_])
        return self.context_.logits(views.astype(np.float32))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags
