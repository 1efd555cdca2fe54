"""scikit-learn's estimator checks over both estimators, on the bundled checkpoints."""

import warnings

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.estimators._base import DEFAULT_CHECKPOINTS, bundled_checkpoint
from pfnkit.exceptions import CheckpointError


def _bundled() -> bool:
    try:
        for task in DEFAULT_CHECKPOINTS:
            bundled_checkpoint(task)
    except CheckpointError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _bundled(), reason="bundled checkpoints not built yet")


@parametrize_with_checks([PFNClassifier(n_estimators=2), PFNRegressor(n_estimators=2)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # context-size notices on check data
        check(estimator)
