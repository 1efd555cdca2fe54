"""PFNTreatmentEffect on a tiny causal PFN trained for a few hundred steps (quality is not
the point, except for the sign of a large effect)."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from pfnkit import PFNTreatmentEffect
from pfnkit.exceptions import CheckpointError
from pfnkit.model import PFN, PFNConfig

N_FEATURES = 6
ROWS = 128  # context limit rows - rows // 8 = 112


@pytest.fixture(scope="module")
def causal_checkpoint(tmp_path_factory):
    from pfnkit.priors import CausalPrior
    from pfnkit.train import TrainConfig, Trainer

    path = tmp_path_factory.mktemp("causal")
    model = PFNConfig(
        n_features=N_FEATURES, d_model=32, n_layers=2, n_heads=2, n_bars=100, normalize_x=True
    )
    train = TrainConfig(
        steps=300,
        batch_size=8,
        rows=ROWS,
        border_samples=5000,
        lr=3e-3,
        log_every=10**9,
        checkpoint_every=10**9,
    )
    Trainer(CausalPrior(), model, train, path).run()
    return path


def study(n=100, d=4, effect=5.0, confounding=0.5, seed=0):
    """A confounded study with a constant effect: y = 10 + 3 x0 + x1 + effect * t + noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    e = 1.0 / (1.0 + np.exp(-confounding * X[:, 0]))
    t = (rng.random(n) < e).astype(np.int64)
    y = 10.0 + 3.0 * X[:, 0] + X[:, 1] + effect * t + rng.standard_normal(n)
    return X, t, y


