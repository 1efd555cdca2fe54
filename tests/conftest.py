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
