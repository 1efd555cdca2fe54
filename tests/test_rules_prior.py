"""RulePrior: the contract, the rule each family claims, class balance, errors, the v2
recipe, and that a briefly trained network learns a rule the bundled one does not."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors import (
    PRIORS,
    BatchShape,
    MixturePrior,
    RulePrior,
    Uniform,
    build_prior,
    step_generator,
)
from pfnkit.priors.rules import FAMILIES
from pfnkit.testing import check_prior

ROOT = Path(__file__).resolve().parents[1]
EXACT = dict(label_noise=0.0, missing_datasets=0.0)  # labels are the rule itself


def _sample(prior: RulePrior, b=32, n=200, f=12, step=0):
    return prior.sample(BatchShape(b, n, f, n // 2), generator=step_generator(0, step)).validate()


@pytest.mark.parametrize(
    "prior",
    [
        RulePrior(),
        RulePrior(families=("parity",), max_categories=2, **EXACT),
        RulePrior(families=("lookup", "decision_list"), max_classes=3, categorical_share=0.0),
        RulePrior(max_rule_cells=1, min_features=3, label_noise=0.3, missing_datasets=1.0),
        RulePrior(onehot_share=1.0, max_categories=30, missing_datasets=1.0),
    ],
    ids=repr,
)
def test_rule_prior_contract(prior):
    check_prior(prior)
    check_prior(prior, n_features=40)


def test_registered_and_built_by_name():
    assert PRIORS.get("rules") is RulePrior
    p = build_prior({"name": "rules", "families": ["parity", "dnf"], "label_noise": 0.0})
    assert p == RulePrior(families=("parity", "dnf"), label_noise=0.0)


def _rule_codes(batch, i):
    cells = batch.extras["rule_cells"][i]
    cells = cells[cells >= 0]
    return cells, batch.x[i][:, cells]


@pytest.mark.parametrize("family", FAMILIES)
def test_label_is_a_function_of_the_named_cells(family):
    # all-categorical tables without noise: equal codes in the rule's cells, equal label
    prior = RulePrior(families=(family,), categorical_share=1.0, max_categories=3, **EXACT)
    b = _sample(prior, b=24, n=300, f=15)
    assert (b.extras["rule_family"] == FAMILIES.index(family)).all()
    for i in range(b.batch_size):
        cells, codes = _rule_codes(b, i)
        assert 1 <= len(cells) <= prior.max_rule_cells
        assert (cells < b.n_features[i]).all()
        labels: dict[tuple, float] = {}
        for row, label in zip(codes.tolist(), b.target_y[i].tolist(), strict=True):
            assert labels.setdefault(tuple(row), label) == label, (family, i, row)


def test_parity_label_is_the_xor_of_the_named_cells():
    prior = RulePrior(
        families=("parity",), categorical_share=1.0, max_categories=2, min_features=4, **EXACT
    )
    b = _sample(prior, b=32, n=200, f=20)
    for i in range(b.batch_size):
        cells, codes = _rule_codes(b, i)
        assert 2 <= len(cells) <= 4
        xor = codes.sum(-1) % 2
        agree = (xor == b.target_y[i]).float().mean()
        assert agree in (0.0, 1.0), float(agree)  # up to which class is called 1


def test_numeric_cell_tests_are_thresholds():
    # one numeric cell, one test (a parity of one cell): sorted by that cell, the label
    # switches exactly once
    prior = RulePrior(families=("parity",), categorical_share=0.0, max_rule_cells=1, **EXACT)
    b = _sample(prior, b=32, n=200, f=10)
    assert not b.extras["categorical"].any()
    for i in range(b.batch_size):
        cells, values = _rule_codes(b, i)
        y = b.target_y[i][values[:, 0].argsort()]
        assert int((y[1:] != y[:-1]).sum()) == 1


def test_label_noise_is_the_share_of_labels_replaced():
    prior = RulePrior(
        families=("parity",), categorical_share=1.0, max_categories=2, label_noise=0.2,
        missing_datasets=0.0,
    )  # fmt: skip
    b = _sample(prior, b=64, n=400, f=8)
    agree = []
    for i in range(b.batch_size):
        _, codes = _rule_codes(b, i)
        a = float(((codes.sum(-1) % 2) == b.target_y[i]).float().mean())
        agree.append(max(a, 1 - a))
    # a replaced label is a random class: it disagrees with the rule half the time
    assert 0.86 < sum(agree) / len(agree) < 0.94


def test_class_shares_are_not_degenerate_and_imbalance_occurs():
    prior = RulePrior()
    shares, binary_pos = [], []
    for step in range(4):
        b = _sample(prior, b=64, n=256, f=30, step=step)
        for i in range(b.batch_size):
            counts = torch.bincount(b.target_y[i].long(), minlength=int(b.n_classes[i]))
            assert len(counts) == int(b.n_classes[i])
            shares.append(float(counts.max()) / 256)
            if int(b.n_classes[i]) == 2:
                binary_pos.append(float(counts[1]) / 256)
    assert max(shares) <= 1 - prior.min_class_share
    assert 0.3 < sum(binary_pos) / len(binary_pos) < 0.7  # no bias to one class id
    assert sum(s > 0.75 for s in shares) > 0.1 * len(shares)  # imbalanced tables exist
    assert sum(s < 0.6 for s in shares) > 0.2 * len(shares)  # and balanced ones


def test_tables_look_like_real_tables():
    prior = RulePrior(missing_datasets=1.0, missing_share=0.1)
    b = _sample(prior, b=16, n=300, f=100)
    cat = b.extras["categorical"]
    assert cat.any() and not cat.all()
    codes = b.x[:, :, :][cat[:, None, :].expand_as(b.x)]
    codes = codes[~torch.isnan(codes)]
    assert (codes == codes.round()).all() and codes.min() >= 0 and codes.max() < 10
    assert 0.05 < float(torch.isnan(b.x).float().sum() / (b.n_features.sum() * 300)) < 0.15
    assert b.n_features.max() > 50  # wide tables, most columns irrelevant
    assert (b.extras["rule_cells"] >= 0).sum(1).max() <= prior.max_rule_cells
    # the rule's cells are spread over the columns, not the first few
    assert b.extras["rule_cells"].max() > 20


def test_onehot_presentation_is_the_code_table_expanded():
    # the one-hot draw comes after every other draw: the same generator gives the same
    # table as codes (onehot_share=0) and, for the tables drawn one-hot, that table with
    # its categorical columns of 3-10 seen categories expanded, as the estimators do
    kw = dict(missing_datasets=0.5, missing_share=0.2)
    codes = _sample(RulePrior(**kw), b=48, n=150, f=30)
    hot = _sample(RulePrior(onehot_share=1.0, **kw), b=48, n=150, f=30)
    assert torch.equal(hot.target_y, codes.target_y)
    assert torch.equal(hot.extras["rule_cells"], codes.extras["rule_cells"])
    expanded = hot.extras["onehot"]
    assert 0 < int(expanded.sum()) < 48  # narrow tables expand, wide ones stay codes
    for i in range(48):
        x, d = codes.x[i], int(codes.n_features[i])
        cat = codes.extras["categorical"][i]
        if not bool(expanded[i]):
            assert torch.equal(hot.x[i].nan_to_num(-9), x.nan_to_num(-9))
            # a table left as codes has no column of 3-10 categories, or would not fit
            seen = [int(torch.unique(x[:, j][~x[:, j].isnan()]).numel()) for j in range(d)]
            wide = [j for j in range(d) if cat[j] and 3 <= seen[j] <= 10]
            assert not wide or d + sum(seen[j] - 1 for j in wide) > 30
            continue
        wide = [
            j for j in range(d)
            if cat[j] and 3 <= torch.unique(x[:, j][~x[:, j].isnan()]).numel() <= 10
        ]  # fmt: skip
        kept = [j for j in range(d) if j not in wide]
        xh, dh = hot.x[i], int(hot.n_features[i])
        assert torch.equal(xh[:, : len(kept)].nan_to_num(-9), x[:, kept].nan_to_num(-9))
        assert (xh[:, dh:] == 0).all() and dh <= 30
        assert hot.extras["categorical"][i, :dh].tolist() == cat[kept].tolist() + [True] * (
            dh - len(kept)
        )
        at = len(kept)
        for j in wide:
            levels = torch.unique(x[:, j][~x[:, j].isnan()])
            block = xh[:, at : at + len(levels)]
            at += len(levels)
            missing = x[:, j].isnan()
            assert block[missing].isnan().all() and not block[~missing].isnan().any()
            assert (block[~missing].sum(1) == 1).all()  # exactly one category per row
            assert torch.equal(levels[block[~missing].argmax(1)], x[~missing, j])
        assert at == dh


def test_onehot_share_zero_samples_exactly_as_before():
    a = _sample(RulePrior(), b=16, n=100, f=20, step=3)
    b = _sample(RulePrior(onehot_share=0.0), b=16, n=100, f=20, step=3)
    assert torch.equal(a.x.nan_to_num(-9), b.x.nan_to_num(-9)) and "onehot" not in a.extras


def test_onehot_recipe_is_the_deep_recipe_with_onehot_rule_tables():
    from pfnkit.train.recipe import load_recipe

    deep = load_recipe(ROOT / "priors" / "tabular-clf-deep.toml")
    onehot = load_recipe(ROOT / "priors" / "tabular-clf-onehot.toml")
    assert onehot["model"] == deep["model"] and onehot["train"] == deep["train"]
    rules = onehot["prior"]["components"][3]
    assert rules.pop("onehot_share") == 0.5
    assert onehot["prior"] == deep["prior"]
    check_prior(build_prior(load_recipe(ROOT / "priors" / "tabular-clf-onehot.toml")["prior"]))


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("task", "regression", "'classification'"),
        ("max_classes", 1, "an int >= 2"),
        ("max_categories", 50, "an int in [2, 30]"),
        ("max_rule_cells", 0, "an int in [1, 32]"),
        ("min_features", 0, "an int >= 1"),
        ("families", ("xor",), "unknown family 'xor'"),
        ("families", (), "non-empty"),
        ("label_noise", 1.5, "a share in [0, 1]"),
        ("categorical_share", Uniform(-0.1, 0.5), "a share in [0, 1]"),
        ("missing_datasets", math.nan, "a share in [0, 1]"),
        ("min_class_share", 0.5, "in [0, 0.5)"),
        ("onehot_share", 1.5, "a probability in [0, 1]"),
        ("onehot_share", Uniform(0.0, 1.0), "a probability in [0, 1]"),
    ],
)
def test_bad_hyperparameters_name_the_field(field, value, allowed):
    with pytest.raises(InvalidConfigError, match=f"RulePrior.{field} must|RulePrior.{field} holds"):
        RulePrior(**{field: value})
    with pytest.raises(InvalidConfigError) as e:
        RulePrior(**{field: value})
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_recipe_error_is_one_line():
    with pytest.raises(InvalidConfigError, match="RulePrior.families") as e:
        build_prior({"name": "rules", "families": ["parity", "xor"]})
    assert "\n" not in str(e.value)


def test_v2_recipe_mixes_in_the_rule_component():
    from pfnkit.train.recipe import load_recipe

    recipe = load_recipe(ROOT / "priors" / "tabular-clf-v2.toml")
    prior = build_prior(recipe["prior"])
    assert isinstance(prior, MixturePrior)
    rules = [i for i, c in enumerate(prior.components) if isinstance(c, RulePrior)]
    assert len(rules) == 1
    assert prior.weights is not None
    assert prior.weights[rules[0]] / sum(prior.weights) == pytest.approx(0.2)
    assert recipe["model"]["n_features"] == 100 and recipe["train"]["rows"] == 1024
    assert prior.max_classes == recipe["model"]["n_classes"]
    # the small-table continuation trains on the very same prior and network
    v3 = load_recipe(ROOT / "priors" / "tabular-clf-v3.toml")
    assert v3["prior"] == recipe["prior"] and v3["model"] == recipe["model"]
    assert v3["train"]["small_share"] == 0.5
    # the deep continuation: the same prior, the network grown to 8 layers (pfnkit grow)
    deep = load_recipe(ROOT / "priors" / "tabular-clf-deep.toml")
    assert deep["prior"] == recipe["prior"]
    assert {**deep["model"], "n_layers": recipe["model"]["n_layers"]} == recipe["model"]
    assert deep["model"]["n_layers"] == 2 * recipe["model"]["n_layers"]


def test_v2_regression_recipe_reads_100_features_and_1024_rows():
    from pfnkit.priors import BatchShape
    from pfnkit.train.recipe import load_recipe

    recipe = load_recipe(ROOT / "priors" / "tabular-reg-v2.toml")
    prior = build_prior(recipe["prior"])
    assert recipe["model"]["n_features"] == 100 and recipe["train"]["rows"] == 1024
    check_prior(prior, n_features=100)
    b = prior.sample(BatchShape(2, 64, 100, 48), generator=torch.Generator().manual_seed(0))
    assert b.x.shape == (2, 64, 100) and torch.isfinite(b.y).all()


# ---------------------------------------------------------------- learns what the old one misses


def _parity3_tables(seed: int, b=32, n=512, f=10):
    """Held-out task: the label is the XOR of three binary cells, among 7 three-valued
    distractor columns, in a random column order (not drawn from the prior)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (b, n, f), generator=g).float()
    x[:, :, :3] = torch.randint(0, 2, (b, n, 3), generator=g).float()
    y = x[:, :, :3].sum(-1) % 2
    perm = torch.rand(b, f, generator=g).argsort(-1)
    return torch.gather(x, 2, perm[:, None, :].expand(b, n, f)), y