def make(path, **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("n_estimators", 4)
    return PFNTreatmentEffect(checkpoint=path, **kwargs)


def test_every_method_has_the_right_shape_and_order(causal_checkpoint):
    X, t, y = study()
    est = make(causal_checkpoint).fit(X, t, y)
    Xt = X[:7]
    tau = est.effect(Xt)
    lo, hi = est.effect_interval(Xt)
    mu0, mu1 = est.predict_outcomes(Xt)
    for a in (tau, lo, hi, mu0, mu1):
        assert a.shape == (7,) and np.all(np.isfinite(a))
    assert np.all(lo < hi)
    # a narrower level gives a nested interval
    lo50, hi50 = est.effect_interval(Xt, alpha=0.5)
    assert np.all((lo <= lo50) & (lo50 < hi50) & (hi50 <= hi))
    ate = est.ate()
    a_lo, a_hi = est.ate_interval()
    assert isinstance(ate, float) and isinstance(a_lo, float)
    assert a_lo < ate < a_hi
    assert est.propensity_.shape == (100,) and 0.0 <= est.overlap_share_ <= 1.0
    assert est.n_features_in_ == 4
    # outcomes sit in y's units (around the mean of y), not standardised
    assert abs(np.mean(np.r_[mu0, mu1]) - y.mean()) < 3 * y.std()


def test_outcomes_shift_and_scale_with_y_effects_only_scale(causal_checkpoint):
    X, t, y = study()
    a = make(causal_checkpoint).fit(X, t, y)
    b = make(causal_checkpoint).fit(X, t, 1000.0 * y + 5e4)
    np.testing.assert_allclose(b.effect(X[:5]), 1000.0 * a.effect(X[:5]), rtol=1e-3)
    lo_a, hi_a = a.effect_interval(X[:5])
    lo_b, hi_b = b.effect_interval(X[:5])
    np.testing.assert_allclose(hi_b - lo_b, 1000.0 * (hi_a - lo_a), rtol=1e-3)
    for out_a, out_b in zip(a.predict_outcomes(X[:5]), b.predict_outcomes(X[:5])):
        np.testing.assert_allclose(out_b, 1000.0 * out_a + 5e4, rtol=1e-5)
    assert b.ate() == pytest.approx(1000.0 * a.ate(), rel=1e-3)


def test_treatment_is_a_row_input_not_a_feature(causal_checkpoint):
    X, t, y = study(effect=5.0)
    est = make(causal_checkpoint, n_estimators=6).fit(X, t, y)
    # no member reads a column beyond X's: the treatment is never permuted in
    assert all(m.features.cols.max() < X.shape[1] for m in est.members_)
    assert est.ate() > 0 and est.effect(X).mean() > 0
    # swapping the arms flips the effect: the treatment reaches the network as itself
    flipped = make(causal_checkpoint, n_estimators=6).fit(X, 1 - t, y)
    assert flipped.ate() < 0 and flipped.effect(X).mean() < 0
    lo, hi = flipped.ate_interval()
    assert lo < flipped.ate() < hi
    # mu0 and mu1 swap roles too
    mu0, mu1 = est.predict_outcomes(X)
    assert mu1.mean() > mu0.mean()


def test_sklearn_conventions_clone_params_pickle(causal_checkpoint):
    est = make(causal_checkpoint, n_estimators=3, overlap_threshold=0.1)
    assert est.get_params()["overlap_threshold"] == 0.1
    assert not hasattr(est, "context_")  # __init__ stores parameters only
    X, t, y = study()
    est.fit(X, t, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "context_")
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.effect(X), est.effect(X))
    for a, b in zip(again.effect_interval(X), est.effect_interval(X)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(again.predict_outcomes(X), est.predict_outcomes(X)):
        np.testing.assert_array_equal(a, b)
    assert again.ate() == est.ate() and again.ate_interval() == est.ate_interval()
    # the same seed gives the same answers
    np.testing.assert_array_equal(clone(est).fit(X, t, y).effect(X), est.effect(X))


def test_dataframe_with_categorical_column_and_nan(causal_checkpoint):
    X, t, y = study(n=90, d=3)
    rng = np.random.default_rng(1)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df.loc[rng.random(90) < 0.2, "b"] = np.nan
    df["colour"] = pd.Categorical(rng.choice(["red", "green", "blue"], 90))
    df.loc[:4, "colour"] = np.nan
    df["id"] = [f"unit-{i}" for i in range(90)]  # one level per row: no blow-up
    est = make(causal_checkpoint).fit(df, pd.Series(t.astype(bool)), pd.Series(y))
    assert est.encoder_.categorical_.tolist() == [False, False, False, True, True]
    assert list(est.feature_names_in_) == ["a", "b", "c", "colour", "id"]
    tau = est.effect(df.iloc[:10])
    lo, hi = est.effect_interval(df.iloc[:10])
    assert np.all(np.isfinite(tau)) and np.all(lo < hi)
    assert np.isfinite(est.ate())


def test_tables_past_the_context_limit_are_subsampled_with_both_arms(causal_checkpoint):
    X, t, y = study(n=300)
    with pytest.warns(UserWarning, match="random subset of 112 rows"):
        est = make(causal_checkpoint, ate_from="network").fit(X, t, y)
    assert est.context_.n_context_rows == 112
    # the ATE of all 300 rows: each member's ATE spread narrowed by sqrt(112 / 300)
    assert est.ate_subsample_factor_ == pytest.approx(np.sqrt(112 / 300))
    lo, hi = est.ate_interval()
    est.ate_subsample_factor_ = 1.0
    lo1, hi1 = est.ate_interval()
    assert hi - lo == pytest.approx(np.sqrt(112 / 300) * (hi1 - lo1), rel=1e-5)
    with pytest.warns(UserWarning, match=r"limit of 40 \(max_context\).*subset of 40 rows"):
        assert make(causal_checkpoint, max_context=40).fit(X, t, y).context_.n_context_rows == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no subsampling warning: every row in one context
        full = make(causal_checkpoint, context="full").fit(X, t, y)
    assert full.context_.n_context_rows == 300
    # a rare arm still fits with small contexts (each member's subsample is stratified by
    # arm: pfnkit.tuning's stratified_rows keeps a row of each)
    t_rare = np.zeros(300, dtype=np.int64)
    t_rare[:3] = 1
    rare = make(causal_checkpoint, max_context=10, overlap_threshold=1e-9)
    with pytest.warns(UserWarning, match="random subset"):
        rare.fit(X, t_rare, y)
    keys = rare.context_.cache.kv[0][0]  # (B, H, Nc, D)
    assert keys.shape[2] == rare.context_.n_context_rows == 10
    assert np.isfinite(rare.ate()) and np.all(np.isfinite(rare.effect(X[:5])))


def test_default_context_cap_subsamples_silently_within_the_trained_limit(
    causal_checkpoint, monkeypatch
):
    import pfnkit.estimators.causal as causal

    monkeypatch.setattr(causal, "AUTO_CONTEXT_ROWS", 60)
    X, t, y = study(n=100)  # within the network's 112 rows: capped at 60, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = make(causal_checkpoint).fit(X, t, y)
    assert est.context_.n_context_rows == 60 and np.isfinite(est.ate())
    X, t, y = study(n=200)  # past the trained limit: the warning says so
    with pytest.warns(UserWarning, match=r"limit of 112 \(the checkpoint.*subset of 60 rows"):
        assert make(causal_checkpoint).fit(X, t, y).context_.n_context_rows == 60
    # asking for more than the cap (up to the network's limit) is honoured
    with pytest.warns(UserWarning, match=r"limit of 100 \(max_context\)"):
        assert make(causal_checkpoint, max_context=100).fit(X, t, y).context_.n_context_rows == 100


def test_poor_overlap_warns_with_the_share_and_widens_intervals(causal_checkpoint):
    X, t, y = study(n=110, confounding=4.0, seed=3)
    with pytest.warns(UserWarning, match=r"Little overlap.*\d+% of rows \(\d+ of 110\)"):
        est = make(causal_checkpoint, ate_from="network").fit(X, t, y)
    e = est.propensity_
    assert est.overlap_share_ == pytest.approx(np.mean((e < 0.05) | (e > 0.95)))
    assert est.overlap_share_ >= 0.1
    # the same fit without the diagnostics' widening (no row is below a tiny threshold)
    plain = make(causal_checkpoint, overlap_threshold=1e-9, ate_from="network").fit(X, t, y)
    np.testing.assert_array_equal(plain.effect(X), est.effect(X))
    lo, hi = est.effect_interval(X)
    lo0, hi0 = plain.effect_interval(X)
    width, width0 = hi - lo, hi0 - lo0
    poor = est.propensity_model_.predict(est.encoder_.transform(X))
    poor = (poor < 0.05) | (poor > 0.95)
    assert poor.any() and (~poor).any()
    assert np.all(width[poor] > 1.05 * width0[poor])
    np.testing.assert_allclose(width[~poor], width0[~poor], rtol=1e-6)
    a_lo, a_hi = est.ate_interval()
    p_lo, p_hi = plain.ate_interval()
    assert a_hi - a_lo > p_hi - p_lo


def test_a_randomised_trial_does_not_warn(causal_checkpoint):
    X, t, y = study(confounding=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = make(causal_checkpoint).fit(X, t, y)
    assert est.overlap_share_ == 0.0


def test_no_overlap_at_all_is_a_one_line_error(causal_checkpoint):
    rng = np.random.default_rng(0)
    t = np.r_[np.zeros(50), np.ones(50)].astype(np.int64)
    X = rng.standard_normal((100, 2)) + 6.0 * (2 * t[:, None] - 1)
    y = rng.standard_normal(100) + t
    with pytest.raises(ValueError, match="'t' has no overlap with X") as err:
        make(causal_checkpoint).fit(X, t, y)
    assert "\n" not in str(err.value)


BAD_FIT = [
    ("t", lambda X, t, y: (X, np.where(t == 1, 2, t), y), r"'t' .* binary.*0/1"),
    ("t", lambda X, t, y: (X, np.where(t == 1, "b", "a"), y), r"'t' .* numeric"),
    ("t", lambda X, t, y: (X, np.ones_like(t), y), r"'t' .* only treated .*both arms"),
    ("t", lambda X, t, y: (X, np.zeros_like(t), y), r"'t' .* only control .*both arms"),
    ("t", lambda X, t, y: (X, np.where(np.arange(len(t)) == 3, np.nan, t), y), r"'t' .* NaN"),
    ("y", lambda X, t, y: (X, t, np.where(np.arange(len(y)) == 3, np.nan, y)), r"'y' .* NaN"),
    ("y", lambda X, t, y: (X, t, np.where(np.arange(len(y)) == 3, np.inf, y)), r"'y' .* inf"),
    ("len", lambda X, t, y: (X, t[:-1], y), r"Got 100 rows of X, 99 of t and 100 of y"),
    ("len", lambda X, t, y: (X[:-2], t, y), r"Got 98 rows of X, 100 of t"),
    ("t", lambda X, t, y: (X, np.c_[t, t], y), r"'t' .* one column"),
]


@pytest.mark.parametrize("case,bad,match", BAD_FIT, ids=[m for _, _, m in BAD_FIT])
def test_bad_input_is_a_one_line_error_naming_the_parameter(causal_checkpoint, case, bad, match):
    X, t, y = study()
    with pytest.raises(ValueError, match=match) as err:
        make(causal_checkpoint).fit(*bad(X, t, y))
    assert "\n" not in str(err.value)


def test_bad_input_after_fit(causal_checkpoint):
    X, t, y = study()
    est = make(causal_checkpoint).fit(X, t, y)
    with pytest.raises(ValueError, match="X has 3 features, but PFNTreatmentEffect is expecting 4"):
        est.effect(X[:, :3])
    with pytest.raises(ValueError, match="'alpha' parameter .* in \\(0, 1\\)"):
        est.effect_interval(X, alpha=1.5)
    with pytest.raises(ValueError, match="'alpha'"):
        est.ate_interval(alpha=0.0)


@pytest.mark.parametrize(
    "params,name",
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"overlap_threshold": 0.5}, "overlap_threshold"),
        ({"context": "prompt"}, "context"),
        ({"preprocessing": "log"}, "preprocessing"),
        ({"fine_tune": "yes"}, "fine_tune"),
    ],
)
def test_bad_parameters_name_themselves(causal_checkpoint, params, name):
    X, t, y = study()
    with pytest.raises(ValueError, match=f"'{name}' parameter of PFNTreatmentEffect"):
        make(causal_checkpoint, **params).fit(X, t, y)


