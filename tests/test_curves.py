"""Learning curves: the prior, the extrapolator, early stopping and the CLI."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pfnkit.curves import CurveExtrapolator, bundled_curve_checkpoint
from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors import BatchShape, LearningCurvePrior, build_prior, step_generator
from pfnkit.priors.learning_curves import FAMILIES, ParamSpec
from pfnkit.testing import check_prior

# ---------------------------------------------------------------- prior


def test_prior_contract_and_recipe():
    check_prior(LearningCurvePrior())
    check_prior(LearningCurvePrior(direction="minimize", families=("pow3", "mmf")), n_features=1)
    p = build_prior({"name": "learning_curve", "families": ["pow3", "ilog2"], "noise": 0.01})
    assert p.families == ("pow3", "ilog2") and p.noise == 0.01


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"families": ["pow3", "pow5"]}, "unknown family 'pow5'"),
        ({"families": []}, "distinct families"),
        ({"min_components": 3, "families": ["pow3", "exp3"]}, "min_components"),
        ({"p_jump": 1.5}, r"p_jump must be in \[0, 1\]"),
        ({"min_horizon": 50, "max_horizon": 20}, "min_horizon"),
        ({"direction": "up"}, "'maximize' or 'minimize'"),
        ({"families": "pow3"}, "list of names"),
    ],
)
def test_prior_bad_fields(fields, match):
    with pytest.raises(InvalidConfigError, match=match):
        build_prior({"name": "learning_curve", **fields})


def test_prior_rows_are_a_censored_curve():
    prior = LearningCurvePrior(min_horizon=10, max_horizon=120)
    shape = BatchShape(64, 50, 1, 12)
    b = prior.sample(shape, generator=step_generator(3, 0))
    horizon = b.extras["horizon"].double()
    steps = (b.x[..., 0].double() * horizon[:, None]).round()
    assert torch.equal(steps[:, :12], torch.arange(1, 13).double().expand(64, 12))
    test = steps[:, 12:]
    assert bool((test > 12).all()) and bool((test <= horizon[:, None]).all())
    assert torch.equal(test[:, -1], horizon)  # the final value is always a test row
    assert bool((horizon >= 13).all()) and bool((horizon <= 120).all())
    assert bool((b.x[..., 0] > 0).all()) and bool((b.x[..., 0] <= 1).all())


def test_noise_free_curves_rise_within_unit_interval():
    prior = LearningCurvePrior(noise=0.0, p_plateau=0.5, p_jump=0.5, p_divergence=0.0)
    b = prior.sample(BatchShape(128, 60, 1, 59), generator=step_generator(0, 1))
    y = b.y[:, :59]  # the context rows are consecutive steps
    assert bool((y >= 0).all()) and bool((y <= 1).all())
    assert bool((y[:, 1:] >= y[:, :-1] - 1e-6).all()), "a noise-free curve fell"
    flipped = dataclasses.replace(prior, direction="minimize")
    bf = flipped.sample(BatchShape(128, 60, 1, 59), generator=step_generator(0, 1))
    assert torch.allclose(bf.y, 1 - b.y, atol=1e-6)


def test_divergence_makes_curves_fall():
    prior = LearningCurvePrior(noise=0.0, p_divergence=1.0)
    b = prior.sample(BatchShape(256, 80, 1, 79), generator=step_generator(0, 2))
    drop = (b.y[:, :79].cummax(1).values - b.y[:, :79]).amax(1)
    assert float((drop > 0.01).float().mean()) > 0.3


def test_every_family_is_a_progress_function():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)[None, :].expand(64, 101)
    gen = torch.Generator().manual_seed(0)
    for name, fam in FAMILIES.items():
        p = {s.name: s.sample(64, gen)[:, None] for s in fam.params}
        g = fam(x, p)
        assert torch.isfinite(g).all(), name
        assert torch.allclose(g[:, 0], torch.zeros(64, dtype=torch.float64)), name
        assert bool((g[:, 1:] >= g[:, :-1] - 1e-12).all()), f"{name} is not increasing"
        assert bool((g <= 1 + 1e-9).all()), name


@pytest.mark.parametrize("spec", [ParamSpec("a", 0.2, 3.0, log=True), ParamSpec("b", -1, 2.0)])
def test_param_spec_density_integrates_to_one(spec):
    v = torch.linspace(spec.low, spec.high, 200_001, dtype=torch.float64)
    dens = spec.log_density(v).exp()
    assert math.isclose(float(torch.trapezoid(dens, v)), 1.0, rel_tol=1e-3)
    assert spec.log_density(torch.tensor([spec.high * 1.01 + 1])).item() == -math.inf


# ---------------------------------------------------------------- extrapolator (tiny PFN)


@pytest.fixture(scope="module")
def tiny_lc(tmp_path_factory):
    from pfnkit.model import PFNConfig
    from pfnkit.train import TrainConfig, Trainer

    path = tmp_path_factory.mktemp("lc")
    model = PFNConfig(n_features=1, d_model=32, n_layers=2, n_heads=2, n_bars=60)
    train = TrainConfig(steps=20, batch_size=8, rows=40, min_context=2, border_samples=5000)
    Trainer(LearningCurvePrior(), model, train, path).run()
    return CurveExtrapolator(path)


CURVE = [0.30, 0.45, 0.55, 0.61, 0.65, 0.68, 0.70]


def test_single_and_batch_shapes_agree(tiny_lc):
    one = tiny_lc.predict(CURVE, at=[10, 20, 30], max_steps=30)
    assert one.mean().shape == (3,) and one.quantile(0.9).shape == (3,)
    short = CURVE[:4]
    batch = tiny_lc.predict([CURVE, short, CURVE], at=[10, 20, 30], max_steps=30)
    assert batch.mean().shape == (3, 3)
    np.testing.assert_allclose(batch.mean()[0], one.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.mean()[2], one.mean(), rtol=1e-5, atol=1e-6)
    alone = tiny_lc.predict(short, at=[10, 20, 30], max_steps=30)
    np.testing.assert_allclose(batch.mean()[1], alone.mean(), rtol=1e-5, atol=1e-6)
    lo, hi = one.interval(0.9)
    assert np.all(lo <= one.median()) and np.all(one.median() <= hi)
    p = one.prob_exceeding(one.median())
    np.testing.assert_allclose(p, 0.5, atol=0.02)
    assert np.all(one.std() > 0)


def test_units_and_direction_are_equivariant(tiny_lc):
    base = tiny_lc.predict(CURVE, at=[15, 30], max_steps=30)
    pct = tiny_lc.predict([100 * v for v in CURVE], at=[15, 30], max_steps=30, value_range=(0, 100))
    np.testing.assert_allclose(pct.mean(), 100 * base.mean(), rtol=1e-5)
    np.testing.assert_allclose(pct.quantile(0.2), 100 * base.quantile(0.2), rtol=1e-4)
    np.testing.assert_allclose(pct.logpdf(70.0), base.logpdf(0.7) - math.log(100), atol=1e-4)
    # a loss curve 2 * (1 - acc) in [0, 2], minimised, is the same prediction mirrored
    loss = tiny_lc.predict(
        [2 * (1 - v) for v in CURVE],
        at=[15, 30],
        max_steps=30,
        value_range=(0, 2),
        direction="minimize",
    )
    np.testing.assert_allclose(loss.mean(), 2 * (1 - base.mean()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss.quantile(0.1), 2 * (1 - base.quantile(0.9)), atol=1e-4)
    np.testing.assert_allclose(loss.prob_improvement(0.5), base.prob_improvement(0.75), atol=1e-5)
    np.testing.assert_allclose(loss.prob_exceeding(0.5), 1 - base.prob_exceeding(0.75), atol=1e-5)
    observed = tiny_lc.predict(
        [2 * (1 - v) for v in CURVE], at=[30], value_range=(0, None), direction="minimize"
    )
    assert observed.mean().shape == (1,)


def test_long_curves_are_thinned_to_the_context(tiny_lc):
    assert tiny_lc.max_context == 35
    curve = list(np.linspace(0.2, 0.8, 60))
    pred = tiny_lc.predict(curve, at=[100], max_steps=100)
    assert np.isfinite(pred.mean()).all()


@pytest.mark.parametrize(
    "curve, kwargs, match",
    [
        ([0.2, float("nan"), 0.5], {}, "non-finite value .* at step 2"),
        ([0.4], {}, "at least 2"),
        ([0.2, 1.4], {}, r"outside value_range=\(0, 1\)"),
        (CURVE, {"at": [40], "max_steps": 30}, "beyond max_steps=30"),
        (CURVE, {"at": [0]}, "count from 1"),
        (CURVE, {"at": [5], "max_steps": 5}, "more than max_steps"),
        (CURVE, {"direction": "up"}, "'maximize' or 'minimize'"),
        (CURVE, {"value_range": (1, 0)}, "high > low"),
        (CURVE, {"value_range": 1.0}, "pair"),
        ("abc", {}, "sequence of numbers"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_lc, curve, kwargs, match):
    kwargs = {"at": [30], **kwargs}
    with pytest.raises(InvalidConfigError, match=match):
        tiny_lc.predict(curve, **kwargs)


def test_should_stop_rules(tiny_lc):
    assert not tiny_lc.should_stop(CURVE, None, 30)
    assert not tiny_lc.should_stop(CURVE[:2], 0.99, 30)  # fewer than min_steps
    assert not tiny_lc.should_stop(CURVE, 0.99, len(CURVE))  # already finished
    p_hi = tiny_lc.prob_improvement(CURVE, 0.2, 30)
    p_lo = tiny_lc.prob_improvement(CURVE, 0.95, 30)
    assert p_hi > p_lo
    with pytest.raises(InvalidConfigError, match="threshold"):
        tiny_lc.should_stop(CURVE, 0.5, 30, threshold=2.0)


# ---------------------------------------------------------------- bundled LC-PFN


@pytest.fixture(scope="module")
def bundled():
    assert bundled_curve_checkpoint().is_file()
    return CurveExtrapolator()


def held_out_curves(n=200, horizon=50, seed=11):
    """Noisy prior curves of exactly `horizon` steps, clipped to [0, 1] as real accuracies."""
    prior = LearningCurvePrior(min_horizon=horizon, max_horizon=horizon)
    b = prior.sample(BatchShape(n, horizon, 1, horizon - 1), generator=step_generator(seed, 0))
    return b.y.double().clamp(0, 1).numpy()  # steps 1..horizon in order


def test_bundled_predictions_narrow_and_sharpen_with_more_observed(bundled):
    curves = held_out_curves()
    final = curves[:, -1]
    widths, errors, covered = [], [], []
    for n_obs in (5, 15, 35):
        pred = bundled.predict([c[:n_obs] for c in curves], at=[50], max_steps=50)
        lo, hi = pred.interval(0.9)
        widths.append(float(np.median(hi[:, 0] - lo[:, 0])))
        errors.append(float(np.mean(np.abs(pred.median()[:, 0] - final))))
        covered.append(float(np.mean((lo[:, 0] <= final) & (final <= hi[:, 0]))))
    assert widths[0] > widths[1] > widths[2], widths
    assert errors[0] > errors[1] > errors[2], errors
    assert all(0.75 <= c <= 0.99 for c in covered), covered


def test_bundled_early_stopping_separates_good_and_bad_curves(bundled):
    curves = held_out_curves(n=100, seed=5)
    final = curves[:, -1]
    best = float(np.quantile(final, 0.8))
    stop = np.array([bundled.should_stop(c[:20], best, 50) for c in curves])
    # curves that end far below the best should be stopped, those ending above should not
    assert stop[final < best - 0.2].mean() > 0.7
    assert stop[final > best].mean() < 0.2


# ---------------------------------------------------------------- CLI


def test_cli_extrapolate_table_and_plot(tmp_path):
    from pfnkit.cli import app as cli_app

    csv = tmp_path / "curves.csv"
    rows = ["run_a,run_b"] + [f"{a},{b}" for a, b in zip(CURVE, CURVE[:4])]
    rows = rows[:5] + [f"{a}," for a in CURVE[4:]]
    csv.write_text("\n".join(rows) + "\n")
    png = tmp_path / "out.png"
    r = CliRunner().invoke(
        cli_app.app,
        ["curves", "extrapolate", str(csv), "--at", "20", "--at", "50", "--plot", str(png)],
    )
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("run_")]
    assert len(lines) == 4 and lines[0].startswith("run_a,20,")
    mean = [float(ln.split(",")[2]) for ln in lines]
    assert all(0 < m < 1.2 for m in mean)
    assert png.is_file() and png.stat().st_size > 1000


@pytest.mark.parametrize(
    "content, args, match",
    [
        ("a\n0.1\nx\n", ["--at", "5"], "not a number"),
        ("0.1\n0.2\n", [], "--at"),
        ("0.1\n0.2\n", ["--at", "5", "--high", "big"], "--high"),
        ("0.1\n\n0.3\n0.2\n", ["--at", "5"], "step 2 (line 2, a blank line)"),
        ("a,b\n0.1,0.2\n,\n0.3,0.4\n", ["--at", "5"], "'a' has no value at step 2"),
        ("0.1,0.2\n0.3\n0.4,0.5\n", ["--at", "5"], "'curve1' has no value at step 2"),
        ("0.1\n0.3\n0.2\n\n\n", ["--at", "5"], None),
    ],
)
def test_cli_extrapolate_bad_input(tmp_path, content, args, match):
    from pfnkit.cli import app as cli_app

    csv = tmp_path / "c.csv"
    csv.write_text(content)
    r = CliRunner().invoke(cli_app.app, ["curves", "extrapolate", str(csv), *args])
    if match is None:  # trailing blank lines and empty cells end a curve
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert match in r.output


def test_read_curves_keeps_every_value_at_its_step(tmp_path):
    """A blank line is a row of missing values: it never moves later values earlier."""
    from pfnkit.cli.curves import read_curves

    csv = tmp_path / "c.csv"
    csv.write_text("\n\nrun_a,run_b\n0.1,0.5\n0.2,0.6\n0.3,\n \n\n")
    names, curves = read_curves(csv)
    assert names == ["run_a", "run_b"]
    assert curves[0].tolist() == [0.1, 0.2, 0.3] and curves[1].tolist() == [0.5, 0.6]
    csv.write_text("0.1\n0.2\n\n0.4\n")  # was read as [0.1, 0.2, 0.4]: a shifted curve
    with pytest.raises(InvalidConfigError, match=r"step 3 \(line 3, a blank line\)"):
        read_curves(csv)
    csv.write_text("\n0.1\n0.2\n")  # a leading blank line without a header is step 1
    with pytest.raises(InvalidConfigError, match="no value at step 1"):
        read_curves(csv)
    csv.write_bytes("\ufeffloss\n0.5\n0.4\n".encode())  # a BOM is not part of the name
    assert read_curves(csv)[0] == ["loss"]


def test_cli_extrapolate_non_utf8_file_is_one_line(tmp_path):
    from pfnkit.cli import app as cli_app

    csv = tmp_path / "c.csv"
    csv.write_bytes("acc\u00e9\n0.1\n0.2\n".encode("latin-1"))
    r = CliRunner().invoke(cli_app.app, ["curves", "extrapolate", str(csv), "--at", "5"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not UTF-8" in r.output and "Save the CSV as UTF-8" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_readme_learning_curve_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Learning curves", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(code, scope)
    assert scope["pred"].mean().shape == (2,)
