"""PFNClassifier: in-context classification with a tabular PFN, scikit-learn style."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from pfnkit.estimators._base import PFNEstimatorBase, load_model, resolve_device


class PFNClassifier(ClassifierMixin, PFNEstimatorBase):
    """Classifier that predicts in one forward pass of a prior-fitted network.

    ``fit`` stores the training table as the PFN's context (and encodes it once);
    ``predict_proba`` runs the test rows through the PFN, averaged over an ensemble of
    views of the table.

    Args:
        checkpoint: "default" (the bundled tabular checkpoint), a run directory, a .pt or
            .safetensors file, or a loaded PFN.
        n_estimators: ensemble members (feature/class permutations, alternating
            quantile / power / no preprocessing), averaged after the softmax.
        softmax_temperature: logits are divided by this before the softmax.
        device: "auto", "cpu", "cuda", ...
        random_state: seeds the ensemble's permutations and subsamples.
        ignore_pretraining_limits: use every training row as context even beyond the
            context size the checkpoint was trained on (default: subsample, with a warning).
        max_context: most context rows per member (default: the checkpoint's training limit).
        preprocessing: "alternate" (quantile, power, none in turn) or one of them for all.

    More classes than the checkpoint supports are handled by error-correcting output codes:
    each member maps the classes onto the checkpoint's classes at random, and a class's
    probability is its meta-class's probability shared among the classes mapped to it,
    averaged over members (a proper, calibrated-by-construction distribution).
    """

    def fit(self, X: Any, y: Any) -> PFNClassifier:
        self._validate_params()
        x, y = self._validate_fit_X(X, y)
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"PFNClassifier needs at least 2 classes in y to fit; got 1 class "
                f"({self.classes_[0]!r}). Add rows of another class."
            )
        self.model_ = load_model(self.checkpoint, "classification", resolve_device(self.device))
        k = self.model_.config.n_classes
        self.codes_ = n_classes > k
        n_members = self.n_estimators
        if self.codes_:
            # enough random codes that every pair of classes is told apart by several members
            n_members = max(n_members, 2 * math.ceil(math.log(n_classes) / math.log(k)) + 4)
        y_enc = self.label_encoder_.transform(y)
        self._n_meta = min(n_classes, k)
        self._build_members(x, y_enc, n_members)
        return self

    def _context_rows(self, rng: np.random.RandomState, y: np.ndarray, n_ctx: int) -> np.ndarray:
        # stratified: every class keeps at least one row when the context has room
        first = np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])
        first = first[:n_ctx]
        rest = np.setdiff1d(np.arange(y.shape[0]), first)
        more = rng.choice(rest, size=n_ctx - first.size, replace=False)
        return np.concatenate([first, more])

    def _member_target(self, rng: np.random.RandomState, m: int) -> dict[str, Any]:
        c = len(self.classes_)
        # class c -> meta class code[c]; a permutation when c <= k, else a random balanced code
        code = rng.permutation(np.arange(c) % self._n_meta)
        return {"code": code}

    def _encode_member_y(self, member: dict[str, Any], y: np.ndarray) -> np.ndarray:
        return member["code"][y].astype(np.float32)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns ordered as ``classes_``."""
        x = self._validate_predict_X(X)
        logits = self._member_logits(x)[..., : self._n_meta]  # (members, M, meta classes)
        p_meta = torch.softmax(logits / self.softmax_temperature, dim=-1).numpy()
        proba = np.zeros((x.shape[0], len(self.classes_)))
        for member, p in zip(self.members_, p_meta):
            code = member["code"]
            share = np.bincount(code, minlength=self._n_meta)[code]  # classes per meta class
            proba += p[:, code] / share
        proba /= len(self.members_)
        return proba / proba.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))