def test_not_fitted_and_wrong_checkpoint(causal_checkpoint):
    from sklearn.exceptions import NotFittedError

    X, t, y = study()
    with pytest.raises(NotFittedError):
        make(causal_checkpoint).effect(X)
    with pytest.raises(NotFittedError):
        make(causal_checkpoint).ate()
    # a PFN without the treatment's per-row inputs cannot answer effect queries
    plain = PFN(PFNConfig(n_features=4, d_model=32, n_layers=1, n_heads=2, n_bars=20))
    with pytest.raises(CheckpointError, match="n_row_inputs=3"):
        make(plain).fit(X, t, y)
    # a loaded model is not changed by fit (a frozen copy when it is trainable)
    loaded = PFN(PFNConfig(n_features=4, d_model=32, n_layers=1, n_heads=2, n_row_inputs=3))
    make(loaded).fit(X, t, y)
    assert all(p.requires_grad for p in loaded.parameters())


# ---------------------------------------------------------------- the bundled checkpoint


@pytest.mark.parametrize("seed", [0, 1])
def test_bundled_checkpoint_corrects_confounding_and_finds_heterogeneity(seed):
    """The bundled network on a confounded study (treated rows have higher x0, which raises
    y) with tau(x) = 1 + x1: the ATE is near the truth where the naive difference is not,
    the effect follows x1, and the ATE interval covers the truth."""
    rng = np.random.default_rng(seed)
    n = 400
    X = rng.normal(size=(n, 5))
    t = (rng.random(n) < 1 / (1 + np.exp(-0.8 * X[:, 0]))).astype(int)
    tau = 1 + X[:, 1]
    y = X[:, 0] + t * tau + 0.5 * rng.normal(size=n)
    model = PFNTreatmentEffect().fit(X, t, y)
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert abs(model.ate() - tau.mean()) < 0.35 < abs(naive - tau.mean())
    lo, hi = model.ate_interval()
    assert lo <= tau.mean() <= hi
    assert np.corrcoef(model.effect(X), tau)[0, 1] > 0.8


def test_bundled_checkpoint_carries_its_interval_calibration():
    """The shipped card says how its intervals were calibrated: on at least 300 held-out
    prior studies, to 95 % coverage of both the CATE and the network's ATE intervals."""
    from pfnkit.estimators.causal import DEFAULT_CHECKPOINT
    from pfnkit.train.checkpoint import bundled_checkpoint_path, load_pfn

    path = bundled_checkpoint_path(DEFAULT_CHECKPOINT, "treatment-effect")
    _, card = load_pfn(path, expect="treatment-effect", what="test")
    cal = card.calibration
    assert cal["draws"] >= 300 and cal["alpha"] == 0.05
    for key in ("cate", "ate"):
        assert 0.5 < cal[f"{key}_interval_scale"] < 2.0
        assert 0.94 <= cal[f"{key}_coverage_after"] <= 0.97


# ---------------------------------------------------------------- interval calibration


