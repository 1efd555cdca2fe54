import pytest
import torch

from pfnkit.exceptions import InvalidConfigError, UnknownNameError
from pfnkit.model import ATTENTION_BACKENDS, FFN_BLOCKS, PFN, PFNConfig, attend
from pfnkit.model.ffn import build_ffn
from pfnkit.priors import BatchShape, BNNPrior, GPPrior, step_generator
from pfnkit.testing import check_ffn_block


def make(task="regression", **kw):
    torch.manual_seed(0)
    cfg = PFNConfig(task=task, n_features=3, d_model=32, n_layers=2, n_heads=4, n_bars=20, **kw)
    model = PFN(cfg)
    # break the zero init so that every layer matters in the tests
    for p in model.parameters():
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


BLOCK_OPTIONS = {
    "mlp": [{}],
    "glu": [{}, {"activation": "gelu"}, {"activation": "relu"}],
    "moe": [
        {},
        {"dispatch": "loop"},
        {"dispatch": "grouped"},
        {"router": "hash"},
        {"capacity_factor": 1.0, "top_k": 1, "n_experts": 4},
    ],
    "fff": [{}, {"depth": 2, "master_leaf": True, "balance_weight": 0.1}, {"depth": 0}],
    "lowrank": [{}, {"rank": 2}],
    "blockdiag": [{}, {"n_blocks": 2}],
    "topk": [{}, {"k": 3}],
    "semi24": [{}],
}


def test_every_block_has_contract_examples():
    assert set(FFN_BLOCKS.names()) <= set(BLOCK_OPTIONS), "add the new block to BLOCK_OPTIONS"


@pytest.mark.parametrize(
    "name, options", [(n, o) for n, opts in BLOCK_OPTIONS.items() for o in opts], ids=repr
)
def test_ffn_block_contract(name, options):
    if name == "semi24" and not torch.cuda.is_available():
        with pytest.raises(InvalidConfigError, match="CUDA"):
            build_ffn(name, 64, 128)
        return
    check_ffn_block(name, **options)


def test_ffn_options_are_checked():
    with pytest.raises(InvalidConfigError, match="Options: no options"):
        build_ffn("mlp", 8, 16, {"n_experts": 4})
    with pytest.raises(InvalidConfigError, match="Did you mean 'n_experts'"):
        build_ffn("moe", 8, 16, {"n_expert": 4})
    with pytest.raises(InvalidConfigError, match="must be of type int"):
        build_ffn("moe", 8, 16, {"top_k": "two"})
    with pytest.raises(InvalidConfigError, match="top_k must be in"):
        build_ffn("moe", 8, 16, {"top_k": 9})
    with pytest.raises(InvalidConfigError, match="depth must be in"):
        build_ffn("fff", 8, 16, {"depth": 5})
    with pytest.raises(InvalidConfigError, match="n_blocks must divide"):
        build_ffn("blockdiag", 8, 16, {"n_blocks": 3})
    with pytest.raises(InvalidConfigError, match="activation"):
        build_ffn("glu", 8, 16, {"activation": "tanhh"})
    with pytest.raises(UnknownNameError, match="Did you mean .moe."):
        PFNConfig(ffn="moe-typo")


def test_sdpa_matches_math_reference():
    q, k, v = torch.randn(2, 4, 9, 8), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)
    assert torch.allclose(
        attend(q, k, v, backend="sdpa"), attend(q, k, v, backend="math"), atol=1e-5
    )
    assert set(ATTENTION_BACKENDS.names()) >= {"sdpa", "math"}


def test_model_with_math_backend_matches_sdpa():
    x, y = torch.randn(2, 12, 3), torch.randn(2, 8)
    a = make()
    b = make(attention="math")
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a(x, y), b(x, y), atol=1e-5)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_permuting_context_rows_does_not_change_predictions(task):
    model = make(task)
    x = torch.randn(2, 15, 3)
    y = torch.randint(0, 3, (2, 10)).float() if task == "classification" else torch.randn(2, 10)
    perm = torch.randperm(10)
    x_perm = torch.cat([x[:, perm], x[:, 10:]], dim=1)
    out, out_perm = model(x, y), model(x_perm, y[:, perm])
    assert out.shape == (2, 5, model.config.n_outputs)
    assert torch.allclose(out, out_perm, atol=1e-5)


