import math

import pytest
import torch

from pfnkit.exceptions import BatchError, InvalidConfigError, UnknownNameError
from pfnkit.priors import (
    PRIORS,
    Batch,
    BatchShape,
    BNNPrior,
    CausalPrior,
    Choice,
    FreezeThawPrior,
    GPPrior,
    LearningCurvePrior,
    LogUniform,
    MixturePrior,
    RulePrior,
    SCMPrior,
    Uniform,
    build_prior,
    prior_to_dict,
    step_generator,
    step_seed,
)
from pfnkit.priors._base import to_classes
from pfnkit.priors.gp import exact_predictive, kernel_matrix
from pfnkit.testing import check_prior

EXAMPLES = {
    "gp": [
        GPPrior(),
        GPPrior(
            kernel="matern32",
            lengthscale=LogUniform(0.1, 1.0),
            noise=Uniform(0.001, 0.1),
            task="classification",
            max_classes=4,
        ),
    ],
    "bnn": [
        BNNPrior(),
        BNNPrior(task="classification", activation="relu", weight_std=Choice((1.0, 2.0))),
    ],
    "mixture": [MixturePrior((GPPrior(), BNNPrior()), (0.3, 0.7))],
    "scm": [
        SCMPrior(),
        SCMPrior(task="regression", tree_fraction=1.0, missing_datasets=1.0),
        SCMPrior(tree_fraction=0.0, noise_std=0.0, categorical_share=0.0),
    ],
    "learning_curve": [
        LearningCurvePrior(),
        LearningCurvePrior(families=("pow3", "mmf"), noise=0.0, direction="minimize"),
    ],
    "freeze_thaw": [FreezeThawPrior(), FreezeThawPrior(families=("exp3",), max_configs=4)],
    "rules": [RulePrior(), RulePrior(families=("parity",), label_noise=0.0)],
    "causal": [
        CausalPrior(),
        CausalPrior(confounding=0.0, heterogeneity=0.0, missing_datasets=1.0),
    ],
}


def test_every_registered_prior_has_examples():
    assert set(PRIORS.names()) <= set(EXAMPLES), "add the new prior to EXAMPLES"


@pytest.mark.parametrize("prior", [p for ps in EXAMPLES.values() for p in ps], ids=repr)
def test_prior_contract(prior):
    check_prior(prior)


def test_step_seed_depends_on_seed_step_and_rank():
    seeds = {step_seed(s, t, r) for s in range(3) for t in range(3) for r in range(3)}
    assert len(seeds) == 27
    assert step_seed(1, 2, 3) == step_seed(1, 2, 3)


def test_ranks_draw_different_batches():
    shape = BatchShape(2, 10, 1, 5)
    a = GPPrior().sample(shape, generator=step_generator(0, 7, rank=0))
    b = GPPrior().sample(shape, generator=step_generator(0, 7, rank=1))
    assert not torch.equal(a.x, b.x)


def test_fixed_hyperparameters_are_used():
    b = GPPrior(lengthscale=0.3, noise=0.05).sample(
        BatchShape(3, 8, 1, 4), generator=step_generator(0, 0)
    )
    assert torch.allclose(b.extras["lengthscale"], torch.full((3,), 0.3))
    assert torch.allclose(b.extras["noise"], torch.full((3,), 0.05))


def test_hyperpriors_draw_per_dataset_within_range():
    b = GPPrior(lengthscale=LogUniform(0.1, 2.0)).sample(
        BatchShape(64, 8, 1, 4), generator=step_generator(0, 0)
    )
    ls = b.extras["lengthscale"]
    assert ls.min() >= 0.1 and ls.max() <= 2.0
    assert ls.std() > 0.1  # really drawn, not constant


def test_gp_sample_covariance_matches_kernel():
    # the empirical covariance of many draws at fixed x approaches the kernel + noise
    prior = GPPrior(lengthscale=0.5, outputscale=2.0, noise=0.1)
    batch = prior.sample(BatchShape(4000, 3, 1, 1), generator=step_generator(0, 0))
    # x differs per dataset, so compare the variance, which is outputscale + noise everywhere
    assert abs(float(batch.y.var()) - 2.1) < 0.15


