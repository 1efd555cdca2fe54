"""Growing a trained PFN deeper (``pfnkit grow``): same outputs, then it trains."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from pfnkit.cli import app as cli_app
from pfnkit.exceptions import InvalidConfigError
from pfnkit.model import PFNConfig, build_model
from pfnkit.priors import GPPrior
from pfnkit.train import TrainConfig, Trainer
from pfnkit.train.checkpoint import card_markdown, model_from_data, read_checkpoint
from pfnkit.train.grow import grow_layers, layer_sources


def checkpoint_of(config: PFNConfig, seed: int = 0) -> dict:
    """A checkpoint dict of a network whose every weight is random: a fresh PFN starts
    as the identity in each layer, which would make any growth look exact."""
    torch.manual_seed(seed)
    model = build_model(config, borders=torch.linspace(-3, 3, 11) if config.n_bars else None)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return {
        "format_version": 1,
        "model_config": config.to_dict(),
        "state_dict": model.state_dict(),
        "step": 7,
        "optimizer": {"state": {}},
        "calibration": {"softmax_temperature": 0.8},
    }


def outputs(data: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model = model_from_data(data, "test").eval()
    with torch.no_grad():
        return model(x, y)


@pytest.mark.parametrize(
    "config",
    [
        PFNConfig(task="classification", n_features=5, n_classes=3, d_model=16, n_layers=2,
                  n_heads=2, normalize_x=True),
        PFNConfig(task="regression", n_features=5, d_model=16, n_layers=3, n_heads=2,
                  n_bars=10, ffn="glu"),
        PFNConfig(task="classification", n_features=5, n_classes=3, d_model=16, n_layers=2,
                  n_heads=2, tokens="cell"),
    ],
    ids=["row-tokens", "regression-glu", "cell-tokens"],
)  # fmt: skip
def test_grown_network_computes_the_same_function(config):
    data = checkpoint_of(config)
    x = torch.randn(2, 30, 5)
    y = (
        torch.randint(0, 3, (2, 20)).float()
        if config.task == "classification"
        else torch.randn(2, 20)
    )
    before = outputs(data, x, y)
    for n_layers in (config.n_layers + 1, 2 * config.n_layers, 3 * config.n_layers + 1):
        grown = grow_layers(data, n_layers)
        assert grown["model_config"]["n_layers"] == n_layers
        torch.testing.assert_close(outputs(grown, x, y), before, rtol=0, atol=1e-5)
    # metadata: the function's calibration stays, the optimizer state of the old shape goes
    assert "optimizer" not in grown and grown["calibration"] == data["calibration"]
    assert grown["grown"]["from_layers"] == config.n_layers
    assert grown["step"] == 7
    # the old layers keep their weights; a new layer copies the one below, outputs at zero
    g = model_from_data(grown, "test")
    old = model_from_data(data, "test")
    sources = layer_sources(config.n_layers, n_layers)
    for j, (src, is_copy) in enumerate(sources):
        for name, value in old.layers[src].state_dict().items():
            new_value = g.layers[j].state_dict()[name]
            if is_copy and (".out." in name or name.startswith("ffn.down")):
                assert not new_value.any(), (j, name)
            else:
                assert torch.equal(new_value, value), (j, name)


def test_layer_sources_spread_old_layers_and_keep_their_order():
    assert layer_sources(4, 8) == [(i // 2, i % 2 == 1) for i in range(8)]
    assert layer_sources(4, 6) == [(0, False), (0, True), (1, False), (2, False), (2, True),
                                   (3, False)]  # fmt: skip
    assert [s for s, copy in layer_sources(3, 10) if not copy] == [0, 1, 2]


@pytest.mark.parametrize("bad", [2, 1, 0, 2.5, True, "8"])
def test_grow_refuses_no_more_layers(bad):
    config = PFNConfig(task="regression", n_features=3, d_model=16, n_layers=2, n_heads=2,
                       n_bars=10)  # fmt: skip
    with pytest.raises(InvalidConfigError, match="'n_layers' parameter must be an int greater"):
        grow_layers(checkpoint_of(config), bad)


def test_grown_checkpoint_trains_and_its_card_says_so(tmp_path, tiny_model_kwargs,
                                                       tiny_train_kwargs):  # fmt: skip
    model = PFNConfig(**tiny_model_kwargs)
    Trainer(
        GPPrior(), model, TrainConfig(**{**tiny_train_kwargs, "steps": 2}), tmp_path / "src"
    ).run()
    runner = CliRunner()
    grown_path = tmp_path / "grown.safetensors"
    r = runner.invoke(
        cli_app.app,
        ["grow", str(tmp_path / "src"), str(grown_path), "--layers", str(2 * model.n_layers)],
    )
    assert r.exit_code == 0, r.output
    assert f"n_layers = {2 * model.n_layers}" in r.output
    grown = read_checkpoint(grown_path)
    assert "grown from 2 to 4 layers (`pfnkit grow`)" in card_markdown(grown, title="g")
    deeper = PFNConfig(**{**tiny_model_kwargs, "n_layers": 2 * model.n_layers})
    warm = Trainer(GPPrior(), deeper, TrainConfig(**{**tiny_train_kwargs, "steps": 2}),
                   tmp_path / "warm", init_from=grown_path)  # fmt: skip
    warm.run()
    state = read_checkpoint(tmp_path / "warm")
    assert state["init_from"]["grown"]["to_layers"] == 2 * model.n_layers
    card = card_markdown(state, title="w")
    assert f"grown from {model.n_layers} to {2 * model.n_layers} layers" in card
    # errors are one line naming what to change
    for args, expected in (
        (["--layers", str(model.n_layers)], "'n_layers' parameter must be an int greater"),
        (["--layers", "9"], "OUT must end in .safetensors"),
    ):
        out = tmp_path / ("x.pt" if "9" in args else "y.safetensors")
        r = runner.invoke(cli_app.app, ["grow", str(tmp_path / "src"), str(out), *args])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert r.output.startswith("Error:") and expected in r.output, r.output