def exported(causal_checkpoint, tmp_path, calibration=None):
    """The tiny run exported to safetensors, with an optional calibration on its card."""
    from pfnkit.train.checkpoint import read_checkpoint, write_safetensors

    data = read_checkpoint(causal_checkpoint)
    if calibration is not None:
        data["calibration"] = calibration
    return write_safetensors(data, tmp_path / "te.safetensors")


def test_card_calibration_scales_both_intervals_about_their_median(causal_checkpoint, tmp_path):
    X, t, y = study(seed=3)
    plain = make(exported(causal_checkpoint, tmp_path), ate_from="network").fit(X, t, y)
    assert plain.interval_scale_ == {"cate": 1.0, "ate": 1.0}
    cal = {"cate_interval_scale": 1.5, "ate_interval_scale": 0.5}
    scaled = make(exported(causal_checkpoint, tmp_path, cal), ate_from="network").fit(X, t, y)
    assert scaled.interval_scale_ == {"cate": 1.5, "ate": 0.5}
    np.testing.assert_allclose(scaled.effect(X), plain.effect(X), rtol=1e-5, atol=1e-6)
    (lo0, hi0), (lo1, hi1) = plain.effect_interval(X), scaled.effect_interval(X)
    mid = lo0 + (hi0 - lo0) * 0  # the median lies inside; scaling about it keeps the ratio
    np.testing.assert_allclose(hi1 - lo1, 1.5 * (hi0 - lo0), rtol=1e-4, atol=1e-6)
    assert np.all(lo1 <= lo0 + 1e-6) and np.all(hi1 >= hi0 - 1e-6) and mid.shape == lo0.shape
    (a0, b0), (a1, b1) = plain.ate_interval(), scaled.ate_interval()
    assert b1 - a1 == pytest.approx(0.5 * (b0 - a0), rel=1e-4)
    assert a0 <= a1 <= b1 <= b0


@pytest.mark.parametrize("bad", [0.0, -1.0, "wide", True, 1e9])
def test_a_bad_calibration_on_the_card_is_a_checkpoint_error(causal_checkpoint, tmp_path, bad):
    path = exported(causal_checkpoint, tmp_path, {"ate_interval_scale": bad})
    X, t, y = study()
    with pytest.raises(CheckpointError, match="calibration.ate_interval_scale .*pfnkit calibrate"):
        make(path).fit(X, t, y)


def test_calibrate_intervals_reaches_the_target_coverage_on_its_prior(causal_checkpoint):
    from pfnkit.estimators.causal import calibrate_intervals

    done = []
    res = calibrate_intervals(
        causal_checkpoint,
        draws=24,
        max_rows=100,
        n_estimators=2,
        progress=lambda i, n: done.append(i),
    )
    assert done[-1] == 24 and res["draws"] == 24 and res["rows"] == [50, 100]
    for key in ("cate", "ate"):
        assert 0 < res[f"{key}_interval_scale"] < 100
        # the chosen scale is the 95th percentile: at least 95 % covered after it
        assert res[f"{key}_coverage_after"] >= 0.95
        # scaling up cannot lower coverage, scaling down cannot raise it
        if res[f"{key}_interval_scale"] >= 1:
            assert res[f"{key}_coverage_after"] >= res[f"{key}_coverage_before"]
        else:
            assert res[f"{key}_coverage_after"] <= res[f"{key}_coverage_before"]
    # the same seed gives the same draws and scales
    again = calibrate_intervals(causal_checkpoint, draws=24, max_rows=100, n_estimators=2)
    assert again["ate_interval_scale"] == res["ate_interval_scale"]


