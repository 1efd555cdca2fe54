import json
import math

import pytest
import torch

from pfnkit.exceptions import CheckpointError, InvalidConfigError
from pfnkit.model import PFNConfig
from pfnkit.priors import BNNPrior, GPPrior, SCMPrior
from pfnkit.train import TrainConfig, Trainer, lr_at, read_checkpoint


def cfgs(tiny_model_kwargs, tiny_train_kwargs, **train):
    return PFNConfig(**tiny_model_kwargs), TrainConfig(**{**tiny_train_kwargs, **train})


def test_schedule_warmup_then_cosine():
    kw = dict(lr=1.0, steps=100, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.55)
    assert lr_at(100, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_train_config_validation():
    with pytest.raises(
        InvalidConfigError, match="'steps' training parameter must be an int >= 1. Got -5"
    ):
        TrainConfig(steps=-5)
    with pytest.raises(InvalidConfigError, match="must be larger than max_context"):
        TrainConfig(rows=10, max_context=10)
    with pytest.raises(InvalidConfigError, match="precision"):
        TrainConfig(precision="fp8")
    assert TrainConfig(rows=256).context_range == (1, 224)
    assert TrainConfig.from_dict(TrainConfig(lr=0.1).to_dict()) == TrainConfig(lr=0.1)


def test_loss_goes_down(tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=80, lr=3e-3, batch_size=8)
    trainer = Trainer(GPPrior(), m, t)
    losses = [trainer.train_step() for _ in range(80)]
    assert sum(losses[-15:]) / 15 < sum(losses[:15]) / 15 - 0.2


def test_classification_training_runs(tiny_model_kwargs, tiny_train_kwargs):
    prior = BNNPrior(task="classification", max_classes=4)
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=3)
    trainer = Trainer(prior, m, t)
    assert trainer.model_config.task == "classification"
    assert math.isfinite(trainer.run()["loss"])
    with pytest.raises(InvalidConfigError, match="raise n_classes"):
        Trainer(BNNPrior(task="classification", max_classes=12), m, t)


def test_same_seed_same_parameters(tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=4)
    a, b = Trainer(GPPrior(), m, t), Trainer(GPPrior(), m, t)
    a.run(), b.run()
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_exact_resume_matches_uninterrupted_run(
    tmp_path, tiny_model_kwargs, tiny_train_kwargs, dropout
):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=10, checkpoint_every=4)
    m = PFNConfig(**{**tiny_model_kwargs, "dropout": dropout})
    full = Trainer(GPPrior(), m, t, tmp_path / "full")
    full.run()
    part = Trainer(GPPrior(), m, t, tmp_path / "part")

    def crash(info):
        if info.step == 6:  # steps 5 and 6 are lost, as with a kill -9
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        part.run(crash)
    del part
    resumed = Trainer.resume(tmp_path / "part")
    assert resumed.step == 4
    resumed.run()
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k
    log = [
        json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log] == list(range(1, 11))


def test_resume_to_more_steps_and_guards(tmp_path, tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=3)
    Trainer(GPPrior(), m, t, tmp_path / "run").run()
    more = Trainer.resume(tmp_path / "run", steps=5)
    more.run()
    assert read_checkpoint(tmp_path / "run")["step"] == 5
    with pytest.raises(InvalidConfigError, match="Cannot change the model's d_model"):
        Trainer.resume(tmp_path / "run", model_overrides={"d_model": 64})
    with pytest.raises(InvalidConfigError, match="Cannot change rows"):
        Trainer.resume(tmp_path / "run", train_overrides={"rows": 50})
    with pytest.raises(InvalidConfigError, match="below the 5 steps"):
        Trainer.resume(tmp_path / "run", steps=2)
    with pytest.raises(CheckpointError, match="already holds a run"):
        Trainer(GPPrior(), m, t, tmp_path / "run")
    Trainer(GPPrior(), m, t, tmp_path / "run", overwrite=True)  # explicit replace is allowed


def test_gradient_accumulation_equals_big_batch_gradient(tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=1, accumulate=2, grad_clip=0.0)
    trainer = Trainer(GPPrior(), m, t)
    b0, b1 = trainer.sample_batch(0, 0), trainer.sample_batch(0, 1)
    expected = [torch.zeros_like(p) for p in trainer.model.parameters()]
    for b in (b0, b1):
        trainer.model.zero_grad()
        trainer.model.loss(b).backward()
        for e, p in zip(expected, trainer.model.parameters()):
            e += p.grad / 2
    trainer.optimizer.step = lambda: None  # keep the gradients for inspection
    trainer.train_step()
    for e, p in zip(expected, trainer.model.parameters()):
        assert torch.allclose(e, p.grad, atol=1e-6)


