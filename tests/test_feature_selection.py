"""feature_selection="cv": columns chosen by the PFN's own held-out loss."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.estimators import selection
from pfnkit.estimators.selection import candidate_sizes, feature_ranking


def _noisy_table(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two informative columns (0 and 1) among d; the rest is noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    return X, y


def _nrmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)) / y.std())


def test_candidate_sizes_halve_down_to_three():
    assert candidate_sizes(20) == [20, 10, 5, 3]
    assert candidate_sizes(100) == [100, 50, 25, 13, 7, 4, 3]
    assert candidate_sizes(4) == [4, 3]
    assert candidate_sizes(3) == [3]


def test_ranking_puts_the_informative_columns_first():
    X, y = _noisy_table(400, 12)
    order = feature_ranking(X, y, "regression", seed=0)
    assert set(order[:2]) == {0, 1}
    # missing cells are read, not dropped
    X[::5, 0] = np.nan
    assert set(feature_ranking(X, y, "regression", seed=0)[:2]) == {0, 1}


def test_defaults_and_bad_values():
    assert PFNRegressor().feature_selection == "cv"
    assert PFNClassifier().feature_selection == "none"
    assert PFNRegressor().categorical_encoding == "cv" == PFNClassifier().categorical_encoding
    assert clone(PFNRegressor(feature_selection="none")).get_params()["feature_selection"] == (
        "none"
    )
    X, y = _noisy_table(50, 5)
    with pytest.raises(InvalidParameterError, match="'feature_selection' parameter"):
        PFNRegressor(feature_selection="greedy").fit(X, y)


def test_selection_drops_noise_columns_and_predicts_better():
    X, y = _noisy_table(600, 20)
    tr, te = slice(0, 300), slice(300, None)
    plain = PFNRegressor(feature_selection="none").fit(X[tr], y[tr])
    chosen = PFNRegressor().fit(X[tr], y[tr])
    report = chosen.feature_selection_report_
    assert plain.feature_selection_report_ is None
    assert {0, 1} <= set(chosen.selected_features_.tolist())
    assert len(chosen.selected_features_) == report["k"] < 20
    assert report["losses"][report["k"]] < report["losses"][20]
    # measured: nRMSE 0.95 with every column, 0.38 with the selection
    assert _nrmse(chosen.predict(X[te]), y[te]) < 0.8 * _nrmse(plain.predict(X[te]), y[te])
    # predict takes all d columns and reads the selected ones
    assert chosen.n_features_in_ == 20
    with pytest.raises(ValueError, match="features"):
        chosen.predict(X[te][:, :3])


def test_selection_keeps_every_column_when_all_matter():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    y = X.sum(axis=1) + 0.1 * rng.normal(size=400)
    model = PFNRegressor(n_estimators=2).fit(X, y)
    assert model.feature_selection_report_["k"] == 6
    assert model.selected_features_.tolist() == list(range(6))


def test_selection_does_not_chase_noise():
    """A target unrelated to every column: no subset wins by two standard errors."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 12))
    y = rng.normal(size=300)
    model = PFNRegressor(n_estimators=2).fit(X, y)
    assert model.feature_selection_report_["k"] == 12


def test_small_tables_skip_the_selection():
    X, y = _noisy_table(30, 8)
    model = PFNRegressor(n_estimators=2).fit(X, y)
    assert model.feature_selection_report_["k"] == 8
    assert "fewer than" in model.feature_selection_report_["reason"]
    X, y = _noisy_table(100, 3)
    assert PFNRegressor(n_estimators=2).fit(X, y).selected_features_.tolist() == [0, 1, 2]


def test_dataframes_pickle_and_the_classifier():
    pd = pytest.importorskip("pandas")
    X, y = _noisy_table(400, 10, seed=3)
    df = pd.DataFrame(X, columns=[f"c{j}" for j in range(10)])
    df["colour"] = np.where(X[:, 2] > 0, "red", "blue")  # a nominal noise column
    df.loc[::11, "c0"] = np.nan
    model = PFNRegressor(n_estimators=2).fit(df.iloc[:300], y[:300])
    assert list(model.feature_names_in_) == [*df.columns]
    pred = model.predict(df.iloc[300:])
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.predict(df.iloc[300:]), pred)
    labels = np.where(y > np.median(y), "high", "low")
    clf = PFNClassifier(n_estimators=2, feature_selection="cv").fit(df.iloc[:300], labels[:300])
    assert {0, 1} <= set(clf.selected_features_.tolist())
    proba = clf.predict_proba(df.iloc[300:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(1), 1)


def test_selection_scores_are_nested(monkeypatch):
    """Each fold ranks the columns on its context half only: the query half never helps
    choose the columns it is scored with."""
    X, y = _noisy_table(200, 6)
    seen: list[int] = []
    real = selection.feature_ranking

    def spy(x, yy, task, seed):
        seen.append(len(yy))
        return real(x, yy, task, seed)

    monkeypatch.setattr(selection, "feature_ranking", spy)
    PFNRegressor(n_estimators=2).fit(X, y)
    assert seen[:2] == [100, 100]  # the two folds' rankings, on their context halves


def _middle_category_table(n: int = 400) -> tuple:
    """A label that counts one middle category ('o' between 'b' and 'x' in code order)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame({f"c{i}": rng.choice(["b", "o", "x"], n) for i in range(6)})
    X["num"] = rng.normal(size=n)
    y = ((X[["c0", "c1", "c2", "c3"]] == "o").sum(axis=1) >= 2).astype(int).to_numpy()
    return X, y


def test_encoding_cv_picks_one_hot_where_it_wins_on_held_out_rows():
    X, y = _middle_category_table()
    model = PFNClassifier(n_estimators=2).fit(X[:200], y[:200])  # "cv" is the default
    report = model.categorical_encoding_report_
    assert model.categorical_encoding == "cv"
    assert model.categorical_encoding_ == "onehot" == report["encoding"]
    assert report["losses"]["onehot"] < report["losses"]["ordinal"]
    assert model.predict_proba(X[200:]).shape == (200, 2)


def test_encoding_cv_keeps_codes_when_one_hot_does_not_win():
    X, y = _middle_category_table()
    y = (X["num"] > 0).astype(int).to_numpy()  # the nominal columns are noise
    model = PFNClassifier(n_estimators=2).fit(X[:200], y[:200])
    assert model.categorical_encoding_ == "ordinal"
    assert model.categorical_encoding_report_["reason"] == "codes: one-hot did not win"
    # no nominal column to expand: nothing is tried
    plain = PFNClassifier(n_estimators=2).fit(X[["num"]], y)
    assert plain.categorical_encoding_report_["losses"] == {}
    assert "no nominal column" in plain.categorical_encoding_report_["reason"]
    # explicit values are kept as given, with no report
    fixed = PFNClassifier(n_estimators=2, categorical_encoding="onehot").fit(X, y)
    assert fixed.categorical_encoding_ == "onehot"
    assert fixed.categorical_encoding_report_ is None


def test_regressor_encoding_cv_picks_one_hot_for_a_middle_category():
    X, y = _middle_category_table()
    target = (X[["c0", "c1", "c2", "c3"]] == "o").sum(axis=1).to_numpy(float)
    model = PFNRegressor(n_estimators=2).fit(X[:200], target[:200])
    assert model.categorical_encoding_ == "onehot"
    report = model.categorical_encoding_report_
    assert report["losses"]["onehot"] < report["losses"]["ordinal"]
    assert model.predict(X[200:]).shape == (200,)
