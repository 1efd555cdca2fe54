"""Test-time adaptation: the model/trainer/loader seams and every context strategy."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification, make_regression

from pfnkit import PFNClassifier, PFNRegressor
from pfnkit.exceptions import CheckpointError, InvalidConfigError
from pfnkit.model import PFN, PFNConfig
from pfnkit.priors import Batch, GPPrior
from pfnkit.train import TrainConfig, Trainer
from pfnkit.train.checkpoint import PFNCard, context_limit, load_pfn
from pfnkit.tuning import (
    FineTune,
    KNNContext,
    MixedContext,
    PromptedPFN,
    SubsampleContext,
    TunedContext,
)


@pytest.fixture(scope="module")
def ckpts(tiny_checkpoints):
    return tiny_checkpoints


def small_pfn(task: str = "classification", normalize: bool = True) -> PFN:
    torch.manual_seed(0)
    cfg = PFNConfig(
        task=task,
        n_features=5,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_bars=20,
        normalize_x=normalize,
    )
    model = PFN(cfg)
    for p in model.parameters():  # non-zero residual branches: a non-trivial network
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def data(n: int = 300, d: int = 5, seed: int = 0, classes: int = 2):
    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=min(d, 4),
        n_redundant=0,
        n_classes=classes,
        random_state=seed,
    )
    return X, y


# ------------------------------------------------------------------ model seams


def test_prefix_equal_to_embedded_rows_gives_the_same_predictions():
    model = small_pfn()
    x = torch.randn(2, 30, 5)
    y = torch.randint(0, 2, (2, 20)).float()
    stats = model.x_encoder.context_stats(x[:, :20])
    plain = model(x, y, stats=stats)
    tokens = model.x_encoder(x[:, :20], None, stats=stats) + model.y_encoder(y)
    with_prefix = model(x[:, 20:], y[:, :0], prefix=tokens, stats=stats)
    assert torch.allclose(plain, with_prefix, atol=1e-5)
    # a prefix in front of real context rows also joins the context
    mixed = model(x[:, 10:], y[:, 10:], prefix=tokens[:, :10], stats=stats)
    assert torch.allclose(plain, mixed, atol=1e-5)


def test_cached_prefix_matches_forward_and_gradients_reach_the_prefix():
    model = small_pfn()
    x = torch.randn(3, 12, 5)
    prefix = torch.randn(1, 7, 32, requires_grad=True)
    stats = model.x_encoder.context_stats(torch.randn(3, 40, 5))
    out = model(x, torch.zeros(3, 0), prefix=prefix, stats=stats)
    cache = model.encode_context(x[:, :0], torch.zeros(3, 0), prefix=prefix, stats=stats)
    assert torch.allclose(out, model.predict_cached(cache, x), atol=1e-5)
    out.sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_prefix_only_needs_stats_and_a_wrong_prefix_shape_is_named():
    model = small_pfn()
    with pytest.raises(InvalidConfigError, match="stats"):
        model(torch.randn(1, 4, 5), torch.zeros(1, 0), prefix=torch.randn(1, 3, 32))
    with pytest.raises(InvalidConfigError, match="prefix"):
        model(torch.randn(1, 4, 5), torch.zeros(1, 2), prefix=torch.randn(1, 3, 7))


def test_a_batch_reaches_forward_through_one_mapping():
    model = small_pfn()
    x = torch.randn(2, 10, 5)
    y = torch.randint(0, 2, (2, 10)).float()
    batch = Batch(x, y, y.clone(), 6, n_classes=torch.tensor([2, 2]))
    kwargs = PFN.inputs_of(batch)
    assert set(kwargs) == {"x", "y_ctx", "n_features"} and kwargs["y_ctx"].shape == (2, 6)
    stats = torch.stack(model.x_encoder.context_stats(x), dim=1)
    prefix_batch = Batch(x, y, y.clone(), 0, extras={"stats": stats}).validate()
    assert "stats" in PFN.inputs_of(prefix_batch)
    with pytest.raises(Exception, match="single_eval_pos"):
        Batch(x, y, y.clone(), 0).validate()  # no prefix statistics: 0 is not allowed


# ------------------------------------------------------------------ trainer seams


def test_trainer_trains_only_the_parameters_it_is_given():
    model = small_pfn()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(2, 80, 5)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.float32)
    stats = model.x_encoder.context_stats(torch.as_tensor(x))
    prompt = torch.randn(2, 6, 32) * 0.1
    module = PromptedPFN(model, prompt, torch.zeros(2, 6), stats)
    from pfnkit.tuning import TableSource

    src = TableSource(
        x,
        y,
        "classification",
        2,
        layout="prefix",
        stats=torch.stack(stats, dim=1),
        queries=32,
    )
    cfg = TrainConfig(steps=5, batch_size=2, rows=32, lr=0.05, device="cpu", log_every=1)
    trainer = Trainer(src, module, cfg, parameters=module.trainable())
    trainer.run()
    assert trainer.step == 5
    assert not torch.allclose(module.prompt, prompt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, frozen[k]), f"frozen weight {k} changed"
    assert not model.training  # the shared PFN never leaves eval mode


def test_trainer_time_budget_and_request_stop():
    cfg = TrainConfig(steps=10_000, batch_size=2, rows=16, device="cpu", border_samples=2000)
    mc = PFNConfig(d_model=16, n_layers=1, n_heads=2, n_bars=20)
    trainer = Trainer(GPPrior(), mc, cfg)
    trainer.run(max_seconds=0.3)
    assert 0 < trainer.step < 10_000
    trainer2 = Trainer(GPPrior(), mc, cfg)

    def stop_at_3(info):
        if info.step == 3:
            trainer2.request_stop()

    trainer2.run(stop_at_3)
    assert trainer2.step == 3


def test_trainer_refuses_nothing_to_train_and_a_task_mismatch():
    model = small_pfn().requires_grad_(False)
    cfg = TrainConfig(steps=1, batch_size=2, rows=16, device="cpu")
    with pytest.raises(InvalidConfigError, match="requires grad"):
        Trainer(GPPrior(task="classification"), model, cfg)
    with pytest.raises(InvalidConfigError, match="task"):
        Trainer(GPPrior(), small_pfn(), cfg)


# ------------------------------------------------------------------ one loader


def test_loader_checks_the_kind_for_every_consumer(ckpts):
    from pfnkit.curves import CurveExtrapolator
    from pfnkit.hpo.surrogate import FreezeThawSurrogate
    from pfnkit.train.checkpoint import bundled_checkpoint_path

    reg = bundled_checkpoint_path("tabular-reg.safetensors", "tabular regression")
    with pytest.raises(CheckpointError, match="regressor checkpoint.*learning-curves"):
        CurveExtrapolator(reg)
    with pytest.raises(CheckpointError, match="freeze-thaw"):
        FreezeThawSurrogate(reg)
    lc = bundled_checkpoint_path("learning-curves.safetensors", "learning-curve")
    with pytest.raises(CheckpointError, match="learning-curves checkpoint.*PFNRegressor"):
        PFNRegressor(checkpoint=lc).fit(np.eye(4), np.arange(4.0))
    model, card = load_pfn(ckpts["classification"], expect="classifier")
    assert isinstance(card, PFNCard) and card.kind == "classifier"
    assert card.context_limit == TrainConfig(rows=64).context_range[1] == 56


def test_context_limit_is_the_train_config_rule():
    assert context_limit({"rows": 384}) == 336
    assert context_limit({"rows": 512, "max_context": 448}) == 448
    assert context_limit({"rows": 128, "max_context": None}) == 112


# ------------------------------------------------------------------ strategies

STRATEGIES = ["subsample", "full", "knn", "knn-fast", "knn-shared", "tuned", "auto"]


@pytest.mark.parametrize("context", STRATEGIES)
def test_every_strategy_classifies_and_regresses(ckpts, context):
    X, y = data(160, 6, classes=3)
    kw = {"n_estimators": 3, "context": context}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clf = PFNClassifier(checkpoint=ckpts["classification"], **kw).fit(X[:120], y[:120])
        proba = clf.predict_proba(X[120:])
        Xr, yr = make_regression(n_samples=160, n_features=6, noise=1.0, random_state=0)
        reg = PFNRegressor(checkpoint=ckpts["regression"], **kw).fit(Xr[:120], yr[:120])
        pred = reg.predict(Xr[120:])
        again = PFNClassifier(checkpoint=ckpts["classification"], **kw).fit(X[:120], y[:120])
    assert proba.shape == (40, 3) and np.allclose(proba.sum(1), 1) and np.isfinite(proba).all()
    assert pred.shape == (40,) and np.isfinite(pred).all()
    assert np.isfinite(reg.nll(Xr[120:], yr[120:])).all()
    # reproducible by default: the same data and parameters give the same predictions
    assert np.array_equal(proba, again.predict_proba(X[120:]))


def test_knn_context_is_each_rows_nearest_neighbours(ckpts):
    X, y = data(200, 4)
    est = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=1,
        context=KNNContext(k=15),
        preprocessing="none",
    ).fit(X[:150], y[:150])
    proba = est.predict_proba(X[150:160])
    # reference: one plain forward pass per test row on its 15 nearest rows (member view)
    member = est.members_[0]
    view_tr = member.features.apply(est._member_inputs(est.encoder_.transform(X[:150]))["none"])
    view_te = member.features.apply(est._member_inputs(est.encoder_.transform(X[150:160]))["none"])
    z_tr, z_te = est.context_.spaces[0](view_tr), est.context_.spaces[0](view_te)
    model = est.model_
    y_code = member.code[y[:150]]
    for i in range(10):
        nn = np.argsort(((z_tr - z_te[i]) ** 2).sum(1), kind="stable")[:15]
        x = torch.as_tensor(np.concatenate([view_tr[nn], view_te[i : i + 1]])[None])
        logits = model(x, torch.as_tensor(y_code[nn], dtype=torch.float32)[None])[0, 0, :2]
        p = torch.softmax(logits / est.softmax_temperature_, -1).detach().numpy()
        assert np.allclose(proba[i], p[member.code], atol=1e-4)


def test_knn_k_larger_than_the_table_and_single_class_neighbourhoods(ckpts):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (30, 3)), rng.normal(10, 0.1, (30, 3))])
    y = np.repeat([0, 1], 30)
    est = PFNClassifier(
        checkpoint=ckpts["classification"], n_estimators=2, context=KNNContext(k=10)
    ).fit(X, y)
    proba = est.predict_proba(X[[0, 45]])  # every neighbour of each row has one class
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1)
    big = PFNClassifier(
        checkpoint=ckpts["classification"], n_estimators=2, context=KNNContext(k=10_000)
    ).fit(X, y)
    assert big.context_.n_context_rows == 60 and np.isfinite(big.predict_proba(X[:5])).all()


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_graph_knn_with_every_row_as_neighbour_equals_one_full_context(ckpts, task):
    X, y = data(50, 4)
    if task == "regression":
        y = X[:, 0] + 0.1 * X[:, 1]
    est_cls = PFNClassifier if task == "classification" else PFNRegressor
    kw = {"checkpoint": ckpts[task], "n_estimators": 2}
    graph = est_cls(context=KNNContext(k=40, mode="graph"), **kw).fit(X[:40], y[:40])
    full = est_cls(context="full", **kw).fit(X[:40], y[:40])
    a = graph._member_logits(full.encoder_.transform(X[40:]))
    b = full._member_logits(full.encoder_.transform(X[40:]))
    assert torch.allclose(a, b, atol=1e-4)


def test_graph_knn_blocks_attend_each_row_to_exactly_its_own_neighbours():
    from pfnkit.tuning.knn import _attend_blocks, _blocks, _layer_kv

    model = small_pfn()
    layer = model.pfn_layers[0]
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3)).astype(np.float32)
    h = torch.randn(300, 32)
    kv = _layer_kv(layer, torch.randn(500, 32))
    rows = torch.as_tensor(np.stack([rng.permutation(500)[:12] for _ in range(300)]))
    with torch.no_grad():
        fast = _attend_blocks(layer, h, kv, _blocks(z, rows))
        g = kv[rows].view(300, 12, 2, 2, 16).permute(2, 0, 3, 1, 4)  # per-row gather
        ref = layer.forward_kv(h[:, None], g[0], g[1])[:, 0]
    assert torch.allclose(fast, ref, atol=1e-5)


def test_graph_knn_predicts_from_cached_keys_and_values(ckpts, monkeypatch):
    X, y = data(300, 5)
    est = PFNClassifier(checkpoint=ckpts["classification"], n_estimators=2, context="knn-fast").fit(
        X[:250], y[:250]
    )
    first = est.predict_proba(X[250:])

    def boom(*a, **k):
        raise AssertionError("predict must not re-encode the training rows")

    monkeypatch.setattr(est.model_, "encode_context", boom)
    monkeypatch.setattr(est.model_, "forward", boom)
    assert np.array_equal(first, est.predict_proba(X[250:]))


def test_shared_knn_contexts_are_cached_at_fit(ckpts, monkeypatch):
    X, y = data(400, 5)
    est = PFNClassifier(
        checkpoint=ckpts["classification"], n_estimators=2, context="knn-shared"
    ).fit(X[:300], y[:300])
    first = est.predict_proba(X[300:])

    def boom(*a, **k):
        raise AssertionError("predict must not re-encode a cached context")

    monkeypatch.setattr(est.model_, "encode_context", boom)
    assert np.array_equal(first, est.predict_proba(X[300:]))


def test_tuned_context_trains_a_small_prompt_and_predicts_from_the_cache(monkeypatch):
    X, y = data(600, 8)
    est = PFNClassifier(
        n_estimators=2, context=TunedContext(n_tokens=32, time_budget=20, max_steps=30)
    ).fit(X[:500], y[:500])
    report = est.context_.report
    n_params = sum(p.numel() for p in est.model_.parameters())
    assert report["trained_params"] < 0.05 * n_params  # TuneTables' regime
    assert report["steps"] >= 10
    assert report["trained_params"] == 2 * 32 * est.model_.config.d_model
    first = est.predict_proba(X[500:])

    def boom(*a, **k):
        raise AssertionError("predict must not re-encode the prompt")

    monkeypatch.setattr(est.model_, "encode_context", boom)
    monkeypatch.setattr(est.model_, "forward", boom)
    assert np.array_equal(first, est.predict_proba(X[500:]))


def test_default_prompts_train_under_five_percent_of_the_bundled_pfn():
    from pfnkit.estimators._base import load_model
    from pfnkit.tuning import auto_context

    model, card = load_model("default", "classification", "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    t = TunedContext()
    assert t.n_prompts * t.n_tokens * model.config.d_model < 0.05 * n_params
    # auto: half of the 8 default members get a prompt each
    auto = auto_context(10_000, card.context_limit)
    tuned = auto.strategies[1].for_members(4)
    assert tuned.n_prompts * tuned.n_tokens * model.config.d_model < 0.05 * n_params


def test_auto_rule_all_rows_when_they_fit_else_subsample_and_prompts():
    from pfnkit.tuning import auto_context

    assert auto_context(336, 336) == SubsampleContext()
    # up to a quarter more rows than the training limit: still one context of all rows
    assert auto_context(420, 336) == SubsampleContext(max_rows=420)
    assert auto_context(421, 336, prompts=False) == SubsampleContext()
    mixed = auto_context(421, 336)
    assert isinstance(mixed, MixedContext)
    assert [type(s) for s in mixed.strategies] == [SubsampleContext, TunedContext]


def test_tuned_prompt_improves_on_its_own_subsample_start():
    X, y = data(800, 6, seed=3)
    est = PFNClassifier(
        n_estimators=1,
        context=TunedContext(n_tokens=16, n_prompts=1, time_budget=30, max_steps=150),
    ).fit(X[:600], y[:600])
    report = est.context_.report
    # the prompt starts as a 16-row subsample; early stopping keeps a better one
    assert report["best_loss"] < report["start_loss"]


def test_tuned_validation_split_with_a_missing_class_and_tiny_tables(ckpts):
    X, y = data(120, 4, classes=3)
    y[:] = np.where(np.arange(120) < 119, y % 2, 2)  # class 2 has a single row
    est = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=1,
        context=TunedContext(n_tokens=8, time_budget=5, max_steps=20),
    ).fit(X, y)
    assert est.predict_proba(X[:5]).shape == (5, 3)
    with pytest.raises(InvalidConfigError, match="at least 4 training rows"):
        PFNClassifier(checkpoint=ckpts["classification"], context=TunedContext(time_budget=5)).fit(
            X[:2], [0, 1]
        )


def test_mixed_context_splits_members(ckpts):
    X, y = data(300, 5)
    est = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=4,
        context=MixedContext((SubsampleContext(max_rows=40), KNNContext(k=20))),
    ).fit(X[:250], y[:250])
    assert [m.tolist() for m, _ in est.context_.groups] == [[0, 2], [1, 3]]
    assert np.allclose(est.predict_proba(X[250:]).sum(1), 1)


# ------------------------------------------------------------------ fine-tuning


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_fine_tune_keeps_the_best_and_never_touches_the_weights_on_disk(tmp_path, monkeypatch):
    from pfnkit.estimators._base import bundled_checkpoint

    monkeypatch.chdir(tmp_path)
    path = bundled_checkpoint("classification")
    before = _sha(path)
    X, y = data(500, 6, seed=1)
    est = PFNClassifier(
        n_estimators=2, fine_tune=FineTune(time_budget=8, lr=1e-4, eval_every=5)
    ).fit(X[:400], y[:400])
    report = est.fine_tune_report_
    assert report["kept"] in ("fine-tuned", "zero-shot") and report["steps"] >= 1
    if report["kept"] == "fine-tuned":
        assert report["best_loss"] < report["start_loss"]
        zero = PFNClassifier(n_estimators=2).fit(X[:400], y[:400])
        assert zero.model_ is not est.model_
    assert _sha(path) == before
    assert list(tmp_path.iterdir()) == []  # nothing written, so nothing half-written
    assert np.allclose(est.predict_proba(X[400:]).sum(1), 1)


def test_fine_tune_falls_back_to_zero_shot_when_it_does_not_help(ckpts):
    X, y = data(300, 5)
    zero = PFNClassifier(checkpoint=ckpts["classification"], n_estimators=2).fit(X, y)
    # a learning rate this small cannot move the validation loss past the threshold
    est = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=2,
        fine_tune=FineTune(time_budget=3, lr=1e-12, eval_every=2, patience=1),
    ).fit(X, y)
    assert est.fine_tune_report_["kept"] == "zero-shot"
    assert np.array_equal(est.predict_proba(X[:20]), zero.predict_proba(X[:20]))


def test_fine_tune_on_twenty_rows_warns_and_stays_zero_shot(ckpts):
    X, y = data(20, 3)
    with pytest.warns(UserWarning, match="min_rows"):
        est = PFNClassifier(checkpoint=ckpts["classification"], n_estimators=1, fine_tune=True).fit(
            X, y
        )
    assert est.fine_tune_report_["kept"] == "zero-shot"


def test_fine_tune_regressor_with_knn_contexts(ckpts):
    Xr, yr = make_regression(n_samples=240, n_features=4, noise=1.0, random_state=0)
    est = PFNRegressor(
        checkpoint=ckpts["regression"],
        n_estimators=2,
        context=KNNContext(k=20),
        fine_tune=FineTune(time_budget=3, eval_every=2, min_rows=50),
    ).fit(Xr[:200], yr[:200])
    assert est.fine_tune_report_["layout"] == "local"
    assert np.isfinite(est.predict(Xr[200:])).all()


# ------------------------------------------------------------------ wide tables


def test_pca_feature_reduction_reads_every_column(ckpts):
    X, y = data(200, 100)
    with pytest.warns(UserWarning, match="principal components"):
        est = PFNClassifier(
            checkpoint=ckpts["classification"],
            n_estimators=2,
            feature_reduction="pca",
            context="subsample",
        ).fit(X[:150], y[:150])
    f = est.model_.config.n_features
    assert all(m.features.n_out == f for m in est.members_)
    assert all(m.features.components is not None for m in est.members_)
    assert np.allclose(est.predict_proba(X[150:]).sum(1), 1)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: KNNContext(k=0), "'k' parameter of KNNContext must be an int >= 1"),
        (lambda: TunedContext(n_tokens=0), "'n_tokens' parameter of TunedContext"),
        (lambda: TunedContext(time_budget=0), "'time_budget' parameter of TunedContext"),
        (lambda: FineTune(time_budget=0.0), "'time_budget' parameter of FineTune"),
        (lambda: FineTune(lr=float("inf")), "'lr' parameter of FineTune"),
        (lambda: KNNContext(scale="row"), "'scale' parameter of KNNContext"),
        (lambda: KNNContext(mode="fast"), "'mode' parameter of KNNContext"),
        (lambda: MixedContext(()), "'strategies' parameter of MixedContext"),
    ],
)
def test_bad_options_name_the_parameter(make, match):
    with pytest.raises(InvalidConfigError, match=match):
        make()


def test_bad_estimator_context_and_fine_tune_values(ckpts):
    X, y = data(60, 3)
    with pytest.raises(ValueError, match="'context' parameter"):
        PFNClassifier(checkpoint=ckpts["classification"], context="nearest").fit(X, y)
    with pytest.raises(ValueError, match="'fine_tune' parameter"):
        PFNClassifier(checkpoint=ckpts["classification"], fine_tune="yes").fit(X, y)
    with pytest.raises(ValueError, match="'feature_reduction' parameter"):
        PFNClassifier(checkpoint=ckpts["classification"], feature_reduction="svd").fit(X, y)


def test_a_diverging_adaptation_run_keeps_the_best_finite_state(ckpts):
    X, y = data(300, 5)
    zero = PFNClassifier(checkpoint=ckpts["classification"], n_estimators=2).fit(X, y)
    est = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=2,
        fine_tune=FineTune(time_budget=5, lr=1e30, eval_every=1),
    ).fit(X, y)
    report = est.fine_tune_report_
    assert report["diverged"] and report["kept"] == "zero-shot"
    assert np.array_equal(est.predict_proba(X[:10]), zero.predict_proba(X[:10]))
    tuned = PFNClassifier(
        checkpoint=ckpts["classification"],
        n_estimators=1,
        context=TunedContext(n_tokens=8, time_budget=5, lr=1e30),
    ).fit(X, y)
    # prompts blown up to huge values stay finite through LayerNorm; early stopping keeps
    # the best validated ones either way
    report = tuned.context_.report
    assert "diverged" in report and report["best_loss"] <= report["start_loss"]
    assert np.isfinite(tuned.predict_proba(X[:10])).all()


def test_auto_reads_all_rows_a_little_past_the_limit_without_a_warning():
    import warnings as w

    X, y = data(400, 5, seed=5)
    with w.catch_warnings():
        w.simplefilter("error")
        est = PFNClassifier(n_estimators=2, max_context=340).fit(X, y)
    assert est.context_strategy_ == SubsampleContext(max_rows=400)
    assert est.context_.n_context_rows == 400
