"""The freeze-thaw prior: correlated curves of many configurations per task."""

import pytest
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors import BatchShape, FreezeThawPrior, build_prior, step_generator
from pfnkit.testing import check_prior


def test_contract_and_recipe():
    check_prior(FreezeThawPrior(), n_features=5)
    p = build_prior({"name": "freeze_thaw", "families": ["pow3"], "max_configs": 10})
    assert p.families == ("pow3",) and p.max_configs == 10
    with pytest.raises(InvalidConfigError, match="n_features >= 3"):
        FreezeThawPrior().sample(BatchShape(2, 20, 2, 10), generator=step_generator(0, 0))
    with pytest.raises(InvalidConfigError, match="max_configs"):
        FreezeThawPrior(min_configs=5, max_configs=2)


def test_context_is_each_configuration_prefix_and_tests_come_later():
    prior = FreezeThawPrior(max_horizon=30)
    b = prior.sample(BatchShape(8, 200, 6, 120), generator=step_generator(1, 0))
    for i in range(8):
        horizon = int(b.extras["horizon"][i])
        step = (b.x[i, :, 0] * horizon).round().long()
        tag = b.x[i, :, 1]
        seen: dict[float, list[int]] = {}
        for r in range(120):
            seen.setdefault(float(tag[r]), []).append(int(step[r]))
        for steps in seen.values():
            assert sorted(steps) == list(range(1, len(steps) + 1))
        for r in range(120, 200):
            done = len(seen.get(float(tag[r]), []))
            assert done < int(step[r]) <= horizon
        # rows of one configuration share their hyperparameters
        for t in seen:
            rows = b.x[i, tag == t, 2:]
            assert torch.equal(rows, rows[:1].expand_as(rows))


def test_similar_hyperparameters_give_similar_curves():
    prior = FreezeThawPrior(noise=0.0, p_divergence=0.0, sensitivity=1.0)
    gen = torch.Generator().manual_seed(0)
    near, far = [], []
    for _ in range(60):
        h = torch.rand(1, 3, generator=gen, dtype=torch.float64)
        hs = torch.cat([h, h + 0.01, torch.rand(1, 3, generator=gen, dtype=torch.float64)])
        y = prior.curves(hs.clamp(0, 1), 40, gen)[:, -1]
        near.append(float((y[0] - y[1]).abs()))
        far.append(float((y[0] - y[2]).abs()))
    assert sum(near) < 0.2 * sum(far)
