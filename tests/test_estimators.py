"""PFNClassifier / PFNRegressor: the scikit-learn contract, inputs, limits and errors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, make_classification
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.exceptions import CheckpointError
from pfnkit.model.heads import BarDistribution


@pytest.fixture(scope="module")
def ckpts(tiny_checkpoints):
    return tiny_checkpoints


def clf(ckpts, **kw):
    kw = {"n_estimators": 3, "random_state": 0, **kw}
    return PFNClassifier(checkpoint=ckpts["classification"], **kw)


def reg(ckpts, **kw):
    kw = {"n_estimators": 3, "random_state": 0, **kw}
    return PFNRegressor(checkpoint=ckpts["regression"], **kw)


def test_classifier_fit_predict_shapes_and_probabilities(ckpts):
    X, y = load_iris(return_X_y=True)
    model = clf(ckpts).fit(X[::2], y[::2])
    proba = model.predict_proba(X[1::2])
    assert proba.shape == (75, 3)
    assert np.allclose(proba.sum(1), 1.0) and (proba >= 0).all()
    assert set(model.predict(X[1::2])) <= set(model.classes_)
    assert model.n_features_in_ == 4


def test_repeated_predict_is_identical_and_uses_the_cache(ckpts, monkeypatch):
    X, y = load_iris(return_X_y=True)
    model = clf(ckpts, context="subsample").fit(X[::2], y[::2])
    first = model.predict_proba(X[1::2])

    def boom(*a, **k):
        raise AssertionError("predict must not re-encode the context")

    monkeypatch.setattr(model.model_, "encode_context", boom)
    assert np.array_equal(first, model.predict_proba(X[1::2]))


def test_string_labels_pandas_categoricals_and_missing(ckpts):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "flag": rng.choice([True, False], size=n),
            "cat": pd.Categorical(rng.choice(["a", "b"], size=n)),
        }
    )
    df.loc[::7, "num"] = np.nan
    df.loc[::9, "color"] = None
    y = np.where(df["num"].fillna(0) > 0, "yes", "no")
    model = clf(ckpts).fit(df, y)
    assert list(model.classes_) == ["no", "yes"]
    assert model.encoder_.categorical_.tolist() == [False, True, False, True]
    unseen = df.copy()
    unseen.loc[0, "color"] = "purple"  # a category never seen in fit counts as missing
    assert model.predict_proba(unseen).shape == (n, 2)
    assert list(model.feature_names_in_) == ["num", "color", "flag", "cat"]


def test_more_classes_than_the_checkpoint_uses_output_codes(ckpts):
    X, y = make_classification(
        n_samples=300,
        n_features=6,
        n_informative=6,
        n_redundant=0,
        n_classes=13,
        n_clusters_per_class=1,
        random_state=0,
    )
    model = clf(ckpts).fit(X[:200], y[:200])
    assert model.codes_ and len(model.members_) >= 3
    proba = model.predict_proba(X[200:])
    assert proba.shape == (100, 13) and np.allclose(proba.sum(1), 1.0)


@pytest.mark.parametrize("n_classes", [3, 13])
def test_average_before_softmax_is_the_mean_of_member_log_probabilities(ckpts, n_classes):
    import torch

    X, y = make_classification(
        n_samples=260, n_features=6, n_informative=5, n_redundant=0,
        n_classes=n_classes, n_clusters_per_class=1, random_state=1,
    )  # fmt: skip
    geo = clf(ckpts).fit(X[:200], y[:200])
    arith = clf(ckpts, average_before_softmax=False).fit(X[:200], y[:200])
    assert (
        geo.get_params()["average_before_softmax"]
        and not arith.get_params()["average_before_softmax"]
    )
    # each member's class probabilities, by hand from its meta-class logits
    x = geo._validate_predict_X(X[200:])
    meta = torch.softmax(geo._meta_logits(x) / geo.softmax_temperature_, -1).double().numpy()
    members = []
    for member, p in zip(geo.members_, meta, strict=True):
        share = np.bincount(member.code, minlength=p.shape[1])[member.code]
        members.append(p[:, member.code] / share)
    members = np.array(members)
    want_geo = np.exp(np.log(members).mean(0))
    want_geo /= want_geo.sum(1, keepdims=True)
    want_arith = members.mean(0)
    np.testing.assert_allclose(geo.predict_proba(X[200:]), want_geo, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(arith.predict_proba(X[200:]), want_arith, rtol=1e-5, atol=1e-7)
    assert not np.allclose(want_geo, want_arith, atol=1e-4)  # the two really differ here


def test_log_space_average_decodes_many_classes_better():
    """With more classes than the checkpoint (output codes), the bundled classifier's
    log-space average has a lower test log loss than the arithmetic one (measured
    1.37 against 1.55 on this table)."""
    from sklearn.metrics import log_loss

    X, y = make_classification(
        n_samples=1200, n_features=12, n_informative=8, n_classes=15,
        n_clusters_per_class=1, class_sep=1.5, random_state=0,
    )  # fmt: skip
    losses = {}
    for geo in (True, False):
        est = PFNClassifier(average_before_softmax=geo).fit(X[:600], y[:600])
        assert est.codes_
        losses[geo] = log_loss(y[600:], est.predict_proba(X[600:]), labels=est.classes_)
    assert losses[True] < losses[False] - 0.05, losses


def test_pretraining_limits_warn_and_can_be_ignored(ckpts):
    X, y = make_classification(n_samples=400, n_features=80, random_state=0)
    with pytest.warns(UserWarning) as rec:
        model = clf(ckpts, context="subsample").fit(X, y)
    text = " ".join(str(w.message) for w in rec)
    assert "random subset" in text and "features" in text and "rows" in text
    assert all(m.features.n_out == model.model_.config.n_features for m in model.members_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = clf(ckpts, ignore_pretraining_limits=True).fit(X[:, :10], y)
    assert model.context_.n_context_rows == 400


def test_regressor_outputs(ckpts):
    X, y = load_diabetes(return_X_y=True)
    model = reg(ckpts).fit(X[:200], y[:200])
    mean = model.predict(X[200:260])
    median = model.predict(X[200:260], output_type="median")
    q = model.predict(X[200:260], output_type="quantiles", quantiles=[0.1, 0.5, 0.9])
    full = model.predict(X[200:260], output_type="full")
    assert mean.shape == median.shape == (60,) and q.shape == (60, 3)
    assert np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
    assert np.allclose(q[:, 1], median, rtol=1e-4, atol=1e-3)
    assert full["probabilities"].shape == (60, full["borders"].shape[0] - 1)
    assert np.allclose(full["probabilities"].sum(1), 1.0, atol=1e-4)
    assert np.allclose(full["mean"], mean)
    assert y.min() - 3 * y.std() < mean.min() and mean.max() < y.max() + 3 * y.std()
    assert np.isfinite(model.nll(X[200:260], y[200:260])).all()
    with pytest.raises(ValueError, match="output_type"):
        model.predict(X[:3], output_type="mode")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        model.predict(X[:3], output_type="quantiles", quantiles=[0.0, 0.5])


def test_regressor_target_bounds(ckpts):
    """Point predictions stay within target_bounds: the mean is E[clip(Y, low, high)] of
    the predictive, the median and quantiles are clipped; the distribution is not."""
    X, y = load_diabetes(return_X_y=True)
    model = reg(ckpts).fit(X[:200], y[:200])
    lo, hi = y[:200].min(), y[:200].max()
    pad = 0.1 * (hi - lo)
    assert model.target_bounds_ == pytest.approx((lo - pad, hi + pad))
    free = reg(ckpts, target_bounds=None).fit(X[:200], y[:200])
    assert free.target_bounds_ == (-np.inf, np.inf)
    tight = reg(ckpts, target_bounds=(100, 250)).fit(X[:200], np.clip(y[:200], 100, 250))
    for m, (a, b) in ((model, model.target_bounds_), (tight, (100, 250))):
        outs = [m.predict(X[200:]), m.predict(X[200:], output_type="median")]
        outs.append(m.predict(X[200:], output_type="quantiles", quantiles=[0.01, 0.99]))
        assert all(np.all((o >= a) & (o <= b)) for o in outs)
    # the bounded mean by hand, from the unbounded distribution (same members and seeds)
    y_tight = np.clip(y[:200], 100, 250)
    free_tight = reg(ckpts, target_bounds=None).fit(X[:200], y_tight)
    full = free_tight.predict(X[200:260], output_type="full")
    mu, sd = free_tight.y_mean_, free_tight.y_std_
    dist = BarDistribution(torch.as_tensor((full["borders"] - mu) / sd))
    logits = torch.log(torch.as_tensor(full["probabilities"]).clamp_min(1e-30))
    by_hand = dist.clipped_mean(logits, (100 - mu) / sd, (250 - mu) / sd).double().numpy()
    assert np.allclose(tight.predict(X[200:260]), by_hand * sd + mu, rtol=1e-4, atol=1e-2)
    assert not np.allclose(free_tight.predict(X[200:260]), by_hand * sd + mu, atol=0.5)
    # bounds far outside change nothing; one open side works
    wide = reg(ckpts, target_bounds=(-1e9, None)).fit(X[:200], y[:200])
    assert np.allclose(wide.predict(X[200:]), free.predict(X[200:]), rtol=1e-5)


@pytest.mark.parametrize(
    "bounds, match",
    [
        ((3, 1), "low < high"),
        ((0,), "a pair"),
        ((None, "x"), "a pair"),
        ((float("nan"), 1), "a pair"),
        ((200, None), "y holds values from"),
        ("range", "'target_bounds' parameter"),
        (5, "'target_bounds' parameter"),
    ],
)
def test_regressor_target_bounds_bad_values(ckpts, bounds, match):
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match=match):
        reg(ckpts, target_bounds=bounds).fit(X[:50], y[:50])


def test_bounded_mean_helps_on_a_skewed_target():
    """The bundled regressor on a log-normal target: the plain mean is pulled up by the
    predictive's half-normal upper tail; bounded to the training range it is not
    (measured RMSE 0.79 against 0.95)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = np.exp(X[:, 0] + 0.3 * rng.normal(size=300))
    rmse = {}
    for bounds in ("train", None):
        est = PFNRegressor(n_estimators=2, target_bounds=bounds).fit(X[:200], y[:200])
        rmse[bounds] = float(np.sqrt(np.mean((est.predict(X[200:]) - y[200:]) ** 2)))
    assert rmse["train"] < 0.95 * rmse[None], rmse


