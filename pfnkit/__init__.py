"""pfnkit: one core for prior-fitted networks (PFNs).

Public API: ``PFNClassifier``, ``PFNRegressor``, ``PFNTreatmentEffect`` (scikit-learn
estimators, imported on first use), ``load_checkpoint`` and ``__version__``; priors, models
and training live in ``pfnkit.priors``, ``pfnkit.model`` and ``pfnkit.train``.
"""

from typing import Any

from pfnkit._version import __version__
from pfnkit.exceptions import CheckpointError, InvalidConfigError, PfnkitError
from pfnkit.train.checkpoint import load_checkpoint

__all__ = [
    "CheckpointError",
    "InvalidConfigError",
    "PFNClassifier",
    "PFNRegressor",
    "PFNTreatmentEffect",
    "PfnkitError",
    "__version__",
    "load_checkpoint",
]


def __getattr__(name: str) -> Any:
    # the estimators pull in scikit-learn: load them only when asked for
    if name in ("PFNClassifier", "PFNRegressor", "PFNTreatmentEffect"):
        from pfnkit import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'pfnkit' has no attribute {name!r}")
