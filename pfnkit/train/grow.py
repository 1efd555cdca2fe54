"""Growing a trained PFN deeper without changing what it computes.

``grow_layers`` turns a checkpoint of L layers into one of L' > L layers that gives the
same outputs: the old layers keep their weights and order, and each new layer is a copy of
the old layer below it with its residual outputs (every attention's output projection and
the FFN's output) set to zero, so it starts as the identity. Training the grown network
(``pfnkit train-prior --init-from``) then starts from the old network's loss instead of a
random one, with more capacity to use (depth growth in the manner of Net2Net's identity
layers; the copied attention and FFN weights give the new layers useful inputs from the
first step).

Shape legend: none (whole state dicts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from pfnkit.exceptions import InvalidConfigError


def layer_sources(old: int, new: int) -> list[tuple[int, bool]]:
    """For each of ``new`` layers: (the old layer it comes from, whether it is a new copy).

    The old layers are spread evenly and keep their order; each new layer sits just above
    the old layer it copies (4 -> 8: 0, 0', 1, 1', 2, 2', 3, 3')."""
    sources, seen = [], set()
    for j in range(new):
        src = j * old // new
        sources.append((src, src in seen))
        seen.add(src)
    return sources


def zero_residual_outputs(layer: nn.Module) -> None:
    """Make a layer the identity: zero each residual branch's last projection."""
    from pfnkit.model.ffn import FFNBlock
    from pfnkit.model.transformer import SplitAttention

    for module in layer.modules():
        if isinstance(module, SplitAttention):
            nn.init.zeros_(module.out.weight)
            nn.init.zeros_(module.out.bias)
        elif isinstance(module, FFNBlock):
            module.zero_init_output()


def grow_layers(data: dict[str, Any], n_layers: Any, source: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint dict like ``data`` whose network has ``n_layers`` layers and computes
    the same function (see the module docstring).

    The result keeps ``data``'s prior, train config, step, metrics and calibration (the
    function, hence its calibration, is unchanged), drops optimizer and RNG state (a grown
    network starts a new run: ``--init-from``, not ``--resume``) and records the growth
    under ``"grown"``. ``source`` names the checkpoint in error messages.
    """
    from pfnkit.model import PFNConfig, build_model
    from pfnkit.train.checkpoint import model_from_data

    config = PFNConfig.from_dict(data["model_config"])
    old = config.n_layers
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers <= old:
        raise InvalidConfigError(
            f"The 'n_layers' parameter must be an int greater than the network's {old} "
            f"layers (of '{source}'). Got {n_layers!r} instead. Ask for more layers, e.g. "
            f"{2 * old}."
        )
    model = model_from_data(data, source)
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) != old:
        raise InvalidConfigError(
            f"'{source}' holds a {type(model).__name__}, which has no stack of {old} layers "
            "to grow; only tabular and curve PFNs built by pfnkit can be grown."
        )
    grown_config = dataclasses.replace(config, n_layers=n_layers)
    state = data["state_dict"]
    grown = build_model(grown_config, borders=state.get("bar_distribution.borders"))
    grown_state = grown.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("layers."):
            grown_state[name] = value.clone()
    grown.load_state_dict(grown_state)
    for j, (src, is_copy) in enumerate(layer_sources(old, n_layers)):
        grown.layers[j].load_state_dict(layers[src].state_dict())
        if is_copy:
            zero_residual_outputs(grown.layers[j])
    out = {k: v for k, v in data.items() if k not in ("optimizer", "rng_state", "state_dict")}
    out["model_config"] = grown_config.to_dict()
    out["state_dict"] = grown.state_dict()
    out["grown"] = {"from_layers": old, "to_layers": n_layers, "previous": data.get("grown")}
    return out