def test_sklearn_tools(ckpts):
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:160], y[:160]
    pipe = make_pipeline(StandardScaler(), clf(ckpts, n_estimators=1))
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    grid = GridSearchCV(clf(ckpts), {"n_estimators": [1, 2]}, cv=2).fit(X, y)
    assert grid.best_params_["n_estimators"] in (1, 2)
    cal = CalibratedClassifierCV(clf(ckpts, n_estimators=1), cv=2).fit(X, y)
    assert cal.predict_proba(X[:5]).shape == (5, 2)
    fitted = clf(ckpts).fit(X, y)
    again = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(again.predict_proba(X[:20]), fitted.predict_proba(X[:20]))
    assert clone(fitted).get_params() == fitted.get_params()


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.ones((5, 2)), np.zeros(5), "at least 2 classes"),
        (np.array([[1.0, np.inf], [2.0, 3.0], [3.0, 1.0]]), np.array([0, 1, 0]), "infinity"),
        (np.empty((0, 3)), np.empty(0), "0 sample"),
    ],
)
def test_bad_input_errors(ckpts, X, y, match):
    with pytest.raises(ValueError, match=match):
        clf(ckpts).fit(X, y)


def test_mismatched_features_and_bad_params(ckpts):
    X, y = load_iris(return_X_y=True)
    model = clf(ckpts).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match="n_estimators"):
        clf(ckpts, n_estimators=0).fit(X, y)
    with pytest.raises(CheckpointError, match="does not exist"):
        PFNClassifier(checkpoint="no/such/file.pt").fit(X, y)
    with pytest.raises(CheckpointError, match="regression PFN"):
        PFNClassifier(checkpoint=ckpts["regression"]).fit(X, y)