def test_calibrate_command_writes_the_card_and_refuses_other_kinds(causal_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from pfnkit.cli.app import app
    from pfnkit.train.checkpoint import read_checkpoint

    path = exported(causal_checkpoint, tmp_path)
    target = tmp_path / "calibrated.safetensors"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", str(path), "--out", str(target), "--draws", "20"])
    assert res.exit_code == 0, res.output
    cal = read_checkpoint(target)["calibration"]
    assert cal["draws"] == 20 and cal["ate_coverage_after"] >= 0.95
    assert "calibration" not in read_checkpoint(path)  # --out leaves the source alone
    X, t, y = study()
    est = make(target).fit(X, t, y)
    assert est.interval_scale_["ate"] == cal["ate_interval_scale"]
    # bad input: one line naming what is allowed
    res = runner.invoke(app, ["calibrate", str(path), "--draws", "5"])
    assert res.exit_code != 0 and "--draws must be >= 20" in res.output
    res = runner.invoke(app, ["calibrate", str(causal_checkpoint)])
    assert res.exit_code != 0 and "must be a .safetensors checkpoint" in res.output
    res = runner.invoke(
        app,
        [
            "calibrate",
            "pfnkit/checkpoints/tabular-reg.safetensors",
            "--out",
            str(tmp_path / "x.safetensors"),
        ],
    )
    assert res.exit_code != 0 and "supports treatment-effect checkpoints" in res.output


# ---------------------------------------------------------------- kNN contexts


def test_knn_context_with_every_row_equals_the_full_context(causal_checkpoint):
    from pfnkit.tuning import KNNContext

    X, t, y = study(n=90, seed=4)
    shared = make(causal_checkpoint).fit(X, t, y)
    local = make(causal_checkpoint, context=KNNContext(k=500)).fit(X, t, y)
    assert local.local_context_ is not None and local.local_context_.n_context_rows == 90
    # a row's context is then every row (in another order): attention is order-free
    np.testing.assert_allclose(local.effect(X[:20]), shared.effect(X[:20]), rtol=1e-3, atol=1e-3)
    for a, b in zip(local.predict_outcomes(X[:5]), shared.predict_outcomes(X[:5])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    assert local.ate() == pytest.approx(shared.ate(), rel=1e-6)  # the ATE: shared contexts


def test_knn_context_takes_the_nearest_rows_of_each_arm(causal_checkpoint):
    X, t, y = study(n=300, seed=5)
    est = make(causal_checkpoint, context="knn").fit(X, t, y)
    local = est.local_context_
    assert local is not None and local.n_context_rows == 100  # min(k = 100, the limit 112)
    (treated, _, k_t), (control, _, k_c) = local.arms
    assert (k_t, k_c) == (50, 50) and np.all(t[treated] == 1) and np.all(t[control] == 0)
    lo, hi = est.effect_interval(X[:7])
    e = est.effect(X[:7])
    assert e.shape == lo.shape == (7,) and np.all(lo <= e + 1e-6) and np.all(e <= hi + 1e-6)
    # a rare arm: all its rows, the rest from the other
    t_rare = np.zeros(300, dtype=np.int64)
    t_rare[:4] = 1
    rare = make(causal_checkpoint, context="knn", overlap_threshold=1e-9).fit(X, t_rare, y)
    (_, _, k_t), (_, _, k_c) = rare.local_context_.arms
    assert (k_t, k_c) == (4, 96) and np.all(np.isfinite(rare.effect(X[:3])))


def test_knn_context_needs_exact_mode(causal_checkpoint):
    from pfnkit.tuning import KNNContext

    X, t, y = study()
    with pytest.raises(ValueError, match=r"'context' parameter .* KNNContext\(mode='exact'\)"):
        make(causal_checkpoint, context=KNNContext(mode="graph")).fit(X, t, y)


def test_effect_from_tau_outcomes_or_both(causal_checkpoint):
    X, t, y = study(seed=6)
    ests = {
        k: make(causal_checkpoint, effect_from=k).fit(X, t, y) for k in ("tau", "outcomes", "both")
    }
    e = {k: m.effect(X) for k, m in ests.items()}
    mu0, mu1 = ests["outcomes"].predict_outcomes(X)
    np.testing.assert_allclose(e["outcomes"], mu1 - mu0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e["both"], 0.5 * (e["tau"] + e["outcomes"]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(e["tau"], e["outcomes"])  # two answers of one network differ
    # the interval is tau's posterior moved to the estimate, narrowed by
    # interval_narrowing_ about its median (1 for tau itself: nothing else to weigh)
    assert ests["tau"].interval_narrowing_ == 1.0
    nar = ests["both"].interval_narrowing_
    assert 0.1**0.5 <= nar <= 1.0
    lo, hi = ests["both"].effect_interval(X)
    lo_t, hi_t = ests["tau"].effect_interval(X)
    np.testing.assert_allclose(hi - lo, nar * (hi_t - lo_t), rtol=1e-4, atol=1e-5)
    # the median (the interval's centre before calibration) moves with the estimate
    mid, mid_t = (
        ests["both"]._effect_posterior(X, 0.05)[1][1],
        ests["tau"]._effect_posterior(X, 0.05)[1][1],
    )
    np.testing.assert_allclose(
        mid - mid_t, (e["both"] - e["tau"]) / ests["tau"].y_std_, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="effect_from"):
        make(causal_checkpoint, effect_from="mean").fit(X, t, y)
    fixed = {"tau": (0, 1, 0, 0), "outcomes": (0, 0, 1, 1), "both": (0, 0.5, 0.5, 0.5)}
    for k, w in fixed.items():
        got = ests[k].effect_weights_
        assert tuple(got[c] for c in ("intercept", "tau", "mu1", "mu0", "stacked")) == (*w, False)


def test_stacked_effect_is_its_weighted_combination_of_the_two_answers(causal_checkpoint):
    """effect_from="stacked" (the default): effect = c + a tau + b1 (mu1 - y_mean_) - b0
    (mu0 - y_mean_), with the weights on effect_weights_ (c in y's units); the same members
    and contexts as the other modes (a fixed random_state), and the interval is tau's
    posterior moved to it."""
    X, t, y = study(n=400, seed=7, effect=2.0)
    y = y + 6.0 * X[:, 2] * t  # a strongly heterogeneous effect: 2 + 6 x2
    est = make(causal_checkpoint).fit(X, t, y)
    assert est.effect_from == "stacked"
    ref = make(causal_checkpoint, effect_from="tau").fit(X, t, y)
    w = est.effect_weights_
    assert w["stacked"] in ("pooled", "arms") and min(w["tau"], w["mu1"], w["mu0"]) >= 0
    assert w["stacked"] == "arms" or w["mu1"] == w["mu0"]
    mu0, mu1 = est.predict_outcomes(X)
    want = (
        w["intercept"]
        + w["tau"] * ref.effect(X)
        + w["mu1"] * (mu1 - est.y_mean_)
        - w["mu0"] * (mu0 - est.y_mean_)
    )
    np.testing.assert_allclose(est.effect(X), want, rtol=1e-4, atol=1e-4)
    lo, hi = est.effect_interval(X)
    lo_t, hi_t = ref.effect_interval(X)
    np.testing.assert_allclose(
        hi - lo, est.interval_narrowing_ * (hi_t - lo_t), rtol=1e-4, atol=1e-4
    )
    # the cross-fitted answers behind the weights are computed once, shared with the DR ATE
    assert est._cross_fit() is est._cross_fit()


def test_interval_narrowing_is_the_estimates_cross_fitted_error_against_the_posteriors(
    causal_checkpoint,
):
    """interval_narrowing_ = sqrt(clip((P - gain) / P, 0.1, 1)): P the mean of (t - e)^2
    times tau(x)'s cross-fitted posterior variance, gain the drop in R-loss from tau's
    posterior mean to the estimate, both out of fold. By hand for the fixed blend; below
    1 where the stacked estimate beats tau's answer; the interval scales with it."""
    from pfnkit.estimators.causal import WIDTH_RATIO_MIN

    X, t, y = study(n=150, seed=4)
    y = y + 6.0 * X[:, 2] * t
    est = make(causal_checkpoint, effect_from="both").fit(X, t, y)
    assert est._cross_fit_cache is None  # under 400 rows: computed at the first interval
    nar = est.interval_narrowing_
    mu0, mu1, tau = est._cross_fit()
    z = (y - est.y_mean_) / est.y_std_
    e = np.clip(est._dr_e(), 0.01, 0.99)
    r_y, r_t = z - (e * mu1 + (1 - e) * mu0), t - e
    f = (tau + mu1 - mu0) / 2
    gain = np.mean((r_y - r_t * tau) ** 2) - np.mean((r_y - r_t * f) ** 2)
    p = np.mean(r_t**2 * est._cross_fit_tau_var)
    assert p > 0 and np.all(est._cross_fit_tau_var > 0)  # (95 % half-width / 1.96)^2
    want = np.sqrt(np.clip((p - max(gain, 0)) / p, WIDTH_RATIO_MIN, 1))
    assert nar == pytest.approx(want, rel=1e-9)
    # a strongly heterogeneous effect that the tiny network's tau answer shrinks: the
    # stacked estimate beats it out of fold, and its interval is narrower
    X, t, y = study(n=400, seed=7, effect=2.0)
    y = y + 6.0 * X[:, 2] * t
    est = make(causal_checkpoint).fit(X, t, y)
    assert est.effect_weights_["stacked"]
    r_y, loss = est._effect_loss
    _, _, tau = est._cross_fit()
    e = np.clip(est._dr_e(), 0.01, 0.99)
    assert np.mean(loss) < np.mean((r_y - (t - e) * tau) ** 2)
    assert est.interval_narrowing_ < 1.0
    ref = make(causal_checkpoint, effect_from="tau").fit(X, t, y)
    lo, hi = est.effect_interval(X)
    lo_t, hi_t = ref.effect_interval(X)
    assert np.all(hi - lo < hi_t - lo_t)


@pytest.mark.parametrize("seed", [0, 1])
def test_stacking_lowers_the_pehe_of_a_shrunk_network(causal_checkpoint, seed):
    """The tiny network shrinks a strong heterogeneous effect towards its prior's typical
    size; the R-loss stacking, fitted on the study, undoes much of that."""
    X, t, y = study(n=400, seed=30 + seed, effect=1.0)
    tau = 1.0 + 6.0 * X[:, 1]
    y = y + (tau - 1.0) * t
    pehe = {}
    for k in ("stacked", "both"):
        est = make(causal_checkpoint, effect_from=k).fit(X, t, y)
        pehe[k] = np.sqrt(np.mean((est.effect(X) - tau) ** 2))
    assert pehe["stacked"] < 0.8 * pehe["both"], pehe


def test_stacking_needs_enough_rows_and_keeps_the_blend_otherwise(causal_checkpoint):
    X, t, y = study(n=399, seed=8)
    y = y + 6.0 * X[:, 2] * t
    w = make(causal_checkpoint).fit(X, t, y).effect_weights_
    got = tuple(w[c] for c in ("intercept", "tau", "mu1", "mu0", "stacked"))
    assert got == (0.0, 0.5, 0.5, 0.5, False)


def test_stack_effect_weights_recovers_a_shrunk_effect_and_keeps_an_exact_blend():
    from pfnkit.estimators.causal import stack_effect_weights

    rng = np.random.default_rng(0)
    n = 2000
    e = rng.uniform(0.2, 0.8, n)
    t = (rng.random(n) < e).astype(float)
    tau = rng.standard_normal(n)
    mu0 = rng.standard_normal(n)
    z = mu0 + t * (0.5 + tau) + 0.3 * rng.standard_normal(n)
    # both answers shrunk to a third (the tau answer also noisy): the stack scales the
    # cleaner one back up, with no intercept
    shrunk = (0.5 + tau) / 3
    noisy = shrunk + 0.3 * rng.standard_normal(n)
    c, a, b1, b0, form, loss = stack_effect_weights(z, t, e, mu0, mu0 + shrunk, noisy, 0) or (
        (1,) * 6
    )
    # the per-row cross-validated loss of the chosen form: below the unstacked blend's
    blend = (noisy + shrunk) / 2
    assert np.shape(loss) == (n,)
    assert np.mean(loss) < np.mean(
        (z - (e * (mu0 + shrunk) + (1 - e) * mu0) - (t - e) * blend) ** 2
    )
    assert abs(c) < 0.1 and a < 0.1 and b1 == pytest.approx(3.0, abs=0.15)
    assert form == "pooled" or b0 == pytest.approx(3.0, abs=0.15)
    # the arms shrunk differently (treated to a half, control to a fifth): only the
    # "arms" form, which scales each arm's answer on its own, undoes both
    m0, m1 = mu0 / 5, (mu0 + 0.5 + tau) / 2
    c, a, b1, b0, form, _ = stack_effect_weights(z, t, e, m0, m1, noisy, 0) or (1,) * 6
    assert form == "arms"
    assert b1 == pytest.approx(2.0, abs=0.2) and b0 == pytest.approx(5.0, abs=0.5)
    # both answers exact: the fixed blend is already right and is kept
    assert stack_effect_weights(z, t, e, mu0, mu0 + 0.5 + tau, 0.5 + tau, 0) is None


# ---------------------------------------------------------------- the doubly robust ATE


def test_dr_ate_is_the_mean_of_cross_fitted_aipw_scores(causal_checkpoint):
    """ate_from="dr": the ATE is the mean of mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0)
    / (1 - e) with out-of-fold outcomes (each fold's rows never in its own contexts), and
    the interval is mean +- z * sd / sqrt(n)."""
    from scipy.stats import norm

    X, t, y = study(n=150, seed=11)
    est = make(causal_checkpoint, ate_from="dr", effect_from="both").fit(X, t, y)
    mu0, mu1, _ = est._cross_fit()
    z = (y - est.y_mean_) / est.y_std_
    x, _, _ = est._fit_data
    e = np.clip(est._dr_propensity(x, t), 0.01, 0.99)
    np.testing.assert_array_equal(e, np.clip(est._dr_e(), 0.01, 0.99))
    assert not np.allclose(e, est.propensity_)  # trees (both arms have 50+ rows)
    psi = mu1 - mu0 + t * (z - mu1) / e - (1 - t) * (z - mu0) / (1 - e)
    assert est.ate() == pytest.approx(psi.mean() * est.y_std_, rel=1e-6)
    lo, hi = est.ate_interval(alpha=0.1)
    half = norm.ppf(0.95) * psi.std(ddof=1) / np.sqrt(psi.size) * est.y_std_
    assert (lo, hi) == pytest.approx((est.ate() - half, est.ate() + half), rel=1e-6)
    # out of fold: the in-context outcomes of the fitted rows differ from these
    in_mu0, _ = est.predict_outcomes(X)
    assert not np.allclose((in_mu0 - est.y_mean_) / est.y_std_, mu0, atol=1e-3)
    # computed once; a refit on other data starts over
    assert est._dr_scores() is est._dr_scores()
    X2, t2, y2 = study(n=150, seed=12, effect=-5.0)
    assert est.fit(X2, t2, y2).ate() < 0 < make(causal_checkpoint).fit(X, t, y).ate()


def test_stacked_dr_ate_takes_the_more_efficient_of_two_outcome_models(causal_checkpoint):
    """With a stacked effect f, the DR scores of the network's outcomes and of the outcome
    model m -+ e f are both formed; the ATE is the mean of the set with less variance."""
    X, t, y = study(n=400, seed=7, effect=2.0)
    y = y + 6.0 * X[:, 2] * t
    est = make(causal_checkpoint).fit(X, t, y)
    w = est.effect_weights_
    assert w["stacked"]
    mu0, mu1, tau = est._cross_fit()
    z = (y - est.y_mean_) / est.y_std_
    e = np.clip(est._dr_e(), 0.01, 0.99)
    f = w["intercept"] / est.y_std_ + w["tau"] * tau + w["mu1"] * mu1 - w["mu0"] * mu0
    m = e * mu1 + (1 - e) * mu0

    def scores(m0, m1):
        return m1 - m0 + t * (z - m1) / e - (1 - t) * (z - m0) / (1 - e)

    a, b = scores(mu0, mu1), scores(m - e * f, m + (1 - e) * f)
    assert not np.isclose(a.mean(), b.mean())
    want = (a if a.var() <= b.var() else b).mean() * est.y_std_
    assert est.ate() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dr_ate_corrects_a_weak_outcome_model(causal_checkpoint, seed):
    """The tiny network's outcome surfaces are poor, but its residuals, weighted by the
    (well specified, logistic) propensities, correct them: on a confounded study the
    doubly robust ATE is near the truth and its interval covers it, where the network's own
    ATE query and the naive difference in means are far off."""
    X, t, y = study(n=400, seed=20 + seed, confounding=1.0)
    dr = make(causal_checkpoint, ate_from="dr").fit(X, t, y).ate()
    est = make(causal_checkpoint, ate_from="dr").fit(X, t, y)
    net = make(causal_checkpoint, ate_from="network").fit(X, t, y).ate()
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert abs(est.ate() - 5.0) < 0.7 < 1.0 < min(abs(net - 5.0), abs(naive - 5.0))
    assert dr == est.ate()  # seeded: the same folds and contexts
    lo, hi = est.ate_interval()
    assert lo < 5.0 < hi and hi - lo < 2.0


def test_ate_from_network_is_the_ate_query(causal_checkpoint):
    X, t, y = study(seed=13)
    net = make(causal_checkpoint, ate_from="network").fit(X, t, y)
    logp = net._ate_logp()
    assert net.ate() == pytest.approx(float(net._bars().mean(logp)[0]) * net.y_std_)
    assert getattr(net, "_dr_cache", None) is None  # never computed
    with pytest.raises(ValueError, match="ate_from"):
        make(causal_checkpoint, ate_from="aipw").fit(X, t, y)


# ---------------------------------------------------------------- fine-tuning


def tune(**kwargs):
    from pfnkit.tuning import FineTune

    kwargs.setdefault("time_budget", 600.0)  # the step cap ends it, not a loaded clock
    return FineTune(**{"lr": 1e-3, "max_steps": 60, "batch_size": 4, "eval_every": 5, **kwargs})


def heterogeneous_study(n=400, seed=40):
    """A study whose effect the tiny network cannot read zero-shot: tau = 1 + 6 x1."""
    X, t, y = study(n=n, seed=seed, effect=1.0)
    tau = 1.0 + 6.0 * X[:, 1]
    return X, t, y + (tau - 1.0) * t, tau


@pytest.mark.parametrize("seed", [0, 1])
def test_fine_tune_lowers_the_pehe_and_keeps_the_honest_ate(causal_checkpoint, seed):
    """Fine-tuning the outcome surfaces on the factual outcomes lowers the CATE error of the
    network's outcome difference; the ATE and its interval stay the zero-shot network's
    cross-fitted doubly robust ones (the tuned network has seen the rows' outcomes)."""
    X, t, y, tau = heterogeneous_study(seed=40 + seed)
    zero = make(causal_checkpoint, effect_from="outcomes").fit(X, t, y)
    tuned = make(causal_checkpoint, effect_from="outcomes", fine_tune=tune()).fit(X, t, y)
    report = tuned.fine_tune_report_
    assert report["kept"] == "fine-tuned" and report["best_error"] < report["start_error"]
    assert 0 < report["best_step"] <= report["steps"] <= 60
    pehe = {
        name: np.sqrt(np.mean((est.effect(X) - tau) ** 2))
        for name, est in (("zero", zero), ("tuned", tuned))
    }
    assert pehe["tuned"] < 0.8 * pehe["zero"], pehe
    mu0, mu1 = tuned.predict_outcomes(X)
    np.testing.assert_allclose(tuned.effect(X), mu1 - mu0, rtol=1e-5, atol=1e-4)
    assert tuned.ate() == zero.ate() and tuned.ate_interval() == zero.ate_interval()
    lo, hi = tuned.effect_interval(X)
    assert np.all(lo <= tuned.effect(X) + 1e-9) and np.all(tuned.effect(X) <= hi + 1e-9)


def test_stacked_fine_tune_is_its_weighted_combination_with_the_tuned_difference(
    causal_checkpoint,
):
    """fine_tune with effect_from="stacked" (the default): three more copies, each tuned on
    two thirds of the rows, answer the third they never saw; the R-loss on those answers
    weighs the full tune's mu1 - mu0 next to the zero-shot answers: effect = c + a tau +
    b1 mu1 - b0 mu0 (zero-shot) + g (mu1 - mu0) (tuned); the ATE stays the zero-shot one."""
    from pfnkit.estimators.causal import TUNED_STACK_FORMS

    X, t, y, _ = heterogeneous_study(n=420, seed=43)
    est = make(causal_checkpoint, fine_tune=tune()).fit(X, t, y)
    report, w = est.fine_tune_report_, est.effect_weights_
    assert report["kept"] == "fine-tuned" and len(report["folds"]) == 3
    assert report["stacked"] is False or report["stacked"] in TUNED_STACK_FORMS
    assert report["stacked"] == w["stacked"]
    zero = make(causal_checkpoint).fit(X, t, y)  # the same members and contexts
    tau = make(causal_checkpoint, effect_from="tau").fit(X, t, y).effect(X)
    z_mu0, z_mu1 = zero.predict_outcomes(X)
    mu0, mu1 = est.predict_outcomes(X)  # the full tune's surfaces
    # (no form beat the plain tuned difference: c = a = b1 = b0 = 0 and g = 1)
    want = (
        w["intercept"]
        + w["tau"] * tau
        + w["mu1"] * (z_mu1 - est.y_mean_)
        - w["mu0"] * (z_mu0 - est.y_mean_)
        + w["tuned"] * (mu1 - mu0)
    )
    np.testing.assert_allclose(est.effect(X), want, rtol=1e-4, atol=1e-4)
    assert est.ate() == zero.ate() and est.ate_interval() == zero.ate_interval()
    assert not np.allclose(est._tuned_oof, zero._cross_fit()[:2])  # tuned, out of fold


@pytest.mark.parametrize("seed", [0, 1])
def test_stacked_fine_tune_keeps_a_constant_effect_constant(causal_checkpoint, seed):
    """On a constant effect the tuned difference is the two arms' fitted noise: the
    cross-fitted stacking lowers its CATE error (the plain tuned difference is what
    effect_from="outcomes" gives)."""
    X, t, y = study(n=600, seed=50 + seed, effect=2.0)
    plain = make(causal_checkpoint, effect_from="outcomes", fine_tune=tune()).fit(X, t, y)
    est = make(causal_checkpoint, fine_tune=tune()).fit(X, t, y)
    pehe = {
        name: float(np.sqrt(np.mean((e.effect(X) - 2.0) ** 2)))
        for name, e in (("plain", plain), ("stacked", est))
    }
    assert est.fine_tune_report_["stacked"], est.fine_tune_report_
    assert pehe["stacked"] < 0.8 * pehe["plain"], pehe


def test_fine_tune_never_changes_the_given_network_and_is_reproducible(causal_checkpoint):
    from pfnkit.train.checkpoint import load_pfn

    X, t, y, _ = heterogeneous_study(n=200)
    net, _ = load_pfn(causal_checkpoint, expect="treatment-effect")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = make(net, fine_tune=tune(max_steps=10)).fit(X, t, y)
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())
    b = make(net, fine_tune=tune(max_steps=10)).fit(X, t, y)
    np.testing.assert_array_equal(a.effect(X), b.effect(X))
    assert clone(a).get_params()["fine_tune"] == tune(max_steps=10)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)).effect(X), a.effect(X))


def test_fine_tune_that_cannot_help_keeps_the_zero_shot_network(causal_checkpoint):
    """Too few rows, or a learning rate that only makes things worse: a warning, and
    every answer is fine_tune=False's."""
    for n, options in ((60, tune()), (300, tune(lr=50.0, max_steps=10))):
        X, t, y, _ = heterogeneous_study(n=n)
        zero = make(causal_checkpoint).fit(X, t, y)
        with pytest.warns(UserWarning, match="fine_tune kept the zero-shot network"):
            est = make(causal_checkpoint, fine_tune=options).fit(X, t, y)
        assert est.fine_tune_report_["kept"] == "zero-shot"
        np.testing.assert_array_equal(est.effect(X), zero.effect(X))
        np.testing.assert_array_equal(est.predict_outcomes(X)[1], zero.predict_outcomes(X)[1])


def test_fine_tune_with_knn_contexts_is_a_one_line_error(causal_checkpoint):
    X, t, y = study()
    with pytest.raises(ValueError, match="'fine_tune' parameter .* not context='knn'"):
        make(causal_checkpoint, context="knn", fine_tune=True).fit(X, t, y)
