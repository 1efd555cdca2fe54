"""The per-cell PFN (PFNConfig.tokens="cell"): shapes, invariances, cache, training, files."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.exceptions import InvalidConfigError
from pfnkit.model import PFN, PFNConfig, build_model, cell
from pfnkit.model.cell import CellPFN
from pfnkit.priors import BatchShape, SCMPrior, step_generator
from pfnkit.train import TrainConfig, Trainer, export_safetensors, load_checkpoint

CLF = PFNConfig(
    task="classification",
    tokens="cell",
    n_features=6,
    d_model=32,
    n_layers=3,
    n_heads=2,
    n_classes=3,
    normalize_x=True,
)


def randomised(config: PFNConfig = CLF, seed: int = 0) -> CellPFN:
    """A cell PFN whose zero-initialised residual branches are made non-zero (so every
    part of the network moves the output)."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    assert isinstance(model, CellPFN)
    return model.eval()


def table(b: int = 2, n: int = 30, f: int = 5, n_ctx: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, f, generator=g)
    x[0, 3, 1] = float("nan")  # a missing cell
    y = torch.randint(0, 3, (b, n_ctx), generator=g).float()
    return x, y


def test_build_model_dispatches_on_tokens_and_shapes():
    model = randomised()
    assert isinstance(build_model(dataclasses.replace(CLF, tokens="row")), PFN)
    assert not isinstance(build_model(dataclasses.replace(CLF, tokens="row")), CellPFN)
    x, y = table()
    assert model(x, y).shape == (2, 10, 3)
    h, n_ctx = model.embed(x, y)
    assert h.shape == (2, 30, 6, 32) and n_ctx == 20  # 5 cells + the target token per row
    # wider than n_features: the cell model reads every column
    assert model(torch.randn(2, 12, 40), torch.zeros(2, 8)).shape == (2, 4, 3)
    assert model.feature_limit is None
    with pytest.raises(InvalidConfigError, match="build_model"):
        PFN(CLF)


def test_invariant_to_context_rows_and_feature_columns():
    model = randomised()
    x, y = table()
    out = model(x, y)
    rows = torch.randperm(20)
    x_rows = torch.cat([x[:, rows], x[:, 20:]], dim=1)
    assert torch.allclose(model(x_rows, y[:, rows]), out, atol=1e-5)
    cols = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(model(x[:, :, cols], y), out, atol=1e-5)


def test_query_rows_do_not_see_each_other():
    model = randomised()
    x, y = table()
    out = model(x, y)
    x2 = x.clone()
    x2[:, 25] = 100.0  # change one query row
    out2 = model(x2, y)
    changed = (out2 - out).abs().amax(-1)  # (B, M)
    assert bool((changed[:, 5] > 1e-3).all())  # row 25 is query 5
    keep = [i for i in range(10) if i != 5]
    assert torch.allclose(out2[:, keep], out[:, keep], atol=1e-6)


def test_padded_features_are_ignored():
    model = randomised()
    x, y = table(f=5)
    padded = torch.cat([x, torch.zeros(2, 30, 3)], dim=-1)
    padded[1, :, 5:] = torch.randn(30, 3)  # dataset 1 uses all 8 columns
    nf = torch.tensor([5, 8])
    out = model(padded, y, n_features=nf)
    assert torch.allclose(out[0], model(x[:1], y[:1])[0], atol=1e-5)
    assert torch.allclose(out[1], model(padded[1:], y[1:])[0], atol=1e-5)


def test_cached_context_equals_forward(monkeypatch):
    model = randomised()
    x, y = table()
    cache = model.encode_context(x[:, :20], y)
    assert torch.allclose(model.predict_cached(cache, x[:, 20:]), model(x, y), atol=1e-5)
    monkeypatch.setattr(cell, "PREDICT_CELLS", 2 * 6 * 3)  # chunks of 3 test rows
    assert torch.allclose(model.predict_cached(cache, x[:, 20:]), model(x, y), atol=1e-5)


def test_bf16_autocast_forward_is_finite():
    model = randomised()
    x, y = table()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, y, n_features=torch.tensor([4, 5]))
    assert out.shape == (2, 10, 3) and bool(torch.isfinite(out.float()).all())


