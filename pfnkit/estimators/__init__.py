"""scikit-learn estimators backed by tabular PFNs."""

from pfnkit.estimators.classifier import PFNClassifier
from pfnkit.estimators.regressor import PFNRegressor

__all__ = ["PFNClassifier", "PFNRegressor"]