def test_gp_kernels_are_valid_covariances():
    x = torch.rand(1, 30, 2, dtype=torch.float64)
    for kernel in ("rbf", "matern12", "matern32", "matern52"):
        k = kernel_matrix(
            x,
            x,
            kernel,
            torch.tensor([0.4], dtype=torch.float64),
            torch.tensor([1.0], dtype=torch.float64),
        )
        assert torch.allclose(k.diagonal(dim1=1, dim2=2), torch.ones(1, 30, dtype=torch.float64))
        assert torch.linalg.eigvalsh(k[0]).min() > -1e-8


def test_exact_predictive_interpolates_with_small_noise():
    x = torch.linspace(0, 1, 10).view(1, 10, 1)
    y = torch.sin(6 * x[..., 0])
    mean, var = exact_predictive(
        x, y, x, kernel="rbf", lengthscale=0.3, outputscale=1.0, noise=1e-6
    )
    assert torch.allclose(mean.float(), y, atol=1e-3)
    assert (var < 1e-4).all()
    far = torch.full((1, 1, 1), 50.0)
    mean, var = exact_predictive(
        x, y, far, kernel="rbf", lengthscale=0.3, outputscale=1.0, noise=0.1
    )
    assert abs(float(mean)) < 1e-6 and abs(float(var) - 1.1) < 1e-6


def test_to_classes_covers_range_and_permutes():
    y = torch.randn(200, 50)
    cls, n = to_classes(y, 5, torch.Generator().manual_seed(0))
    assert n.min() >= 2 and n.max() <= 5
    assert (cls < n[:, None]).all() and (cls >= 0).all()
    assert (cls == cls.round()).all()
    # labels are permuted: class 0 is not always the lowest y
    lowest_is_zero = [(cls[i, y[i].argmin()] == 0).item() for i in range(200)]
    assert 0.1 < sum(lowest_is_zero) / 200 < 0.9


def test_mixture_draws_each_component():
    prior = MixturePrior((GPPrior(), BNNPrior()), (0.5, 0.5))
    comps = {
        int(
            prior.sample(BatchShape(1, 4, 1, 2), generator=step_generator(0, s)).extras[
                "component"
            ][0]
        )
        for s in range(20)
    }
    assert comps == {0, 1}


def test_mixture_rejects_mixed_tasks_and_bad_weights():
    with pytest.raises(InvalidConfigError, match="share one task"):
        MixturePrior((GPPrior(), BNNPrior(task="classification")))
    with pytest.raises(InvalidConfigError, match="one weight per component"):
        MixturePrior((GPPrior(),), (0.5, 0.5))


def test_build_prior_roundtrip_and_errors():
    prior = GPPrior(lengthscale=LogUniform(0.1, 1.0), noise=Choice((0.01, 0.1), (1.0, 3.0)))
    assert build_prior(prior_to_dict(prior)) == prior
    mix = MixturePrior((GPPrior(), BNNPrior(noise_std=0.2)), (1.0, 2.0))
    assert build_prior(prior_to_dict(mix)) == mix
    with pytest.raises(InvalidConfigError, match="Did you mean 'lengthscale'"):
        build_prior({"name": "gp", "lenghtscale": 0.5})
    with pytest.raises(UnknownNameError, match="Did you mean 'gp'"):
        build_prior("gpp")
    with pytest.raises(InvalidConfigError, match="log_uniform"):
        build_prior({"name": "gp", "lengthscale": {"loguniform": [0.1, 1]}})
    with pytest.raises(InvalidConfigError, match="must be a str"):
        build_prior({"name": "gp", "kernel": 3})
    with pytest.raises(InvalidConfigError, match="kernel must be one of"):
        build_prior({"name": "gp", "kernel": "cosine"})
    with pytest.raises(InvalidConfigError, match="0 < low"):
        LogUniform(0.0, 1.0)


def test_batch_validate_names_the_field():
    x = torch.zeros(2, 5, 3)
    with pytest.raises(BatchError, match="target_y"):
        Batch(x, torch.zeros(2, 5), torch.zeros(2, 4), 2).validate()
    with pytest.raises(BatchError, match="single_eval_pos"):
        Batch(x, torch.zeros(2, 5), torch.zeros(2, 5), 5).validate()
    with pytest.raises(BatchError, match="class ids"):
        Batch(
            x, torch.zeros(2, 5), torch.full((2, 5), 3.0), 2, n_classes=torch.tensor([2, 2])
        ).validate()


def test_batch_shape_rejects_no_test_rows():
    with pytest.raises(InvalidConfigError, match="single_eval_pos"):
        BatchShape(2, 10, 1, 10)