def _accuracy_and_nll(model, n_ctx=256):
    acc, nll = [], []
    for seed in (1000, 1001):
        x, y = _parity3_tables(seed)
        with torch.no_grad():
            p = model.predict_proba(x, y[:, :n_ctx], 2)[..., 1].clamp(1e-6, 1 - 1e-6)
        t = y[:, n_ctx:]
        acc.append(float(((p > 0.5).float() == t).float().mean()))
        nll.append(float(-(t * p.log() + (1 - t) * (1 - p).log()).mean()))
    return sum(acc) / len(acc), sum(nll) / len(nll)


def _brief_network(prior, seed):
    from pfnkit.model.config import PFNConfig
    from pfnkit.train.config import TrainConfig
    from pfnkit.train.loop import Trainer

    model = PFNConfig(
        task="classification", n_features=10, d_model=64, n_layers=2, n_heads=4,
        n_classes=10, normalize_x=True,
    )  # fmt: skip
    train = TrainConfig(
        steps=1000, batch_size=4, rows=256, min_context=64, lr=3e-3, device="cpu", seed=seed
    )
    trainer = Trainer(prior, model, train)
    trainer.run()
    return trainer.model.eval()


@pytest.mark.parametrize("seed", [0])
def test_brief_training_on_rules_learns_parity_the_old_prior_misses(seed):
    """Two small networks, 1,000 steps each (about 40 s on one core): one on the rule
    component, one on the v1 tabular prior (SCM tables, GP and BNN functions; no rules).
    Only the first reads held-out parity-3 tables: seed 0 gave 0.679 accuracy (NLL 0.589)
    against 0.600 (NLL 0.664); the margins asserted are under half of that. The v1 bundled
    network, which saw 128,000 v1-prior tables, scored 0.611 (NLL 0.657)."""
    from pathlib import Path

    from pfnkit.priors import build_prior
    from pfnkit.train.recipe import load_recipe

    rules = RulePrior(
        families=("parity", "lookup", "dnf"), max_classes=2, max_rule_cells=3,
        categorical_share=1.0, max_categories=8, **EXACT,
    )  # fmt: skip
    recipe = Path(__file__).resolve().parents[1] / "priors" / "tabular-clf.toml"
    old_acc, old_nll = _accuracy_and_nll(
        _brief_network(build_prior(load_recipe(recipe)["prior"]), seed)
    )
    new_acc, new_nll = _accuracy_and_nll(_brief_network(rules, seed))
    assert old_acc < 0.65, old_acc  # the old prior's network barely beats chance (0.5)
    assert new_acc > old_acc + 0.03, (new_acc, old_acc)
    assert new_nll < old_nll - 0.02, (new_nll, old_nll)


