"""Softmax temperature of classifier checkpoints: chosen on held-out draws of the prior,
stored on the card, used by PFNClassifier by default, or tuned on the user's table by CV."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.metrics import log_loss

from pfnkit import PFNClassifier
from pfnkit.estimators.calibration import (
    DEFAULT_TEMPERATURE,
    TEMPERATURE_GRID,
    TemperatureCV,
    calibrate_temperature,
    expected_calibration_error,
)
from pfnkit.exceptions import CheckpointError, InvalidConfigError
from pfnkit.model import PFNConfig

N_FEATURES = 8
SMALL = dict(draws=24, max_rows=48, test_rows=32, n_estimators=2)  # a few seconds


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    """A tiny classifier trained for a few hundred steps on a small SCM prior."""
    from pfnkit.priors import SCMPrior
    from pfnkit.train import TrainConfig, Trainer

    path = tmp_path_factory.mktemp("clf")
    model = PFNConfig(
        task="classification",
        n_features=N_FEATURES,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_classes=4,
        normalize_x=True,
    )
    train = TrainConfig(
        steps=300, batch_size=8, rows=64, lr=3e-3, log_every=10**9, checkpoint_every=10**9
    )
    Trainer(SCMPrior(max_classes=4), model, train, path).run()
    return path


def exported(run, path, *, calibration=None, logit_scale=1.0):
    """The run as a .safetensors file, optionally with a calibration on its card and its
    output layer scaled (logit_scale > 1: the same network, made overconfident)."""
    from pfnkit.train.checkpoint import read_checkpoint, write_safetensors

    data = read_checkpoint(run)
    if calibration is not None:
        data["calibration"] = calibration
    if logit_scale != 1.0:
        state = dict(data["state_dict"])
        for name in ("decoder.2.weight", "decoder.2.bias"):
            state[name] = state[name] * logit_scale
        data["state_dict"] = state
    return write_safetensors(data, path)


def table(n=120, seed=0):
    return make_classification(
        n_samples=n, n_features=5, n_informative=3, n_redundant=0, n_classes=3, random_state=seed
    )


# ---------------------------------------------------------------- ECE


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1])
    sure = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(y, sure) == 0.0
    # every row 0.8 sure and all right: 0.2 too little confidence
    p = np.array([[0.8, 0.2], [0.8, 0.2], [0.2, 0.8], [0.2, 0.8]])
    assert expected_calibration_error(y, p) == pytest.approx(0.2)
    # half right at 0.8: accuracy 0.5 in that bin
    assert expected_calibration_error(np.array([0, 1, 1, 0]), p) == pytest.approx(0.3)
    # labels by classes=, weights
    labels = np.array(["a", "b"])
    assert expected_calibration_error(labels[y], p, classes=labels) == pytest.approx(0.2)
    w = np.array([1.0, 1.0, 0.0, 0.0])
    assert expected_calibration_error(np.array([0, 0, 0, 0]), p, sample_weight=w) == (
        pytest.approx(0.2)
    )


# ---------------------------------------------------------------- on the prior


def test_calibration_undoes_an_overconfident_output_layer(clf_run, tmp_path):
    """The same network with its logits tripled is overconfident on its own prior: the
    chosen temperature is high and lowers held-out NLL well below T = 1."""
    hot = exported(clf_run, tmp_path / "hot.safetensors", logit_scale=3.0)
    res = calibrate_temperature(hot, **SMALL)
    assert res["softmax_temperature"] in TEMPERATURE_GRID
    assert res["softmax_temperature"] >= 1.3
    assert res["nll_after"] < res["nll_t1"] - 0.05
    assert res["ece_after"] < res["ece_t1"]
    curve = res["nll_by_temperature"]
    assert res["nll_after"] == min(curve.values())
    assert curve[f"{res['softmax_temperature']:g}"] == res["nll_after"]
    assert res["before_temperature"] == DEFAULT_TEMPERATURE
    assert res["nll_before"] > res["nll_t1"]  # sharper still than the overconfident T = 1


def test_chosen_temperature_lowers_nll_on_fresh_draws(clf_run, tmp_path):
    plain = exported(clf_run, tmp_path / "plain.safetensors")
    done = []
    res = calibrate_temperature(plain, progress=lambda i, n: done.append(i), **SMALL)
    assert done == list(range(1, SMALL["draws"] + 1))
    assert res["softmax_temperature"] in TEMPERATURE_GRID
    assert res["nll_after"] <= res["nll_t1"] and res["nll_after"] <= res["nll_before"]
    assert res["draws"] == SMALL["draws"] and res["rows"] == [32, 48]
    # the same seed gives the same draws and figures; other draws agree on the choice
    again = calibrate_temperature(plain, **SMALL)
    assert again["nll_by_temperature"] == res["nll_by_temperature"]
    t = res["softmax_temperature"]
    fresh = calibrate_temperature(plain, seed=12345, grid=[t, 1.0], **SMALL)
    curve = fresh["nll_by_temperature"]
    assert curve[f"{t:g}"] <= curve["1"] + 0.01


def test_calibration_figures_match_the_classifier_end_to_end(clf_run, tmp_path):
    """One draw by hand: PFNClassifier at the reported temperatures gives the reported NLL."""
    import torch

    from pfnkit.priors import BatchShape, build_prior
    from pfnkit.train.checkpoint import read_checkpoint

    path = exported(clf_run, tmp_path / "plain.safetensors")
    res = calibrate_temperature(path, draws=1, min_rows=40, max_rows=40, test_rows=50)
    prior = build_prior(read_checkpoint(path)["prior"])
    gen = torch.Generator().manual_seed(res["seed"])
    torch.rand((), generator=gen)  # the row count's draw
    while True:
        b = prior.sample(BatchShape(1, 90, N_FEATURES, 40), generator=gen)
        y = b.target_y[0].round().long().numpy()
        if np.unique(y[:40]).size >= 2 and np.isin(y[40:], y[:40]).any():
            break
        torch.rand((), generator=gen)
    d = int(b.n_features[0])
    x = b.x[0, :, :d].double().numpy()
    keep = np.isin(y[40:], y[:40])
    for t, key in ((1.0, "nll_t1"), (DEFAULT_TEMPERATURE, "nll_before")):
        est = PFNClassifier(checkpoint=path, softmax_temperature=t, random_state=0)
        proba = est.fit(x[:40], y[:40]).predict_proba(x[40:][keep])
        assert log_loss(y[40:][keep], proba, labels=est.classes_) == pytest.approx(
            res[key], abs=1e-3
        )


# ---------------------------------------------------------------- the estimator's default


def test_card_temperature_is_the_default_and_an_explicit_value_wins(clf_run, tmp_path):
    X, y = table()
    plain = exported(clf_run, tmp_path / "plain.safetensors")
    cal = exported(clf_run, tmp_path / "cal.safetensors", calibration={"softmax_temperature": 0.5})
    est = PFNClassifier(checkpoint=cal, n_estimators=2)
    assert est.get_params()["softmax_temperature"] == "auto"
    assert clone(est).get_params()["softmax_temperature"] == "auto"
    assert est.fit(X, y).softmax_temperature_ == 0.5 and est.temperature_cv_ is None
    fixed = PFNClassifier(checkpoint=cal, n_estimators=2, softmax_temperature=0.5).fit(X, y)
    np.testing.assert_allclose(est.predict_proba(X), fixed.predict_proba(X))
    # an explicit value wins over the card
    mine = PFNClassifier(checkpoint=cal, n_estimators=2, softmax_temperature=1.3).fit(X, y)
    assert mine.softmax_temperature_ == 1.3
    assert not np.allclose(mine.predict_proba(X), est.predict_proba(X))
    # no calibration on the card: the old default
    old = PFNClassifier(checkpoint=plain, n_estimators=2).fit(X, y)
    assert old.softmax_temperature_ == DEFAULT_TEMPERATURE == 0.9


@pytest.mark.parametrize("bad", [0.0, -1.0, "cold", True, 1e9])
def test_a_bad_temperature_on_the_card_is_a_checkpoint_error(clf_run, tmp_path, bad):
    path = exported(clf_run, tmp_path / "bad.safetensors", calibration={"softmax_temperature": bad})
    X, y = table()
    with pytest.raises(CheckpointError, match="calibration.softmax_temperature .*pfnkit calibrate"):
        PFNClassifier(checkpoint=path, n_estimators=2).fit(X, y)


# ---------------------------------------------------------------- tuning by CV


def test_cv_picks_a_grid_temperature_deterministically(clf_run, tmp_path):
    X, y = table(150)
    path = exported(clf_run, tmp_path / "plain.safetensors")
    est = PFNClassifier(checkpoint=path, n_estimators=2, softmax_temperature="cv", random_state=3)
    est.fit(X, y)
    rep = est.temperature_cv_
    assert rep["folds"] == 5 and rep["temperatures"] == list(TEMPERATURE_GRID)
    assert est.softmax_temperature_ in TEMPERATURE_GRID
    assert rep["log_loss"][TEMPERATURE_GRID.index(est.softmax_temperature_)] == min(rep["log_loss"])
    again = clone(est).fit(X, y)
    assert again.temperature_cv_["log_loss"] == rep["log_loss"]
    np.testing.assert_allclose(again.predict_proba(X), est.predict_proba(X))
    small = clone(est).set_params(softmax_temperature=TemperatureCV(folds=3, grid=(1.0, 0.5)))
    small.fit(X, y)
    assert small.softmax_temperature_ in (0.5, 1.0)
    assert small.temperature_cv_["temperatures"] == [0.5, 1.0]
    # folds with another context strategy: on training folds inside the context limit (56
    # rows) "subsample" and "auto" both take every row, so the figures agree
    own = clone(est).fit(X[:60], y[:60]).temperature_cv_["log_loss"]
    sub = clone(est).set_params(softmax_temperature=TemperatureCV(context="subsample"))
    assert sub.fit(X[:60], y[:60]).temperature_cv_["log_loss"] == pytest.approx(own, abs=1e-4)


def test_cv_flattens_on_noise_and_sharpens_on_an_easy_table(clf_run, tmp_path):
    """Labels independent of X: the best forecast is the class shares, so CV picks the
    flattest temperature; well separated classes: a sharper one than the default."""
    hot = exported(clf_run, tmp_path / "hot.safetensors", logit_scale=3.0)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(150, 5)), rng.integers(0, 3, 150)
    est = PFNClassifier(checkpoint=hot, n_estimators=2, softmax_temperature="cv").fit(X, y)
    losses = est.temperature_cv_["log_loss"]
    assert est.softmax_temperature_ == max(TEMPERATURE_GRID)
    assert min(losses) < losses[TEMPERATURE_GRID.index(1.0)] - 0.03
    X, y = make_classification(
        n_samples=150,
        n_features=5,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        class_sep=3.0,
        random_state=0,
    )
    est = PFNClassifier(checkpoint=clf_run, n_estimators=2, softmax_temperature="cv").fit(X, y)
    assert est.softmax_temperature_ < DEFAULT_TEMPERATURE


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: TemperatureCV(folds=1), "'folds'"),
        (lambda: TemperatureCV(folds=2.5), "'folds'"),
        (lambda: TemperatureCV(grid=()), "'grid'"),
        (lambda: TemperatureCV(grid=(0.0, 1.0)), "'grid'"),
        (lambda: TemperatureCV(grid="0.5"), "'grid'"),
        (lambda: TemperatureCV(grid=(float("nan"),)), "'grid'"),
        (lambda: TemperatureCV(context="nearest"), "'context'"),
        (lambda: calibrate_temperature("default", grid=[-1.0]), "'grid'"),
        (lambda: calibrate_temperature("default", draws=0), "'draws'"),
        (lambda: calibrate_temperature("default", test_rows=0), "'test_rows'"),
    ],
)
def test_bad_grid_and_folds_are_one_line_errors_naming_the_parameter(make, name):
    with pytest.raises(InvalidConfigError) as e:
        make()
    assert name in str(e.value) and "\n" not in str(e.value)


def test_bad_softmax_temperature_values_name_the_parameter(clf_run, tmp_path):
    X, y = table()
    for bad in ("cold", 0.0, -1.0, None):
        with pytest.raises(ValueError, match="'softmax_temperature' parameter"):
            PFNClassifier(checkpoint=clf_run, softmax_temperature=bad).fit(X, y)
    # too few rows for the folds: one line naming the parameter and the fix
    with pytest.raises(ValueError, match="'softmax_temperature' parameter .*fewer folds") as e:
        PFNClassifier(checkpoint=clf_run, n_estimators=2, softmax_temperature="cv").fit(
            X[:8], y[:8]
        )
    assert "\n" not in str(e.value)


def test_calibrate_temperature_refuses_other_kinds(tmp_path):
    with pytest.raises(CheckpointError, match="calibrate_temperature needs a classifier"):
        calibrate_temperature("pfnkit/checkpoints/tabular-reg.safetensors", draws=1)


# ---------------------------------------------------------------- the CLI


def test_calibrate_command_writes_the_card_and_refuses_other_kinds(clf_run, tmp_path):
    from typer.testing import CliRunner

    from pfnkit.cli.app import app
    from pfnkit.train.checkpoint import read_checkpoint

    path = exported(clf_run, tmp_path / "plain.safetensors", logit_scale=3.0)
    target = tmp_path / "calibrated.safetensors"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", str(path), "--out", str(target), "--draws", "20"])
    assert res.exit_code == 0, res.output
    assert "20/20 held-out tables" in res.output
    cal = read_checkpoint(target)["calibration"]
    assert cal["draws"] == 20 and cal["softmax_temperature"] in TEMPERATURE_GRID
    assert cal["nll_after"] <= cal["nll_t1"] and "ece_after" in cal
    assert "calibration" not in read_checkpoint(path)  # --out leaves the source alone
    X, y = table()
    est = PFNClassifier(checkpoint=target, n_estimators=2).fit(X, y)
    assert est.softmax_temperature_ == cal["softmax_temperature"]
    # a regressor: one line naming what is supported
    res = runner.invoke(
        app,
        [
            "calibrate",
            "pfnkit/checkpoints/tabular-reg.safetensors",
            "--out",
            str(tmp_path / "x.safetensors"),
        ],
    )
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "supports treatment-effect checkpoints" in lines[0] and "classifier" in lines[0]
    assert "regressor checkpoint" in lines[0]
    assert not (tmp_path / "x.safetensors").exists()


def test_cv_with_a_one_row_class_still_tunes(clf_run):
    """The fold that holds out a class's only row trains without that class (its row gets
    the clipped probability at every temperature); with two classes that fold trains on
    one class and predicts it for sure. The other folds choose the temperature."""
    X, y = table(60)
    y = np.where(np.arange(60) == 0, 7, y)  # class 7: one row
    est = PFNClassifier(checkpoint=clf_run, n_estimators=2, softmax_temperature="cv").fit(X, y)
    assert est.softmax_temperature_ in TEMPERATURE_GRID
    assert np.isfinite(est.temperature_cv_["log_loss"]).all()
    assert list(est.classes_) == [0, 1, 2, 7]
    y2 = np.where(np.arange(60) == 0, 1, 0)
    est.fit(X, y2)
    assert est.softmax_temperature_ in TEMPERATURE_GRID
    assert np.isfinite(est.temperature_cv_["log_loss"]).all()
