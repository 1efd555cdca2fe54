import math

import pytest
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.heads import BarDistribution, borders_from_targets, classification_loss


@pytest.fixture
def dist():
    return BarDistribution(torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]))


def test_density_integrates_to_one(dist):
    logits = torch.randn(3, 6)
    y = torch.linspace(-15, 15, 300_001)
    dens = torch.exp(-dist.nll(logits[:, None, :].expand(3, y.numel(), 6), y.expand(3, -1)))
    integral = torch.trapezoid(dens, y, dim=-1)
    assert torch.allclose(integral, torch.ones(3), atol=2e-3)


def test_nll_of_uniform_bucket(dist):
    logits = torch.full((6,), -1e4)
    logits[2] = 0.0  # all mass in [-0.5, 0]
    assert math.isclose(float(dist.nll(logits, torch.tensor(-0.25))), math.log(0.5), rel_tol=1e-5)


def test_mean_variance_quantiles_match_numerics(dist):
    logits = torch.randn(4, 6)
    y = torch.linspace(-20, 20, 400_001)
    dens = torch.exp(-dist.nll(logits[:, None, :].expand(4, y.numel(), 6), y.expand(4, -1)))
    mean = torch.trapezoid(dens * y, y, dim=-1)
    var = torch.trapezoid(dens * (y - mean[:, None]) ** 2, y, dim=-1)
    assert torch.allclose(dist.mean(logits), mean, atol=2e-3)
    assert torch.allclose(dist.variance(logits), var, atol=5e-3)
    cdf = torch.cumulative_trapezoid(dens, y, dim=-1)
    for q in (0.01, 0.25, 0.5, 0.9, 0.995):
        qv = dist.quantile(logits, q)
        idx = torch.searchsorted(y, qv.contiguous())
        got = cdf.gather(-1, (idx - 1).clamp(0, cdf.shape[-1] - 1)[:, None]).squeeze(-1)
        assert torch.allclose(got, torch.full_like(got, q), atol=3e-3), (q, got)
    assert torch.equal(dist.median(logits), dist.quantile(logits, 0.5))


def test_tails_have_full_support(dist):
    logits = torch.zeros(6)
    assert torch.isfinite(dist.nll(logits, torch.tensor(-100.0)))
    assert torch.isfinite(dist.nll(logits, torch.tensor(100.0)))
    assert dist.quantile(logits, 1e-4) < -2.0 and dist.quantile(logits, 1 - 1e-4) > 2.0


def test_quantile_rejects_bad_levels(dist):
    with pytest.raises(InvalidConfigError, match="strictly in"):
        dist.quantile(torch.zeros(6), 1.0)


def test_borders_from_targets_are_equal_mass_and_increasing():
    t = torch.randn(100_000)
    b = borders_from_targets(t, 10)
    assert b.shape == (11,) and bool((b[1:] > b[:-1]).all())
    frac = torch.histogram(t, bins=b).hist / t.numel()
    assert torch.allclose(frac, torch.full((10,), 0.1), atol=0.01)
    discrete = borders_from_targets(torch.randint(0, 3, (1000,)).float(), 10)
    assert bool((discrete[1:] > discrete[:-1]).all())
    with pytest.raises(InvalidConfigError, match="target samples"):
        borders_from_targets(torch.randn(5), 10)


def test_bad_borders_rejected():
    with pytest.raises(InvalidConfigError, match="strictly increasing"):
        BarDistribution(torch.tensor([0.0, 1.0, 1.0, 2.0]))


def test_classification_loss_ignores_masked_classes():
    logits = torch.zeros(1, 1, 5)
    logits[..., 4] = 100.0  # a class that does not exist for this dataset
    loss = classification_loss(logits, torch.zeros(1, 1), torch.tensor([2]))
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-5)


def test_cdf_inverts_quantile_including_tails():
    import torch

    from pfnkit.model.heads import BarDistribution

    bars = BarDistribution(torch.linspace(-1, 2, 31))
    logits = torch.randn(4, 5, 30)
    for q in (0.001, 0.02, 0.3, 0.5, 0.8, 0.99, 0.9995):
        y = bars.quantile(logits, q)
        assert torch.allclose(bars.cdf(logits, y), torch.full_like(y, q), atol=1e-4)
    assert torch.all(bars.cdf(logits, -1e6) < 1e-6) and torch.all(bars.cdf(logits, 1e6) > 1 - 1e-6)


@pytest.mark.parametrize(
    "low,high",
    [(-1e9, 1e9), (-0.7, 0.8), (-30.0, 0.25), (-1.5, 1.5), (1.3, 1.3), (-9.0, -4.0), (3.0, 7.0)],
)
def test_clipped_mean_matches_numerics(dist, low, high):
    """E[clip(Y, low, high)] by integration of the density, bounds inside buckets, in
    both tails, equal, and beyond the borders; unbounded it is the mean."""
    logits = torch.randn(4, 6) * 2
    y = torch.linspace(-40, 40, 800_001)
    dens = torch.exp(-dist.nll(logits[:, None, :].expand(4, y.numel(), 6), y.expand(4, -1)))
    want = torch.trapezoid(dens * y.clamp(low, high), y, dim=-1)
    got = dist.clipped_mean(logits, low, high)
    assert torch.allclose(got, want, atol=2e-3), (got, want)
    if low < -100:
        assert torch.allclose(got, dist.mean(logits), atol=1e-5)
    # per-row bounds broadcast
    rows = dist.clipped_mean(logits, torch.full((4,), low), torch.full((4,), high))
    assert torch.allclose(rows, got)


def test_clipped_mean_rejects_crossed_bounds(dist):
    with pytest.raises(InvalidConfigError, match="low <= high"):
        dist.clipped_mean(torch.zeros(6), 1.0, 0.0)