def test_bnn_functions_are_standardised():
    b = BNNPrior(noise_std=0.0).sample(BatchShape(8, 100, 2, 50), generator=step_generator(0, 0))
    assert torch.allclose(b.y.std(1), torch.ones(8), atol=1e-3)
    assert math.isclose(float(b.y.mean()), 0.0, abs_tol=1e-4)


def test_prior_by_import_path_roundtrips():
    from dataclasses import dataclass

    import pfnkit.priors.gp as gp_module

    @dataclass(frozen=True)
    class Shifted(GPPrior):
        shift: float = 1.0

    gp_module.Shifted = Shifted  # make it importable as "pfnkit.priors.gp:Shifted"
    Shifted.__qualname__ = "Shifted"
    Shifted.__module__ = "pfnkit.priors.gp"
    try:
        prior = build_prior({"name": "pfnkit.priors.gp:Shifted", "shift": 2.0})
        assert isinstance(prior, Shifted) and prior.shift == 2.0
        assert prior_to_dict(prior)["name"] == "pfnkit.priors.gp:Shifted"
        assert build_prior(prior_to_dict(prior)) == prior
    finally:
        del gp_module.Shifted
    with pytest.raises(InvalidConfigError, match="Cannot import prior"):
        build_prior("pfnkit.priors.gp:Nope")
    with pytest.raises(InvalidConfigError, match="not a prior class"):
        build_prior("pfnkit.priors.gp:kernel_matrix")


def test_scm_tables_have_the_quirks_of_real_tables():
    prior = SCMPrior(categorical_share=0.5, missing_datasets=1.0, missing_share=0.2, max_classes=5)
    b = prior.sample(BatchShape(32, 200, 8, 100), generator=step_generator(0, 0))
    cat = b.extras["categorical"]
    assert cat.any() and not cat.all()
    for i, j in cat.nonzero().tolist():
        col = b.x[i, :, j]
        col = col[~torch.isnan(col)]
        assert (col == col.round()).all() and col.min() >= 0 and col.max() < prior.max_categories
    missing = torch.isnan(b.x).float().mean()
    assert 0.02 < missing < 0.5
    assert set(b.n_classes.tolist()) <= set(range(2, 6))
    # class imbalance: some datasets have a clearly dominant class
    shares = [torch.bincount(b.target_y[i].long()).max() / 200 for i in range(32)]
    assert max(shares) > 0.5


def test_scm_both_graph_kinds_learnable_signal():
    # the target depends on the features: a nearest-neighbour guess beats chance
    for tree_fraction in (0.0, 1.0):
        prior = SCMPrior(
            task="regression",
            tree_fraction=tree_fraction,
            noise_std=0.01,
            missing_datasets=0.0,
            irrelevant_share=0.0,
            categorical_share=0.0,
            skew_share=0.0,
        )
        b = prior.sample(BatchShape(16, 300, 5, 200), generator=step_generator(1, 0))
        x, y = b.x, b.target_y
        dist = torch.cdist(x[:, 200:], x[:, :200])
        nn_pred = torch.gather(y[:, :200], 1, dist.argmin(-1))
        mse = (nn_pred - y[:, 200:]).square().mean()
        assert mse < 0.9 * y[:, 200:].var(), (tree_fraction, float(mse))


# ---------------------------------------------------------------- issue 12: GP hyperparameters


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("noise", -0.1, ">= 0"),
        ("outputscale", -1.0, "> 0"),
        ("outputscale", 0.0, "> 0"),
        ("lengthscale", 0.0, "> 0"),
        ("lengthscale", -0.5, "> 0"),
        ("lengthscale", math.nan, "> 0"),
        ("noise", Uniform(-0.1, 0.2), ">= 0"),
        ("lengthscale", Uniform(0.0, 1.0), "> 0"),
        ("outputscale", Choice((1.0, -1.0)), "> 0"),
        ("noise", "0.1", "a number"),
    ],
)
def test_gp_hyperparameters_are_checked_at_construction(field, value, allowed):
    with pytest.raises(InvalidConfigError, match=f"GPPrior.{field} must be") as e:
        GPPrior(**{field: value})
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_gp_recipe_with_a_zero_lengthscale_is_one_clear_error():
    with pytest.raises(InvalidConfigError, match="GPPrior.lengthscale must be"):
        build_prior({"name": "gp", "lengthscale": 0})
    GPPrior(noise=0.0, lengthscale=LogUniform(0.1, 1.0))  # zero noise stays allowed