def test_test_rows_do_not_see_each_other():
    model = make()
    x, y = torch.randn(1, 12, 3), torch.randn(1, 8)
    full = model(x, y)
    single = model(torch.cat([x[:, :8], x[:, 10:11]], dim=1), y)
    assert torch.allclose(full[:, 2], single[:, 0], atol=1e-5)


def test_context_targets_matter():
    model = make()
    x = torch.randn(1, 12, 3)
    assert not torch.allclose(model(x, torch.randn(1, 8)), model(x, torch.randn(1, 8)))


def test_fewer_features_are_padded_and_rescaled():
    model = make()
    x, y = torch.randn(2, 10, 2), torch.randn(2, 6)
    padded = torch.cat([x, torch.zeros(2, 10, 1)], dim=-1)
    out = model(x, y)
    assert torch.allclose(out, model(padded, y, n_features=torch.tensor([2, 2])), atol=1e-5)
    # the rescaling makes a 2-feature dataset differ from the same zeros taken as 3 features
    assert not torch.allclose(out, model(padded, y))
    with pytest.raises(InvalidConfigError, match="at most 3"):
        model(torch.randn(2, 10, 4), y)


def test_bad_shapes_raise_clear_errors():
    model = make()
    with pytest.raises(InvalidConfigError, match="1 <= Nc < N"):
        model(torch.randn(1, 5, 3), torch.randn(1, 5))
    with pytest.raises(InvalidConfigError, match=r"x \(B, N, F\)"):
        model(torch.randn(5, 3), torch.randn(1, 2))


def test_config_roundtrip_and_validation():
    cfg = PFNConfig(task="classification", ffn="glu", ffn_options={"activation": "gelu"}, d_ffn=64)
    assert PFNConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.ffn_dim == 64 and PFNConfig().ffn_dim == 256
    with pytest.raises(InvalidConfigError, match="n_heads must divide d_model"):
        PFNConfig(d_model=30, n_heads=4)
    with pytest.raises(InvalidConfigError, match="Did you mean 'n_layers'"):
        PFNConfig.from_dict({"n_layer": 3})
    with pytest.raises(InvalidConfigError, match="int >= 1"):
        PFNConfig(n_layers=0)


def test_loss_is_finite_and_trainable_for_both_tasks():
    for task, prior in (
        ("regression", GPPrior()),
        ("classification", BNNPrior(task="classification")),
    ):
        model = make(task).train()
        batch = prior.sample(BatchShape(4, 30, 3, 20), generator=step_generator(0, 0))
        loss = model.loss(batch)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_classification_masks_missing_classes():
    model = make("classification")
    x, y = torch.randn(1, 10, 3), torch.randint(0, 3, (1, 6)).float()
    proba = model.predict_proba(x, y, n_classes=3)
    assert proba.shape == (1, 4, 10)
    assert torch.allclose(proba.sum(-1), torch.ones(1, 4))
    assert (proba[..., 3:] == 0).all()


def test_missing_values_are_embedded_not_propagated():
    model = make()
    torch.nn.init.normal_(model.x_encoder.missing.weight, std=0.5)
    x, y = torch.randn(1, 12, 3), torch.randn(1, 8)
    x_nan = x.clone()
    x_nan[0, 2, 1] = float("nan")
    x_inf = x.clone()
    x_inf[0, 2, 1] = float("inf")
    x_zero = x.clone()
    x_zero[0, 2, 1] = 0.0
    out = model(x_nan, y)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, model(x_zero, y))  # missing is not the same as 0
    assert torch.allclose(out, model(x_inf, y))  # inf counts as missing