def test_bf16_autocast_trains_on_cpu(tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(
        tiny_model_kwargs, tiny_train_kwargs, steps=40, precision="bf16", lr=3e-3, batch_size=8
    )
    trainer = Trainer(GPPrior(), m, t)
    assert trainer.bf16
    losses = [trainer.train_step() for _ in range(40)]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_checkpoint_has_everything_and_loads_weights_only(
    tmp_path, tiny_model_kwargs, tiny_train_kwargs
):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=2)
    Trainer(GPPrior(), m, t, tmp_path).run()
    data = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in (
        "format_version",
        "pfnkit_version",
        "model_config",
        "prior",
        "train_config",
        "step",
        "metrics",
        "state_dict",
        "optimizer",
    ):
        assert key in data, key
    assert data["prior"]["name"] == "gp" and data["step"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_unknown_device_is_a_clear_error(tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, device="tpu")
    with pytest.raises(InvalidConfigError, match="device must be"):
        Trainer(GPPrior(), m, t)


# ---------------------------------------------------------------- divergence (issue 12)


def _params_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lr", [math.inf, math.nan, -math.inf])
def test_train_config_rejects_non_finite_floats(lr):
    with pytest.raises(InvalidConfigError, match="'lr' training parameter must be a finite"):
        TrainConfig(lr=lr)
    with pytest.raises(InvalidConfigError, match="'grad_clip'"):
        TrainConfig(grad_clip=math.inf)
    with pytest.raises(InvalidConfigError, match="'weight_decay'"):
        TrainConfig(weight_decay=math.nan)


def test_diverging_run_keeps_the_last_good_checkpoint(
    tmp_path, tiny_model_kwargs, tiny_train_kwargs
):
    from pfnkit.exceptions import PfnkitError, TrainingDivergedError

    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=2)
    Trainer(GPPrior(), m, t, tmp_path).run()
    good = read_checkpoint(tmp_path)
    resumed = Trainer.resume(tmp_path, steps=6, train_overrides={"lr": 1e30})
    with pytest.raises(TrainingDivergedError, match="--resume") as e:
        resumed.run()
    assert isinstance(e.value, PfnkitError) and "\n" not in str(e.value)
    after = read_checkpoint(tmp_path)
    assert after["step"] == 2 and _params_equal(after["state_dict"], good["state_dict"])
    assert all(torch.isfinite(v).all() for v in after["state_dict"].values())


def test_non_finite_loss_stops_before_the_update(tiny_model_kwargs, tiny_train_kwargs, monkeypatch):
    from pfnkit.exceptions import TrainingDivergedError

    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=4)
    trainer = Trainer(GPPrior(), m, t)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    monkeypatch.setattr(trainer, "_loss", lambda batch: torch.tensor(math.nan, requires_grad=True))
    with pytest.raises(TrainingDivergedError, match="loss"):
        trainer.train_step()
    assert _params_equal(trainer.model.state_dict(), before) and trainer.step == 0


def test_save_refuses_non_finite_weights(tmp_path, tiny_model_kwargs, tiny_train_kwargs):
    from pfnkit.exceptions import TrainingDivergedError

    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=1)
    trainer = Trainer(GPPrior(), m, t, tmp_path)
    trainer.run()
    good = read_checkpoint(tmp_path)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(math.nan)
    with pytest.raises(TrainingDivergedError, match="not saved"):
        trainer.save()
    assert _params_equal(read_checkpoint(tmp_path)["state_dict"], good["state_dict"])


def test_skip_non_finite_steps(tmp_path, tiny_model_kwargs, tiny_train_kwargs, monkeypatch):
    from pfnkit.exceptions import TrainingDivergedError

    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=6, on_nonfinite="skip")
    trainer = Trainer(GPPrior(), m, t, tmp_path)
    real = trainer._loss
    bad_steps = {1, 3}
    monkeypatch.setattr(
        trainer,
        "_loss",
        lambda batch: real(batch) * (math.nan if trainer.step in bad_steps else 1.0),
    )
    result = trainer.run()
    assert result["step"] == 6 and trainer.skipped_steps == 2 and math.isfinite(result["loss"])
    saved = read_checkpoint(tmp_path)
    assert saved["metrics"]["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    # a run that stays non-finite still stops, in skip mode too
    trainer = Trainer(GPPrior(), m, dataclasses_replace(t, steps=40))
    monkeypatch.setattr(trainer, "_loss", lambda batch: torch.tensor(math.nan, requires_grad=True))
    with pytest.raises(TrainingDivergedError, match="in a row"):
        trainer.run()


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_warm_start_begins_from_the_checkpoint_weights(
    tmp_path, tiny_model_kwargs, tiny_train_kwargs
):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=3)
    source = Trainer(GPPrior(), m, t, tmp_path / "src")
    source.run()
    bigger = TrainConfig(**{**tiny_train_kwargs, "steps": 2, "batch_size": 6})
    warm = Trainer(GPPrior(), m, bigger, tmp_path / "warm", init_from=tmp_path / "src")
    # before its first step the network is the source's, borders included (regression)
    for k, v in source.model.state_dict().items():
        assert torch.equal(v, warm.model.state_dict()[k]), k
    assert warm.step == 0 and warm.init_from["step"] == 3
    warm.run()
    state = read_checkpoint(tmp_path / "warm")
    assert state["step"] == 2 and state["metrics"]["datasets_seen"] == 12  # its own count
    assert state["init_from"] == {
        "checkpoint": "src",
        "step": 3,
        "datasets_seen": 3 * t.batch_size,
        "prior": "gp",
        "init_from": None,
        "grown": None,
    }
    moved = [
        k
        for k, v in source.model.state_dict().items()
        if not torch.equal(v, warm.model.state_dict()[k])
    ]
    assert moved  # it trained
    # resuming a warm-started run keeps where it came from
    more = Trainer.resume(tmp_path / "warm", steps=3)
    more.run()
    assert read_checkpoint(tmp_path / "warm")["init_from"]["checkpoint"] == "src"