def test_corrupt_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        PFNClassifier(checkpoint=bad).fit(np.eye(3), [0, 1, 0])


def test_bundled_checkpoints_work_offline_and_learn():
    from sklearn.model_selection import train_test_split

    from pfnkit.estimators._base import DEFAULT_CHECKPOINTS, bundled_checkpoint

    for task in DEFAULT_CHECKPOINTS:
        try:
            bundled_checkpoint(task)
        except CheckpointError:
            pytest.skip("bundled checkpoints not built yet")
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
    from sklearn.metrics import r2_score, roc_auc_score

    proba = PFNClassifier(random_state=0).fit(Xtr, ytr).predict_proba(Xte)
    assert roc_auc_score(yte, proba[:, 1]) > 0.95
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=0)
    assert r2_score(yte, PFNRegressor(random_state=0).fit(Xtr, ytr).predict(Xte)) > 0.3


def test_bundled_classifier_reads_100_features_without_subsets():
    import warnings

    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=200, n_features=100, n_informative=8, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "reads at most ... features" warning
        est = PFNClassifier(n_estimators=2, random_state=0).fit(X, y)
    assert est.model_.feature_limit >= 100
    for member in est.members_:
        assert sorted(member.features.cols.tolist()) == list(range(100))
        assert member.features.components is None