def test_context_normalisation_makes_feature_scale_irrelevant():
    model = make(normalize_x=True)
    x, y = torch.randn(2, 14, 3), torch.randn(2, 9)
    shifted = x * torch.tensor([100.0, 0.01, 3.0]) + torch.tensor([5.0, -2.0, 1e3])
    assert torch.allclose(model(x, y), model(shifted, y), atol=1e-3)
    plain = make()
    assert not torch.allclose(plain(x, y), plain(shifted, y), atol=1e-3)


@pytest.mark.parametrize("normalize_x", [False, True])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_cached_context_matches_full_forward(task, normalize_x):
    model = make(task, normalize_x=normalize_x)
    x = torch.randn(2, 20, 3)
    x[0, 3, 1] = float("nan")
    y = torch.randint(0, 3, (2, 12)).float() if task == "classification" else torch.randn(2, 12)
    nf = torch.tensor([3, 2])
    full = model(x, y, n_features=nf)
    cache = model.encode_context(x[:, :12], y, n_features=nf)
    assert cache.n_ctx == 12
    assert torch.allclose(model.predict_cached(cache, x[:, 12:]), full, atol=1e-5)
    # the same cache serves other test rows too
    assert torch.allclose(model.predict_cached(cache, x[:, 15:]), full[:, 3:], atol=1e-5)


def test_row_inputs_enter_each_row_unnormalised_and_cached():
    model = make(normalize_x=True, n_row_inputs=2)
    x, y = torch.randn(2, 20, 3), torch.randn(2, 12)
    r = torch.randint(0, 2, (2, 20, 2)).float()
    full = model(x, y, row_inputs=r)
    # a query row's own inputs change its prediction and no other row's
    r2 = r.clone()
    r2[:, 15] = 1.0 - r2[:, 15]
    out = model(x, y, row_inputs=r2)
    assert not torch.allclose(out[:, 3], full[:, 3])
    assert torch.allclose(out[:, :3], full[:, :3]) and torch.allclose(out[:, 4:], full[:, 4:])
    # a context row's inputs reach every query (through the keys and values)
    r3 = r.clone()
    r3[:, 0] = 5.0
    assert not torch.allclose(model(x, y, row_inputs=r3), full)
    cache = model.encode_context(x[:, :12], y, row_inputs=r[:, :12])
    assert torch.allclose(model.predict_cached(cache, x[:, 12:], r[:, 12:]), full, atol=1e-5)
    # the extras mapping carries them from a Batch
    from pfnkit.priors import Batch

    batch = Batch(x=x, y=torch.randn(2, 20), target_y=torch.randn(2, 20), single_eval_pos=12)
    batch.y[:, :12] = y
    batch.extras["row_inputs"] = r
    assert torch.allclose(model(**model.inputs_of(batch)), full)


def test_row_inputs_are_checked_against_the_config():
    plain, with_rows = make(), make(n_row_inputs=2)
    x, y = torch.randn(1, 10, 3), torch.randn(1, 6)
    with pytest.raises(InvalidConfigError, match="row_inputs"):
        with_rows(x, y)
    with pytest.raises(InvalidConfigError, match=r"\(1, 10, 2\)"):
        with_rows(x, y, row_inputs=torch.zeros(1, 10, 3))
    with pytest.raises(InvalidConfigError, match="n_row_inputs=0"):
        plain(x, y, row_inputs=torch.zeros(1, 10, 2))
    # a PFN without row inputs keeps the state-dict keys of earlier checkpoints
    assert not any(k.startswith("row_encoder") for k in plain.state_dict())
    with pytest.raises(InvalidConfigError, match="n_row_inputs must be an int >= 0"):
        PFNConfig(n_row_inputs=-1)
    cfg = PFNConfig(n_row_inputs=3)
    assert PFNConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("capacity_factor", [0.0, 0.75])