def test_warm_start_refuses_another_shape_or_prior(tmp_path, tiny_model_kwargs, tiny_train_kwargs):
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=1)
    Trainer(GPPrior(), m, t, tmp_path / "src").run()
    other = PFNConfig(**{**tiny_model_kwargs, "d_model": 2 * tiny_model_kwargs["d_model"]})
    with pytest.raises(InvalidConfigError, match="holds a network with d_model="):
        Trainer(GPPrior(), other, t, init_from=tmp_path / "src")
    prior = BNNPrior(task="classification", max_classes=4)
    with pytest.raises(InvalidConfigError, match="holds a network with task='regression'"):
        Trainer(prior, m, t, init_from=tmp_path / "src")
    with pytest.raises(CheckpointError, match="No checkpoint"):
        Trainer(GPPrior(), m, t, init_from=tmp_path / "missing")


def test_small_tables_mix_shorter_narrower_tables(tiny_model_kwargs, tiny_train_kwargs):
    prior = SCMPrior(task="classification", max_classes=3)
    m = PFNConfig(**{**tiny_model_kwargs, "n_features": 6, "n_classes": 3})
    t = TrainConfig(
        **{**tiny_train_kwargs, "steps": 3, "rows": 24, "min_context": 2},
        small_share=0.5,
        small_rows=12,
        small_features=2,
    )
    trainer = Trainer(prior, m, t)
    assert t.small_context_range == (2, 11)
    small = 0
    for k in range(40):
        b = trainer.sample_batch(k)
        assert b.x.shape[2] == 6
        if b.x.shape[1] == 12:
            small += 1
            assert 2 <= b.single_eval_pos <= 11
            assert int(b.n_features.max()) <= 2
            assert torch.all(b.x[..., 2:] == 0)
            assert b.extras["categorical"].shape == (4, 6)
        else:
            assert b.x.shape[1] == 24 and b.single_eval_pos <= 21
    assert 8 <= small <= 32
    assert math.isfinite(trainer.run()["loss"])
    # with small tables off, a config that names them draws exactly the old batches
    plain = Trainer(prior, m, TrainConfig(**{**tiny_train_kwargs, "rows": 24}))
    named = Trainer(prior, m, TrainConfig(**{**tiny_train_kwargs, "rows": 24}, small_rows=12))
    for k in range(3):
        a, b = plain.sample_batch(k), named.sample_batch(k)
        assert a.single_eval_pos == b.single_eval_pos
        assert torch.allclose(a.x, b.x, equal_nan=True) and torch.equal(a.y, b.y)


def test_small_tables_bad_values_and_resume_guard(tmp_path, tiny_model_kwargs, tiny_train_kwargs):
    with pytest.raises(InvalidConfigError, match="'small_share' training parameter must be"):
        TrainConfig(small_share=1.5)
    with pytest.raises(InvalidConfigError, match=r"small_rows \(300\) must be <= rows \(256\)"):
        TrainConfig(rows=256, small_share=0.5, small_rows=300)
    with pytest.raises(InvalidConfigError, match="'small_features' training parameter"):
        TrainConfig(small_share=0.5, small_features=0)
    with pytest.raises(InvalidConfigError, match="'small_rows' training parameter"):
        TrainConfig(small_rows=1)  # a bad value is an error even with small tables off
    assert TrainConfig(rows=256, small_share=0.5).small_context_range == (1, 75)  # 85 rows
    m, t = cfgs(tiny_model_kwargs, tiny_train_kwargs, steps=2, small_share=0.5, small_rows=12)
    Trainer(GPPrior(), m, t, tmp_path / "run").run()
    with pytest.raises(InvalidConfigError, match="Cannot change small_share"):
        Trainer.resume(tmp_path / "run", train_overrides={"small_share": 0.0})
    Trainer.resume(tmp_path / "run", steps=3).run()
    assert read_checkpoint(tmp_path / "run")["step"] == 3