def test_unsupported_row_model_features_raise():
    model = randomised()
    x, y = table()
    with pytest.raises(InvalidConfigError, match="tokens='cell'"):
        model(x, y, prefix=torch.zeros(1, 2, 32))
    with pytest.raises(InvalidConfigError, match="tokens='cell'"):
        model(x, y, row_inputs=torch.zeros(2, 30, 1))
    with pytest.raises(InvalidConfigError, match="knn-fast"):
        _ = model.pfn_layers
    with pytest.raises(InvalidConfigError, match="n_row_inputs must be 0"):
        dataclasses.replace(CLF, n_row_inputs=2)


def test_config_round_trip_and_bad_tokens():
    assert PFNConfig.from_dict(CLF.to_dict()) == CLF
    assert PFNConfig().tokens == "row"
    with pytest.raises(InvalidConfigError) as e:
        PFNConfig(tokens="column")  # type: ignore[arg-type]
    msg = str(e.value)
    assert "tokens" in msg and "'row', 'cell'" in msg and "'column'" in msg
    assert "\n" not in msg


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    """A cell classifier trained for 40 steps on the SCM prior; its mean loss on fixed
    held-out batches before and after."""
    path = tmp_path_factory.mktemp("cell")
    prior = SCMPrior(task="classification", max_classes=10)
    held_out = [
        prior.sample(BatchShape(16, 48, 6, 32), generator=step_generator(0, i, 99))
        for i in range(4)
    ]

    def loss(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(np.mean([float(model.eval().loss(b)) for b in held_out]))

    train = TrainConfig(steps=40, batch_size=4, rows=48, lr=3e-3, seed=0)
    trainer = Trainer(prior, dataclasses.replace(CLF, n_classes=10, n_layers=2), train, path)
    before = loss(trainer.model)
    trainer.run()
    return path, before, loss(trainer.model)


def test_training_lowers_the_held_out_loss(cell_run):
    _, before, after = cell_run
    assert after < before - 0.05


def test_export_and_load_round_trip(cell_run, tmp_path):
    path, _, _ = cell_run
    model = load_checkpoint(path)
    assert isinstance(model, CellPFN) and model.config.tokens == "cell"
    exported = load_checkpoint(export_safetensors(path, tmp_path / "cell.safetensors"))
    assert isinstance(exported, CellPFN)
    x, y = table(f=9)
    assert torch.equal(model(x, y), exported(x, y))


def test_classifier_on_a_cell_checkpoint_reads_every_feature(cell_run):
    path, _, _ = cell_run
    rng = np.random.RandomState(0)
    x = rng.randn(80, 9)  # wider than the prior's n_features = 6
    y = (x[:, 7] > 0).astype(int)
    clf = PFNClassifier(checkpoint=str(path), n_estimators=2, random_state=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf.fit(x[:60], y[:60])
    assert not any("features but the checkpoint" in str(w.message) for w in record)
    proba = clf.predict_proba(x[60:])
    assert proba.shape == (20, 2) and np.allclose(proba.sum(1), 1)
    assert all(m.features.cols.size == 9 for m in clf.members_)
    knn = PFNClassifier(checkpoint=str(path), context="knn", n_estimators=1).fit(x[:60], y[:60])
    assert knn.predict_proba(x[60:]).shape == (20, 2)
    for context in ("knn-fast", "knn-shared", "tuned"):
        with pytest.raises(InvalidConfigError, match="tokens='cell'"):
            clf = PFNClassifier(checkpoint=str(path), context=context, n_estimators=1)
            clf.fit(x[:60], y[:60]).predict_proba(x[60:])


def test_regression_cell_model_predicts_a_distribution(tmp_path):
    config = dataclasses.replace(CLF, task="regression", n_bars=20)
    train = TrainConfig(steps=3, batch_size=2, rows=24, border_samples=500, seed=0)
    Trainer(SCMPrior(task="regression"), config, train, tmp_path).run()
    reg = PFNRegressor(checkpoint=str(tmp_path), n_estimators=1, random_state=0)
    rng = np.random.RandomState(0)
    x = rng.randn(30, 4)
    mean = reg.fit(x[:20], x[:20, 0]).predict(x[20:])
    assert mean.shape == (10,) and np.isfinite(mean).all()
