import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tiny_model_kwargs():
    return dict(d_model=32, n_layers=2, n_heads=2, n_bars=50)


@pytest.fixture
def tiny_train_kwargs():
    return dict(batch_size=4, rows=24, border_samples=2000, log_every=1)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Small tabular PFNs trained for a few seconds (quality is not the point here)."""
    from pfnkit.model import PFNConfig
    from pfnkit.priors import SCMPrior
    from pfnkit.train import TrainConfig, Trainer

    out = {}
    for task in ("classification", "regression"):
        path = tmp_path_factory.mktemp(task)
        model = PFNConfig(
            n_features=64, d_model=32, n_layers=2, n_heads=2, n_bars=100, normalize_x=True
        )
        train = TrainConfig(steps=30, batch_size=4, rows=64, border_samples=5000, lr=3e-3)
        Trainer(SCMPrior(task=task), model, train, path).run()
        out[task] = path
    return out


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a database on a PostgreSQL server started for this test session (from the
    Debian package; see tests/_postgres.py). Skips without it, unless
    PFNKIT_REQUIRE_POSTGRES=1 (CI), where its absence is a failure."""
    from _postgres import Unavailable, start_server

    try:
        server = start_server()
    except Unavailable as e:
        if os.environ.get("PFNKIT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (PFNKIT_REQUIRE_POSTGRES=1): {e}")
        pytest.skip(f"PostgreSQL not available: {e}")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def surrogate_path(tmp_path_factory):
    """A tiny FT-PFN (freeze-thaw surrogate) run directory, trained for a few steps."""
    from pfnkit.model import PFNConfig
    from pfnkit.priors import FreezeThawPrior
    from pfnkit.train import TrainConfig, Trainer

    path = tmp_path_factory.mktemp("ft")
    model = PFNConfig(n_features=6, d_model=32, n_layers=1, n_heads=2, n_bars=50)
    train = TrainConfig(steps=10, batch_size=4, rows=64, border_samples=3000)
    Trainer(FreezeThawPrior(max_horizon=20), model, train, path).run()
    return path
