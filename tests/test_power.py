"""The all-columns-at-once Yeo-Johnson fit against scikit-learn's PowerTransformer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.preprocessing import PowerTransformer

from pfnkit.estimators.power import YeoJohnson
from pfnkit.estimators.preprocessing import MemberTransform


def skewed_table(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return np.column_stack(
        [
            rng.lognormal(0, 1, n),  # right-skewed, positive
            -rng.lognormal(0, 1.5, n),  # left-skewed, negative
            rng.normal(0, 1, n),  # already normal: lambda near 1
            rng.exponential(3, n) - 1,  # mixed signs
            rng.standard_t(2, n),  # heavy tails both ways
            np.round(rng.normal(0, 2, n)),  # integers with ties
            rng.uniform(0, 1, n) * 1e6,  # large scale
            rng.lognormal(0, 3, n),  # very skewed
            rng.beta(0.5, 0.5, n),  # bimodal in [0, 1]
        ]
    )


def sklearn_fit(x: np.ndarray) -> PowerTransformer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PowerTransformer(method="yeo-johnson", standardize=True).fit(x)


@pytest.mark.parametrize("missing", [0.0, 0.15])
def test_matches_sklearn_power_transformer(missing: float) -> None:
    x = skewed_table()
    if missing:
        x[np.random.RandomState(1).rand(*x.shape) < missing] = np.nan
    ours, ref = YeoJohnson().fit(x), sklearn_fit(x)
    np.testing.assert_allclose(ours.lambdas_, ref.lambdas_, atol=1e-5)
    out, want = ours.transform(x), ref.transform(x)
    assert np.array_equal(np.isnan(out), np.isnan(x))
    np.testing.assert_allclose(out[~np.isnan(x)], want[~np.isnan(x)], atol=1e-5)
    # new rows, inside and a little beyond the training range
    new = skewed_table(seed=5) * 1.5
    np.testing.assert_allclose(ours.transform(new), ref.transform(new), rtol=1e-5, atol=1e-5)


def test_lambda_maximises_the_likelihood() -> None:
    from scipy import stats

    x = skewed_table()
    lam = YeoJohnson().fit(x).lambdas_
    for j in range(x.shape[1]):
        best = stats.yeojohnson_llf(lam[j], x[:, j])
        for step in (-1e-3, 1e-3):
            assert stats.yeojohnson_llf(lam[j] + step, x[:, j]) <= best + 1e-9


def test_degenerate_columns_keep_the_identity() -> None:
    rng = np.random.RandomState(0)
    x = np.column_stack(
        [np.full(50, 3.0), np.zeros(50), np.full(50, np.nan), rng.lognormal(size=50)]
    )
    x[::7, 0] = np.nan
    t = YeoJohnson().fit(x)
    np.testing.assert_array_equal(t.lambdas_[:3], 1.0)
    assert t.lambdas_[3] < 1.0  # the skewed column still gets its own lambda
    out = t.transform(x)
    assert np.array_equal(np.isnan(out), np.isnan(x))
    np.testing.assert_array_equal(out[~np.isnan(x[:, 0]), 0], 0.0)  # centred constant
    np.testing.assert_allclose(np.nanstd(out[:, 3]), 1.0, rtol=1e-9)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        YeoJohnson().fit(np.arange(5.0))
    with pytest.raises(ValueError, match="finite"):
        YeoJohnson().fit(np.array([[1.0], [np.inf]]))


def test_member_transform_power_mode_uses_it() -> None:
    x = skewed_table()
    categorical = np.zeros(x.shape[1], dtype=bool)
    categorical[5] = True  # left as it is
    member = MemberTransform("power", categorical, seed=0).fit(x)
    assert isinstance(member.transformer, YeoJohnson)
    out = member.transform(x)
    np.testing.assert_array_equal(out[:, 5], x[:, 5].astype(np.float32))
    want = sklearn_fit(x[:, ~categorical]).transform(x[:, ~categorical])
    np.testing.assert_allclose(out[:, ~categorical], want, atol=1e-5)
    # a test value far beyond what the fit saw overflows to inf: it reaches the PFN as missing
    # (a positive value, in the column with the largest lambda > 1)
    lambdas = np.full(x.shape[1], -np.inf)
    lambdas[~categorical] = member.transformer.lambdas_
    j = int(np.argmax(lambdas))
    assert lambdas[j] > 1.0
    far = x[:1].copy()
    far[0, j] = 1e300
    assert np.isnan(member.transform(far)[0, j])