def test_moe_dispatch_implementations_agree(capacity_factor):
    x = torch.randn(2, 40, 16)
    results = []
    for dispatch in ("loop", "sorted", "grouped"):
        torch.manual_seed(3)
        block = build_ffn("moe", 16, 32, {"dispatch": dispatch, "capacity_factor": capacity_factor})
        y = block(x)
        (y.square().sum() + block.aux_loss).backward()
        results.append((y.detach(), block.w1.grad.clone(), block.router.weight.grad.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.allclose(a, b, atol=1e-5)


def test_moe_capacity_drops_tokens_and_losses_are_collected():
    torch.manual_seed(0)
    block = build_ffn("moe", 16, 32, {"n_experts": 4, "top_k": 1, "capacity_factor": 0.25})
    x = torch.randn(64, 16)
    out = block(x)
    assert (out.abs().sum(-1) == 0).sum() >= 64 - 4 * 4  # at most 4 tokens per expert survive
    assert block.aux_loss is not None and block.aux_loss > 0
    model = PFN(PFNConfig(n_features=3, d_model=16, n_heads=2, n_layers=2, ffn="moe"))
    model(torch.randn(1, 10, 3), torch.randn(1, 6))
    assert model.aux_loss() is not None  # the trainer adds this to the loss
    model.eval()
    model(torch.randn(1, 10, 3), torch.randn(1, 6))
    assert model.aux_loss() is None


def test_fff_hard_descent_equals_hardened_soft_path():
    from pfnkit.model.ffn import FFFBlock

    torch.manual_seed(0)
    for master in (False, True):
        block = FFFBlock(16, 64, depth=3, master_leaf=master).eval()
        torch.nn.init.normal_(block.b1)
        torch.nn.init.normal_(block.b2)
        for rows in (1, 5, 300):  # the gather path and the grouped path
            x = torch.randn(rows, 16)
            soft = block.forward_soft(x, hard=True) + (block.master(x) if master else 0)
            assert torch.allclose(block(x), soft, atol=1e-5)
        leaves = block.leaf_index(torch.randn(1000, 16))
        assert leaves.min() >= 0 and leaves.max() < 8


def test_fff_hardening_pushes_decisions_apart():
    from pfnkit.model.ffn import FFFBlock

    torch.manual_seed(0)
    block = FFFBlock(8, 32, depth=2, hardening_weight=1.0, harden_steps=1)
    opt = torch.optim.Adam(block.parameters(), lr=0.05)
    x = torch.randn(256, 8)
    for _ in range(60):
        opt.zero_grad()
        block(x)
        block.aux_loss.backward()
        opt.step()
    p = torch.sigmoid(block.leaf_probs(x)[1])
    assert ((p < 0.1) | (p > 0.9)).float().mean() > 0.8
    assert int(block.step) == 60  # the ramp counter is saved in the state dict
    assert "step" in block.state_dict()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_chunked_attention_matches_unchunked(backend):
    q, k, v = torch.randn(2, 2, 37, 8), torch.randn(2, 2, 11, 8), torch.randn(2, 2, 11, 8)
    full = attend(q, k, v, backend=backend)
    assert torch.allclose(attend(q, k, v, backend=backend, chunk_rows=5), full, atol=1e-6)
    a = make()
    b = make(attention_chunk=3)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(2, 20, 3), torch.randn(2, 12)
    assert torch.allclose(a(x, y), b(x, y), atol=1e-5)


def test_topk_gather_path_matches_dense_path():
    from pfnkit.model.ffn import TopKBlock

    torch.manual_seed(0)
    block = TopKBlock(16, 64, k=5).eval()
    torch.nn.init.normal_(block.down.bias)
    x = torch.randn(3, 16)
    dense = block.down(torch.zeros(3, 64).scatter(-1, *reversed(torch.relu(block.up(x)).topk(5))))
    assert torch.allclose(block(x), dense, atol=1e-5)
    assert block(torch.randn(100, 16)).shape == (100, 16)  # the dense path for many rows
