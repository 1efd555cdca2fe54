"""Estimators on hostile inputs: huge and tiny magnitudes, devices, date/time columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression

from pfnkit import PFNClassifier, PFNRegressor


@pytest.fixture(scope="module")
def ckpts(tiny_checkpoints):
    return tiny_checkpoints


def clf(ckpts, **kw):
    kw = {"n_estimators": 3, "random_state": 0, "context": "subsample", **kw}
    return PFNClassifier(checkpoint=ckpts["classification"], **kw)


def reg(ckpts, **kw):
    kw = {"n_estimators": 3, "random_state": 0, "context": "subsample", **kw}
    return PFNRegressor(checkpoint=ckpts["regression"], **kw)


def table(n=48, d=4, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=d, n_informative=3, n_redundant=0, random_state=seed
    )
    return X[:36], y[:36], X[36:]


# ---------------------------------------------------------------- magnitudes


@pytest.mark.parametrize("factor", [1e300, 1e-300, 1e40])
def test_classifier_reads_any_magnitude_like_the_original_table(ckpts, factor):
    X, y, Xt = table()
    base = clf(ckpts).fit(X, y)
    scaled = clf(ckpts).fit(X * factor, y)
    assert np.isfinite(scaled.encoder_.transform(X * factor)).all()
    p0, p1 = base.predict_proba(Xt), scaled.predict_proba(Xt * factor)
    np.testing.assert_allclose(p1, p0, atol=1e-4)
    assert np.array_equal(base.predict(Xt), scaled.predict(Xt * factor))
    assert p1.std(0).max() > 0.01  # not a constant output (tiny PFN: weak, not flat)


def test_one_column_beyond_float32_and_outliers_stay_finite(ckpts):
    X, y, Xt = table()
    X = X.copy()
    X[:, 1] *= 1e200  # one column far beyond float32's range
    X[0, 2] = 1e300  # one outlier in an ordinary column
    model = clf(ckpts).fit(X, y)
    assert np.isfinite(model.encoder_.transform(X)).all()
    Xt = Xt.copy()
    Xt[:, 1] *= 1e200
    Xt[0, 3] = -1.7e308  # beyond anything seen at fit: clipped, not inf
    proba = model.predict_proba(Xt)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    assert np.isfinite(model.encoder_.transform(Xt)).all()


@pytest.mark.parametrize("factor", [1e160, 1e300, 1e-300])
def test_regressor_target_of_any_magnitude_scales_the_predictions(ckpts, factor):
    X, y = make_regression(n_samples=48, n_features=3, noise=5.0, random_state=0)
    base = reg(ckpts).fit(X[:36], y[:36])
    big = reg(ckpts).fit(X[:36], y[:36] * factor)
    for kind in ("mean", "median"):
        p0 = base.predict(X[36:], output_type=kind)
        p1 = big.predict(X[36:], output_type=kind)
        assert np.isfinite(p1).all()
        np.testing.assert_allclose(p1, p0 * factor, rtol=1e-4, atol=1e-4 * factor * 100)
    q0 = base.predict(X[36:], output_type="quantiles")
    q1 = big.predict(X[36:], output_type="quantiles")
    np.testing.assert_allclose(q1, q0 * factor, rtol=1e-4, atol=1e-4 * factor * 100)
    full = big.predict(X[36:], output_type="full")
    assert np.isfinite(full["borders"]).all() and np.isfinite(full["mean"]).all()
    nll0, nll1 = base.nll(X[36:], y[36:]), big.nll(X[36:], y[36:] * factor)
    np.testing.assert_allclose(nll1, nll0 + np.log(factor), rtol=1e-4, atol=1e-3)


def test_regressor_huge_features_and_target_together(ckpts):
    X, y = make_regression(n_samples=48, n_features=3, noise=5.0, random_state=1)
    base = reg(ckpts).fit(X[:36], y[:36]).predict(X[36:])
    big = reg(ckpts).fit(X[:36] * 1e250, y[:36] * 1e250).predict(X[36:] * 1e250)
    np.testing.assert_allclose(big, base * 1e250, rtol=1e-4, atol=1e246)


def test_constant_target_predicts_the_constant(ckpts):
    X, _ = make_regression(n_samples=20, n_features=2, random_state=0)
    for value in (3.0, 1e200):
        pred = reg(ckpts).fit(X, np.full(20, value)).predict(X[:5])
        np.testing.assert_allclose(pred, value, rtol=0.05)


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("make", [clf, reg])
@pytest.mark.parametrize(
    "device, match",
    [
        ("cuda", "CUDA is not available"),
        ("cuda:0", "CUDA is not available"),
        ("gpu", "not a device name"),
        ("tpu:0", "not a device name"),
        ("", "not a device name"),
    ],
)
def test_unavailable_or_unknown_device_is_one_clear_error_at_fit(
    ckpts, monkeypatch, make, device, match
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    X, y, _ = table()
    model = make(ckpts, device=device)  # constructing never fails (scikit-learn contract)
    with pytest.raises(ValueError, match=match) as info:
        model.fit(X, y)
    msg = str(info.value)
    assert "\n" not in msg and "'device' parameter" in msg and type(model).__name__ in msg
    assert repr(device) in msg and ("device='cpu'" in msg or "device='auto'" in msg)


def test_explicit_cpu_device_works(ckpts):
    X, y, Xt = table()
    assert clf(ckpts, device="cpu").fit(X, y).predict(Xt).shape == (12,)


# ---------------------------------------------------------------- dates and times


def test_datetime_columns_are_seconds_since_the_epoch_with_a_warning(ckpts):
    pd = pytest.importorskip("pandas")
    X, y, Xt = table()
    Xa = np.vstack([X, Xt])
    start = pd.Timestamp("2021-03-01")
    when = start + pd.to_timedelta(Xa[:, 0] * 86400 * 30, unit="s").round("s")
    df = pd.DataFrame({"when": when, "b": Xa[:, 1], "c": Xa[:, 2]})
    df.loc[3, "when"] = pd.NaT  # a missing date is a missing value
    seconds = (df["when"] - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    plain = np.column_stack([seconds, Xa[:, 1], Xa[:, 2]])
    with pytest.warns(UserWarning, match=r"Column\(s\) 0 of X hold dates/times.*1970-01-01 UTC"):
        model = clf(ckpts).fit(df.iloc[:36], y)
    ref = clf(ckpts).fit(plain[:36], y)
    np.testing.assert_allclose(
        model.predict_proba(df.iloc[36:]), ref.predict_proba(plain[36:]), atol=1e-6
    )
    assert model.encoder_.datetime_.tolist() == [True, False, False]
    # the same instants in another time zone, and as numpy datetime64: the same numbers
    tz = df.assign(when=df["when"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"))
    with pytest.warns(UserWarning, match="dates/times"):
        model_tz = clf(ckpts).fit(tz.iloc[:36], y)
    np.testing.assert_allclose(
        model_tz.predict_proba(tz.iloc[36:]), ref.predict_proba(plain[36:]), atol=1e-6
    )
    only_dates = df[["when"]].to_numpy().astype("datetime64[s]")
    with pytest.warns(UserWarning, match="dates/times"):
        model_np = clf(ckpts).fit(only_dates[:36], y)
    ref_np = clf(ckpts).fit(seconds[:36, None], y)
    np.testing.assert_allclose(
        model_np.predict_proba(only_dates[36:]),
        ref_np.predict_proba(seconds[36:, None]),
        atol=1e-6,
    )
    # a date column given as numbers at predict is refused, not silently misread
    with pytest.raises(ValueError, match="held dates/times during fit"):
        model.predict(df.assign(when=seconds).iloc[36:])


def test_datetime_cells_mixed_with_other_values_are_refused(ckpts):
    X = np.array(
        [[np.datetime64("2020-01-01"), 1.0], ["soon", 2.0], [np.datetime64("2020-01-03"), 3.0]],
        dtype=object,
    )
    with pytest.raises(TypeError, match="mixes dates/times with other values"):
        clf(ckpts).fit(X, [0, 1, 0])


def test_regressor_datetime_column(ckpts):
    X = np.arange("2020-01-01", "2020-02-10", dtype="datetime64[D]")[:, None]
    y = np.arange(X.shape[0], dtype=float)
    with pytest.warns(UserWarning, match="seconds since 1970-01-01"):
        model = reg(ckpts).fit(X[:30], y[:30])
    pred = model.predict(X[30:])
    assert np.isfinite(pred).all() and y.min() <= pred.min() and pred.max() <= y.max()
    seconds = (X - np.datetime64(0, "s")) / np.timedelta64(1, "s")
    ref = reg(ckpts).fit(seconds[:30], y[:30]).predict(seconds[30:])
    np.testing.assert_allclose(pred, ref, rtol=1e-6)