def test_bundled_classifier_uses_the_temperature_calibrated_on_its_card():
    from pfnkit.estimators.calibration import card_temperature

    X, y = load_breast_cancer(return_X_y=True)
    est = PFNClassifier(n_estimators=1).fit(X[:100], y[:100])
    found = card_temperature(est.card_)
    assert found is not None and 0.1 <= found <= 1.5
    assert est.softmax_temperature_ == found


def _nominal_table(n=120, seed=0):
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(seed)
    X = pd.DataFrame(
        {
            "a": rng.choice(["x", "y", "z"], n).astype(object),  # 3 categories: one-hot
            "b": rng.randn(n),  # numeric: as is
            "bin": rng.choice(["yes", "no"], n),  # 2 categories: one column either way
            "c": rng.choice(["p", "q", "r", "s"], n),  # 4 categories: one-hot
            "many": rng.choice([f"v{i}" for i in range(12)], n),  # > 10: stays ordinal
        }
    )
    X.loc[3, "a"] = None
    y = ((X["a"] == "y") ^ (X["c"] == "q")).astype(int).to_numpy()
    return X, y


@pytest.mark.parametrize("make", [clf, reg])
def test_onehot_encoding_expands_nominal_columns(ckpts, make):
    X, y = _nominal_table()
    model = make(ckpts, categorical_encoding="onehot").fit(X, y)
    assert model.categorical_encoding_ == "onehot"
    assert model.onehot_columns_ == [(0, 3), (3, 4)]
    # kept columns (b, bin, many) then the blocks of a and c; every block column categorical
    assert model.categorical_mask_.tolist() == [False, True, True] + [True] * 7
    assert {m.features.n_out for m in model.members_} == {10}
    rows = model._validate_predict_X(X.iloc[:5])
    codes = model.encoder_.transform(X.iloc[:5].to_numpy(dtype=object))
    assert np.array_equal(rows[:, :3], codes[:, [1, 2, 4]], equal_nan=True)
    a, c = rows[:, 3:6], rows[:, 6:10]
    assert np.all(np.isnan(a[3])) and not np.isnan(c[3]).any()  # a missing: NaN block
    ok = [0, 1, 2, 4]
    assert np.array_equal(a[ok].sum(1), np.ones(4)) and np.array_equal(c.sum(1), np.ones(5))
    assert np.array_equal(np.argmax(a[ok], 1), codes[ok, 0])
    out = model.predict(X.iloc[:7])
    assert out.shape == (7,) and np.all(np.isfinite(out.astype(float)))
    plain = make(ckpts, categorical_encoding="ordinal").fit(X, y)  # codes, as asked
    assert plain.categorical_encoding_ == "ordinal" and plain.onehot_columns_ == []
    assert {m.features.n_out for m in plain.members_} == {5}


def test_onehot_encoding_falls_back_when_too_wide_and_checks_its_value(ckpts):
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    # 8 columns of 10 categories: 80 one-hot columns, more than the tiny PFN's 64
    X = pd.DataFrame({f"c{i}": rng.choice(list("abcdefghij"), 80) for i in range(8)})
    y = rng.randint(0, 2, 80)
    with pytest.warns(UserWarning, match=r"widen X from 8 to 80 columns.*reads \(64\)"):
        model = clf(ckpts, categorical_encoding="onehot").fit(X, y)
    assert model.categorical_encoding_ == "ordinal" and model.predict(X).shape == (80,)
    with pytest.raises(ValueError, match="'categorical_encoding' parameter"):
        clf(ckpts, categorical_encoding="dummies").fit(X, y)


