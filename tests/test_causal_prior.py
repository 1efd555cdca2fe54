import numpy as np
import pytest
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model import PFNConfig
from pfnkit.priors import PRIORS, BatchShape, CausalPrior, Uniform, build_prior, step_generator
from pfnkit.priors.causal import ATE, CONTEXT, MU0, MU1, ROW_INPUTS, TAU
from pfnkit.testing import check_prior
from pfnkit.train import TrainConfig, Trainer

SHAPE = BatchShape(batch_size=16, n_rows=200, n_features=6, single_eval_pos=150)


def sample(prior, shape=SHAPE, seed=0):
    return prior.sample(shape, generator=step_generator(seed, 0)).validate()


def auc(score, label):
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    pos, neg = score[label == 1], score[label == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


@pytest.mark.parametrize(
    "prior",
    [
        CausalPrior(),
        CausalPrior(missing_datasets=1.0, categorical_share=0.5, confounding=3.0),
        CausalPrior(min_features=2, heterogeneity=0.0, noise_std=0.0, ate_queries=0.0),
    ],
    ids=["default", "missing-categorical-confounded", "constant-noiseless-no-ate"],
)
def test_contract(prior):
    check_prior(prior)
    check_prior(prior, n_features=1)


def test_registered_and_recipe_roundtrip():
    assert PRIORS.get("causal") is CausalPrior
    p = build_prior({"name": "causal", "confounding": {"uniform": [0.0, 1.0]}, "ate_queries": 0.2})
    assert p == CausalPrior(confounding=Uniform(0.0, 1.0), ate_queries=0.2)


def max_abs_correlation(b):
    """Per dataset, the largest |correlation| between the treatment and a used covariate."""
    x, t = b.x.nan_to_num(), b.extras["treatment"]
    out = []
    for i in range(b.batch_size):
        xi = x[i, :, : int(b.n_features[i])]
        xc, tc = xi - xi.mean(0), t[i] - t[i].mean()
        corr = (xc * tc[:, None]).mean(0) / (xc.std(0, correction=0) * tc.std(correction=0) + 1e-9)
        out.append(float(corr.abs().max()))
    return np.array(out)


def test_randomised_treatment_is_independent_of_x():
    randomised = CausalPrior(confounding=0.0, missing_datasets=0.0)
    shape = BatchShape(batch_size=32, n_rows=200, n_features=6, single_eval_pos=150)
    b = sample(randomised, shape, seed=1)
    e = b.extras["propensity"]
    assert torch.all(e == e[:, :1]), "a randomised trial has one propensity per dataset"
    assert b.extras["confounding"].eq(0).all()
    # t ~ Bernoulli(e) with e constant: only chance correlations with x (200 rows: a
    # median of ~0.09 over 40 seeds, never above 0.11; confounded: never below 0.17)
    corr = max_abs_correlation(b)
    assert np.median(corr) < 0.13 and corr.max() < 0.35, corr
    # the same statistic under confounding (and no randomised datasets) is far larger
    confounded = CausalPrior(confounding=2.0, randomized_datasets=0.0, missing_datasets=0.0)
    assert np.median(max_abs_correlation(sample(confounded, shape, seed=1))) > 0.15


def test_strong_confounding_makes_treatment_predictable_within_the_clip():
    prior = CausalPrior(
        confounding=4.0,
        randomized_datasets=0.0,
        missing_datasets=0.0,
        categorical_share=0.0,
        irrelevant_share=0.0,
        outcome_only_share=0.0,
        treatment_only_share=0.5,
        propensity_clip=0.05,
    )
    b = sample(prior, BatchShape(16, 400, 4, 300), seed=2)
    e, t = b.extras["propensity"], b.extras["treatment"]
    assert float(e.min()) >= 0.05 - 1e-6 and float(e.max()) <= 0.95 + 1e-6
    # a logistic regression of t on x (fit by a few Newton steps) separates the arms
    aucs = []
    for i in range(b.batch_size):
        d = int(b.n_features[i])
        xi = torch.cat([b.x[i, :, :d].double(), torch.ones(400, 1, dtype=torch.float64)], 1)
        xi[:, :d] = (xi[:, :d] - xi[:, :d].mean(0)) / (xi[:, :d].std(0) + 1e-9)
        ti = t[i].double()
        w = torch.zeros(d + 1, dtype=torch.float64)
        for _ in range(25):
            p = torch.sigmoid(xi @ w)
            hess = xi.T @ (xi * (p * (1 - p))[:, None]) + 1e-3 * torch.eye(d + 1)
            w = w + torch.linalg.solve(hess, xi.T @ (ti - p))
        aucs.append(auc((xi @ w).numpy(), ti.numpy()))
    assert np.median(aucs) > 0.8, aucs
    true_auc = np.mean([auc(e[i].numpy(), t[i].numpy()) for i in range(16)])
    assert true_auc > 0.8


def test_targets_are_the_noise_free_surfaces_asked_for():
    b = sample(CausalPrior(), seed=3)
    sep = b.single_eval_pos
    q, r = b.extras["query"], b.extras["row_inputs"]
    mu0, mu1, t = b.extras["mu0"], b.extras["mu1"], b.extras["treatment"]
    tau = mu1 - mu0
    assert torch.all(q[:, :sep] == CONTEXT) and torch.all(q[:, sep:] != CONTEXT)
    for kind in (MU0, MU1, TAU, ATE):
        assert (q == kind).any(), f"no query of kind {kind}"
        assert torch.all(r[q == kind] == torch.tensor(ROW_INPUTS[kind]))
    ty = b.target_y
    torch.testing.assert_close(ty[q == MU0], mu0[q == MU0])
    torch.testing.assert_close(ty[q == MU1], mu1[q == MU1])
    torch.testing.assert_close(ty[q == TAU], tau[q == TAU])
    # the ATE is the mean effect over the context rows
    ate = tau[:, :sep].mean(1)
    torch.testing.assert_close(b.extras["ate"], ate)
    rows, _ = torch.nonzero(q == ATE, as_tuple=True)
    torch.testing.assert_close(ty[q == ATE], ate[rows])
    # context rows show the observed outcome of their arm (with noise) and their treatment
    torch.testing.assert_close(
        r[:, :sep], torch.stack([1 - t[:, :sep], t[:, :sep], 0 * t[:, :sep]], -1)
    )
    torch.testing.assert_close(ty[:, :sep], b.y[:, :sep])
    observed = torch.where(t > 0, mu1, mu0)
    assert not torch.allclose(b.y, observed)
    noiseless = sample(CausalPrior(noise_std=0.0), seed=3)
    observed = torch.where(
        noiseless.extras["treatment"] > 0, noiseless.extras["mu1"], noiseless.extras["mu0"]
    )
    torch.testing.assert_close(noiseless.y, observed)
    # outcomes are standardised per dataset
    torch.testing.assert_close(b.y.mean(1), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(b.y.std(1, correction=0), torch.ones(16), atol=1e-3, rtol=0)


def test_constant_and_heterogeneous_effects_both_occur():
    b = sample(CausalPrior(), BatchShape(64, 100, 5, 60), seed=4)
    spread = (b.extras["mu1"] - b.extras["mu0"]).std(1)
    constant = spread < 1e-5
    assert constant.sum() >= 5 and (spread > 0.2).sum() >= 20
    # the recorded heterogeneity says which is which
    assert torch.all(spread[b.extras["heterogeneity"] == 0] < 1e-5)
    always = sample(CausalPrior(heterogeneity=0.0), BatchShape(8, 100, 5, 60), seed=4)
    assert torch.all((always.extras["mu1"] - always.extras["mu0"]).std(1) < 1e-5)


def test_irrelevant_covariates_drive_nothing():
    b = sample(
        CausalPrior(irrelevant_share=1.0, outcome_only_share=0.0, treatment_only_share=0.0),
        seed=5,
    )
    assert torch.all(b.extras["propensity"] == b.extras["propensity"][:, :1])
    assert torch.all(b.extras["mu0"] == b.extras["mu0"][:, :1])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"confounding": -1.0}, "confounding"),
        ({"propensity_clip": 0.5}, "propensity_clip"),
        ({"propensity_clip": 0.0}, "propensity_clip"),
        ({"treated_share": 1.0}, "treated_share"),
        ({"heterogeneity": Uniform(-1.0, 1.0)}, "heterogeneity"),
        ({"noise_std": float("inf")}, "noise_std"),
        ({"missing_share": 1.5}, "missing_share"),
        ({"irrelevant_share": 0.6, "outcome_only_share": 0.6}, "irrelevant_share"),
        ({"outcome_queries": 0.8, "ate_queries": 0.3}, "outcome_queries"),
        ({"min_features": 0}, "min_features"),
        ({"task": "classification"}, "task"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors_naming_the_field(kwargs, field):
    with pytest.raises(InvalidConfigError, match=f"CausalPrior.*{field}") as e:
        CausalPrior(**kwargs)
    assert "\n" not in str(e.value)


def test_recipe_with_a_misspelled_field_is_refused():
    with pytest.raises(InvalidConfigError, match="Did you mean 'confounding'"):
        build_prior({"name": "causal", "confoundin": 1.0})


def test_trainer_gives_the_model_the_row_inputs():
    model = PFNConfig(n_features=4, d_model=32, n_layers=1, n_heads=2, n_bars=50)
    train = TrainConfig(steps=3, batch_size=4, rows=48, border_samples=2000, lr=3e-3)
    trainer = Trainer(CausalPrior(), model, train)
    # the recipe need not say n_row_inputs: the trainer takes it from the prior
    assert trainer.model.config.n_row_inputs == CausalPrior.n_row_inputs
    before = trainer.model.row_encoder.weight.detach().clone()
    trainer.run()
    assert np.isfinite(trainer.last_loss)
    # the treatment and query kinds reach the network: their projection was trained
    assert not torch.equal(trainer.model.row_encoder.weight, before)


# ---------------------------------------------------------------- new prior components


def skewness(v):
    v = v - v.mean()
    return float((v**3).mean() / max(float((v**2).mean()) ** 1.5, 1e-12))


def test_iid_covariates_are_numeric_independent_columns():
    prior = CausalPrior(iid_covariates=1.0, min_features=4)
    b = sample(prior, BatchShape(batch_size=16, n_rows=300, n_features=8, single_eval_pos=200))
    assert not b.extras["categorical"].any(), "iid covariates are numeric (binary as 0/1)"
    assert not torch.isnan(b.x).any(), "iid covariates have no missing values"
    kinds = {"binary": 0, "uniform": 0}
    for i in range(b.batch_size):
        x = b.x[i, :, : int(b.n_features[i])].double().numpy()
        for col in x.T:
            if set(np.unique(col)) <= {0.0, 1.0}:
                kinds["binary"] += 1
            elif col.min() >= 0 and col.max() <= 1:
                kinds["uniform"] += 1
    assert kinds["binary"] > 0 and kinds["uniform"] > 0, kinds
    # the SCM tables of the default prior are not all like that
    scm = sample(CausalPrior(iid_covariates=0.0, categorical_share=0.5), seed=2)
    assert scm.extras["categorical"].any()


def test_outcome_warp_skews_the_potential_outcomes():
    shape = BatchShape(batch_size=48, n_rows=300, n_features=6, single_eval_pos=200)

    def mean_abs_skew(prior):
        b = sample(prior, shape, seed=4)
        return np.mean([abs(skewness(b.extras["mu0"][i].double().numpy())) for i in range(48)])

    plain = CausalPrior(outcome_warp=0.0, iid_covariates=1.0)
    warped = CausalPrior(outcome_warp=1.0, iid_covariates=1.0)
    assert mean_abs_skew(warped) > 1.5 * mean_abs_skew(plain)


def test_separate_surfaces_decouple_the_arms():
    shape = BatchShape(batch_size=48, n_rows=300, n_features=6, single_eval_pos=200)

    def median_corr(prior):
        b = sample(prior, shape, seed=5)
        c = [
            np.corrcoef(b.extras["mu0"][i].numpy(), b.extras["mu1"][i].numpy())[0, 1]
            for i in range(48)
        ]
        return float(np.nanmedian(c))

    common = dict(constant_effect_datasets=0.0, heterogeneity=1.5, outcome_warp=0.0)
    shared = CausalPrior(separate_surfaces=0.0, **common)
    separate = CausalPrior(separate_surfaces=1.0, **common)
    assert median_corr(separate) < median_corr(shared) - 0.1


def test_heavy_and_heteroscedastic_noise_keep_targets_noise_free():
    prior = CausalPrior(heavy_noise=1.0, heteroscedastic=1.0, noise_std=1.0)
    b = sample(prior, seed=6)
    sep = b.single_eval_pos
    mu = torch.where(b.extras["treatment"] > 0, b.extras["mu1"], b.extras["mu0"])
    resid = (b.y[:, :sep] - mu[:, :sep]).double().numpy().ravel()
    kurt = float(((resid - resid.mean()) ** 4).mean() / resid.var() ** 2)
    assert kurt > 3.5, kurt  # heavier tails than a normal's 3
    # query targets are the noise-free surfaces whatever the noise
    q = b.extras["query"][:, sep:]
    tgt = b.target_y[:, sep:]
    mu0, mu1 = b.extras["mu0"][:, sep:], b.extras["mu1"][:, sep:]
    assert torch.allclose(tgt[q == MU0], mu0[q == MU0])
    assert torch.allclose(tgt[q == TAU], (mu1 - mu0)[q == TAU], atol=1e-5)


@pytest.mark.parametrize(
    "field",
    ["iid_covariates", "separate_surfaces", "outcome_warp", "heavy_noise", "heteroscedastic"],
)
def test_new_shares_must_be_probabilities(field):
    with pytest.raises(InvalidConfigError, match=f"CausalPrior.{field} must lie in \\[0, 1\\]"):
        CausalPrior(**{field: 1.5})
