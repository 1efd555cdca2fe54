"""scikit-learn estimators backed by PFNs: tabular classification and regression, and
treatment effects."""

from pfnkit.estimators.calibration import TemperatureCV, calibrate_temperature
from pfnkit.estimators.causal import PFNTreatmentEffect
from pfnkit.estimators.classifier import PFNClassifier
from pfnkit.estimators.regressor import PFNRegressor

__all__ = [
    "PFNClassifier",
    "PFNRegressor",
    "PFNTreatmentEffect",
    "TemperatureCV",
    "calibrate_temperature",
]