def test_bundled_classifier_learns_category_rules_better_one_hot():
    """A label that counts one middle category ('o' between 'b' and 'x' in code order):
    ordinal codes hide it in the middle of a range, one-hot columns show it."""
    pd = pytest.importorskip("pandas")
    from sklearn.metrics import roc_auc_score

    rng = np.random.RandomState(0)
    X = pd.DataFrame({f"c{i}": rng.choice(["b", "o", "x"], 400) for i in range(6)})
    y = ((X[["c0", "c1", "c2", "c3"]] == "o").sum(axis=1) >= 2).astype(int).to_numpy()
    auc = {}
    for enc in ("ordinal", "onehot"):
        est = PFNClassifier(categorical_encoding=enc, n_estimators=4, random_state=0)
        auc[enc] = roc_auc_score(y[200:], est.fit(X[:200], y[:200]).predict_proba(X[200:])[:, 1])
    assert auc["onehot"] > 0.97 and auc["onehot"] > auc["ordinal"] + 0.03, auc


def test_a_column_empty_at_fit_reads_as_missing_at_predict(ckpts):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 60
    train = pd.DataFrame({"num": rng.normal(size=n), "empty": [np.nan] * n})
    y = (train["num"] > 0).astype(int).to_numpy()
    model = clf(ckpts).fit(train, y)
    assert model.encoder_.empty_.tolist() == [False, True]
    test = train.copy()
    test["empty"] = rng.choice(["a", "b"], size=n)  # strings where fit saw no value at all
    as_missing = model.predict_proba(train)
    assert np.allclose(model.predict_proba(test), as_missing)
    test["empty"] = rng.normal(size=n) * 1e6  # numbers: the same
    assert np.allclose(model.predict_proba(test), as_missing)
    test["num"] = "text"  # a column that held numbers at fit still may not hold strings
    with pytest.raises(ValueError, match="Column 0 held numbers during fit"):
        model.predict_proba(test)


@pytest.mark.parametrize("make", [clf, reg])
def test_append_original_adds_the_numeric_columns_as_given(ckpts, make):
    X, y = _nominal_table()
    X = X.drop(columns=["many"])
    X["d"] = np.random.RandomState(1).lognormal(size=len(X))  # skewed: transforms differ
    if make is reg:
        y = X["b"].to_numpy() + y
    opts = {"categorical_encoding": "ordinal", "feature_selection": "none"}
    model = make(ckpts, **opts, append_original=True).fit(X, y)
    # columns a, b, bin, c, d; b and d numeric: appended once more, as given
    assert model.appended_.tolist() == [1, 4]
    assert {m.features.n_out for m in model.members_} == {7}
    rows = model._validate_predict_X(X.iloc[:9])
    inputs = model._member_inputs(rows)
    assert set(inputs) == {"quantile", "power", "none"}
    for mode, view in inputs.items():
        assert view.shape == (9, 7)
        assert np.array_equal(view[:, 5:], rows[:, [1, 4]], equal_nan=True)
        if mode != "none":  # the preprocessed copy differs from the one as given
            assert not np.allclose(view[:, 4], rows[:, 4])
    plain = make(ckpts, **opts).fit(X, y)  # the default: not appended
    assert plain.appended_.size == 0 and {m.features.n_out for m in plain.members_} == {5}
    assert not np.allclose(model.predict(X.iloc[:9]), plain.predict(X.iloc[:9]))


def test_append_original_only_when_the_widened_table_fits(ckpts):
    X, y = make_classification(n_samples=120, n_features=40, random_state=0)
    model = clf(ckpts, append_original=True).fit(X, y)  # 40 + 40 > the tiny PFN's 64
    assert model.appended_.size == 0
    assert {m.features.n_out for m in model.members_} == {40}
    model = clf(ckpts, append_original=True).fit(X[:, :32], y)  # 32 + 32 = 64: appended
    assert model.appended_.size == 32 and {m.features.n_out for m in model.members_} == {64}
    with pytest.raises(ValueError, match="'append_original' parameter"):
        clf(ckpts, append_original="yes").fit(X, y)