def test_the_bundled_classifier_reads_parity_the_v1_network_missed():
    """The bundled network (rule tables at 0.2 of its prior) on the same held-out parity-3
    tables, against 0.611 accuracy for the v1 network (no rules in its prior).

    Measured accuracy / NLL: v2 0.712 / 0.604; v3-deep (v2 grown to 8 layers, 4,143 steps
    more) 0.682 / 0.648; v3-deep2 (3,173 steps more) 0.673 / 0.657; v3-deep3 (4,167 more)
    0.661 / 0.658; v3-deep4 (3,221 more) 0.649 / 0.661; v3-deep5 (3,540 more with parity
    drawn twice as often among the rule families) 0.698 / 0.645; v3-deep7 (bundled, 3,493
    more on the even mix with one-hot rule tables) 0.641 / 0.661 (v1: 0.611 / 0.657).
    Every continuation on the even mix lost parity-3 while the prior's rule tables as a
    whole and the real tables improved (v3-deep7: rule-table NLL 0.5653 -> 0.5640, KEEL
    mean AUC 0.8785 -> 0.8792); the parity-heavy mix won it back but cost KEEL AUC. The
    bound, 0.63, still separates the bundled network from the v1 network's 0.611."""
    from pfnkit.train.checkpoint import bundled_checkpoint_path, load_checkpoint

    net = load_checkpoint(bundled_checkpoint_path("tabular-clf.safetensors", "the test"))
    acc, _ = _accuracy_and_nll(net)
    assert acc > 0.63, acc
