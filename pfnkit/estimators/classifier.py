"""PFNClassifier: in-context classification with a tabular PFN, scikit-learn style."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets

from pfnkit.estimators._base import PFNEstimatorBase
from pfnkit.estimators.calibration import (
    DEFAULT_TEMPERATURE,
    TemperatureCV,
    card_temperature,
    tune_temperature_cv,
)
from pfnkit.estimators.members import Member


class PFNClassifier(ClassifierMixin, PFNEstimatorBase):
    """Classifier that predicts in one forward pass of a prior-fitted network.

    ``fit`` stores the training table as the PFN's context (and encodes it once);
    ``predict_proba`` runs the test rows through the PFN, averaged over an ensemble of
    views of the table.

    Args:
        checkpoint: "default" (the bundled tabular checkpoint), a run directory, a .pt or
            .safetensors file, or a loaded PFN.
        n_estimators: ensemble members (feature/class permutations, alternating
            quantile / power / no preprocessing), averaged as ``average_before_softmax``
            says.
        softmax_temperature: each member's logits are divided by this before its softmax
            (below 1 sharpens, above 1 flattens). "auto" (the default): the temperature
            stored on the checkpoint's card by ``pfnkit calibrate`` (chosen on held-out
            draws of its prior, see ``pfnkit.estimators.calibration``), else 0.9. "cv" or
            ``TemperatureCV(folds=5, grid=...)``: the grid value with the lowest K-fold
            cross-validated log loss on the training table (K more fits). A number: that
            temperature. The value used is ``softmax_temperature_``.
        device: "auto", "cpu", "cuda", ...
        random_state: seeds the ensemble's permutations and contexts (default 0: the same
            data and parameters give the same predictions; None draws a fresh seed).
        ignore_pretraining_limits: lift the checkpoint's context limit: subsample contexts
            take every row (one context of all rows), kNN contexts any k.
        max_context: most context rows per member (default: the checkpoint's training
            limit); the default k of kNN contexts.
        preprocessing: "alternate" (quantile, power, none in turn) or one of them for all.
        context: how each member's context is chosen (``pfnkit.tuning``): "auto" (the
            default: all rows when they fit the checkpoint's context, else half the members
            a subsample and half local kNN contexts; see ``pfnkit.tuning.AUTO_RULE``),
            "subsample", "full", "knn" (exact), "knn-fast" (graph mode), "knn-shared"
            (clustered), "tuned", or a strategy object such as ``KNNContext(k=50)``,
            ``TunedContext(n_tokens=64, time_budget=60)`` or ``MixedContext((...))``.
        fine_tune: False (default), True, or ``pfnkit.tuning.FineTune(time_budget=...)``:
            fine-tune a copy of the PFN on this table first (early-stopped on a validation
            split; the zero-shot PFN is kept when fine-tuning does not beat it there).
        feature_reduction: how a table wider than the checkpoint is read: "subset" (a
            random subset of columns per member) or "pca" (categorical columns plus
            principal components of the numeric ones).
        categorical_encoding: how nominal columns (strings, objects, categories) reach the
            PFN: "ordinal" (one column of category codes), "onehot" (one 0/1 column per
            category for columns of 3 to 10 categories, when the widened table fits the
            checkpoint's features) or "cv" (the default: one-hot when it beats the codes
            by two standard errors of the PFN's held-out loss on two halves of the
            training rows, else codes; tried only when there is a column to expand). One-hot
            suits tables whose label follows rules on single categories (tic-tac-toe: ROC
            AUC 0.876 -> 0.950) and can cost elsewhere (breast 0.734 -> 0.708, german
            0.799 -> 0.787); see the README. ``categorical_encoding_`` is what was used,
            ``categorical_encoding_report_`` (with "cv") the losses compared.
        feature_selection: "none" (the classifier's default: the PFN reads every column)
            or "cv": rank the columns by an extra-trees importance and keep the top k
            (k = d, d/2, d/4, ... down to 3) with the lowest held-out loss of the PFN
            itself on two halves of the training rows, when it beats every column by more
            than two standard errors (``pfnkit.estimators.selection``). Costs a few small
            fits (about 0.5-3 s). ``selected_features_`` indexes the columns kept,
            ``feature_selection_report_`` gives the losses tried.
        append_original: False (the default): each member reads its preprocessed columns.
            True: it also reads the numeric columns once more as given (robust-scaled,
            before the quantile / power transform), appended, when the widened table fits
            the checkpoint's feature limit (row-token checkpoints; else nothing is
            appended); ``appended_`` indexes the columns appended. With the bundled
            classifier it lowered log loss on the KEEL dev sets (0.436 -> 0.426) and on
            held-out real tables (0.600 -> 0.592 at 1,000 rows), but ROC AUC rose on the
            dev sets only (0.8774 -> 0.8783) and fell on the held-out ones (0.7977 ->
            0.7950): see the README.
        average_before_softmax: True (the default): the members' class probabilities are
            averaged in log space (their normalised geometric mean, as a softmax of the
            averaged log-probabilities); False: arithmetically, after each member's softmax.
            The log-space mean is what decodes the error-correcting codes of tables with
            more classes than the checkpoint: each member's evidence multiplies, so a class
            must be likely under every member's grouping of the classes. With the bundled
            classifier: portal_genus (15 classes) ROC AUC 0.835 -> 0.955 at 1,000 training
            rows; KEEL dev sets log loss 0.436 -> 0.425, mean AUC 0.8774 -> 0.8778 (README).

    More classes than the checkpoint supports are handled by error-correcting output codes:
    each member maps the classes onto the checkpoint's classes at random, and a class's
    probability is its meta-class's probability shared among the classes mapped to it,
    averaged over members (see ``average_before_softmax``).

    Attributes:
        softmax_temperature_: the temperature ``predict_proba`` uses.
        temperature_cv_: with ``softmax_temperature="cv"``, the cross-validation report
            (the temperatures tried, their out-of-fold log loss, folds, seconds); else None.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **PFNEstimatorBase._parameter_constraints,
        "softmax_temperature": [
            Interval(Real, 0.0, None, closed="neither"),
            StrOptions({"auto", "cv"}),
            TemperatureCV,
        ],
        "average_before_softmax": ["boolean"],
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
        average_before_softmax: bool = True,
    ) -> None:
        super().__init__(
            checkpoint=checkpoint,
            n_estimators=n_estimators,
            softmax_temperature=softmax_temperature,
            device=device,
            random_state=random_state,
            ignore_pretraining_limits=ignore_pretraining_limits,
            max_context=max_context,
            preprocessing=preprocessing,
            context=context,
            fine_tune=fine_tune,
            feature_reduction=feature_reduction,
            categorical_encoding=categorical_encoding,
            feature_selection=feature_selection,
            append_original=append_original,
        )
        self.average_before_softmax = average_before_softmax

    def fit(self, X: Any, y: Any) -> PFNClassifier:
        self._validate_params()
        table, y = self._validate_fit_X(X, y)
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"PFNClassifier needs at least 2 classes in y to fit; got 1 class "
                f"({self.classes_[0]!r}). Add rows of another class."
            )
        x = self._encode_fit(table, y)
        self._load()
        k = self.model_.config.n_classes
        self.codes_ = n_classes > k
        n_members = self.n_estimators
        if self.codes_:
            # enough random codes that every pair of classes is told apart by several members
            n_members = max(n_members, 2 * math.ceil(math.log(n_classes) / math.log(k)) + 4)
        y_enc = self.label_encoder_.transform(y)
        self._n_meta = min(n_classes, k)
        self._fit_ensemble(x, y_enc, n_members)
        self.temperature_cv_: dict[str, Any] | None = None
        spec = self.softmax_temperature
        if isinstance(spec, str) and spec == "auto":
            found = card_temperature(self.card_)
            self.softmax_temperature_ = DEFAULT_TEMPERATURE if found is None else found
        elif isinstance(spec, TemperatureCV | str):  # "cv"
            options = spec if isinstance(spec, TemperatureCV) else TemperatureCV()
            self.temperature_cv_ = tune_temperature_cv(self, X, np.asarray(y), options)
            self.softmax_temperature_ = self.temperature_cv_["softmax_temperature"]
        else:
            self.softmax_temperature_ = float(spec)
        return self

    def _member_code(self, rng: np.random.RandomState) -> np.ndarray:
        c = len(self.classes_)
        # class c -> meta class code[c]; a permutation when c <= k, else a random balanced code
        return rng.permutation(np.arange(c) % self._n_meta)

    def _encode_member_y(self, member: Member, y: np.ndarray) -> np.ndarray:
        assert member.code is not None
        return member.code[y].astype(np.float32)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns ordered as ``classes_``."""
        x = self._validate_predict_X(X)
        return self._proba_from_logits(self._meta_logits(x), self.softmax_temperature_)

    def _meta_logits(self, x: np.ndarray) -> torch.Tensor:
        """Logits (members, M, meta classes) of encoded test rows x (M, d)."""
        return self._member_logits(x)[..., : self._n_meta]

    def _proba_from_logits(self, logits: torch.Tensor, temperature: float) -> np.ndarray:
        """Class probabilities (M, n_classes) from the members' logits at a temperature:
        one forward pass serves every temperature (calibration and CV try many).

        A member's class probability is its meta class's probability shared equally among
        the classes mapped to it (with at most as many classes as the checkpoint's, each
        class is its own meta class). The members' class probabilities are averaged in
        log space (a normalised geometric mean) with ``average_before_softmax``, else
        arithmetically."""
        log_meta = torch.log_softmax(logits / temperature, dim=-1).double().numpy()
        out = np.zeros((log_meta.shape[1], len(self.classes_)))
        for member, lp in zip(self.members_, log_meta):
            code = member.code
            assert code is not None
            share = np.bincount(code, minlength=self._n_meta)[code]  # classes per meta class
            log_p = lp[:, code] - np.log(share)
            out += log_p if self.average_before_softmax else np.exp(log_p)
        if self.average_before_softmax:
            # a softmax of the mean log-probabilities (normalised below)
            mean = out / len(self.members_)
            out = np.exp(mean - mean.max(1, keepdims=True))
        return out / out.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))
