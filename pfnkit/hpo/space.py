"""Search spaces: optuna distributions, read from YAML, encoded into [0, 1] for the surrogate.

A space file maps each hyperparameter to a distribution:

    lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
    width: {type: int, low: 16, high: 512, log: true}
    dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}
    optimizer: {type: categorical, choices: [adam, sgd, rmsprop]}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pfnkit.exceptions import InvalidConfigError
from pfnkit.registry import closest

TYPES = ("float", "int", "categorical")


def load_space(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions from a YAML file path or a dict of specs (or distributions)."""
    import optuna

    if isinstance(source, dict):
        spec = source
        where = "space"
    else:
        import yaml

        path = Path(source)
        if not path.is_file():
            raise InvalidConfigError(
                f"Space file '{source}' does not exist. Write a YAML file mapping each "
                "hyperparameter to e.g. {type: float, low: 0.0001, high: 0.1, log: true}."
            )
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InvalidConfigError(f"Space file '{source}' is not valid YAML: {e}") from None
        where = f"space file '{source}'"
    if not isinstance(spec, dict) or not spec:
        raise InvalidConfigError(f"The {where} must map hyperparameter names to distributions.")
    out: dict[str, Any] = {}
    for name, d in spec.items():
        if isinstance(d, optuna.distributions.BaseDistribution):
            out[str(name)] = d
            continue
        out[str(name)] = _distribution(str(name), d, where)
    return out


def _distribution(name: str, d: Any, where: str) -> Any:
    import optuna.distributions as od

    if not isinstance(d, dict) or "type" not in d:
        raise InvalidConfigError(
            f"Hyperparameter {name!r} in the {where} needs a mapping with a 'type' "
            f"({', '.join(TYPES)}). Got {d!r}."
        )
    kind = d["type"]
    if kind not in TYPES:
        hint = closest(str(kind), list(TYPES))
        raise InvalidConfigError(
            f"Hyperparameter {name!r} in the {where}: unknown distribution type {kind!r}. "
            f"Allowed: {', '.join(TYPES)}." + (f" Did you mean {hint!r}?" if hint else "")
        )
    allowed = {
        "float": {"type", "low", "high", "log", "step"},
        "int": {"type", "low", "high", "log", "step"},
        "categorical": {"type", "choices"},
    }[kind]
    extra = sorted(set(d) - allowed)
    if extra:
        raise InvalidConfigError(
            f"Hyperparameter {name!r} ({kind}) in the {where}: unknown key(s) {extra}. "
            f"Allowed: {', '.join(sorted(allowed))}."
        )
    try:
        if kind == "categorical":
            choices = d.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ValueError("'choices' must be a non-empty list")
            return od.CategoricalDistribution(choices)
        if "low" not in d or "high" not in d:
            raise ValueError("'low' and 'high' are required")
        for key in ("low", "high", "step"):
            value = d.get(key)
            # not a number at all: the conversion below refuses it
            if value is not None and _is_number(value) and not math.isfinite(float(value)):
                raise ValueError(f"'{key}' must be a finite number, not {value!r}")
        if kind == "float":
            return od.FloatDistribution(
                float(d["low"]),
                float(d["high"]),
                log=bool(d.get("log", False)),
                step=None if d.get("step") is None else float(d["step"]),
            )
        return od.IntDistribution(
            int(d["low"]),
            int(d["high"]),
            log=bool(d.get("log", False)),
            step=int(d.get("step", 1)),
        )
    except (ValueError, TypeError) as e:
        raise InvalidConfigError(
            f"Hyperparameter {name!r} ({kind}) in the {where} is invalid: {e}. Got {d!r}."
        ) from None


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def encode(params: dict[str, Any], space: dict[str, Any]) -> np.ndarray:
    """One configuration -> (d,) values in [0, 1] (log scale for log distributions,
    choice index / (k - 1) for categoricals)."""
    import optuna.distributions as od

    out = np.empty(len(space))
    for j, (name, dist) in enumerate(space.items()):
        v = params[name]
        if isinstance(dist, od.CategoricalDistribution):
            k = len(dist.choices)
            out[j] = dist.to_internal_repr(v) / (k - 1) if k > 1 else 0.5
            continue
        lo, hi, x = float(dist.low), float(dist.high), float(v)
        if dist.log:
            lo, hi, x = math.log(lo), math.log(hi), math.log(x)
        out[j] = 0.5 if hi == lo else (x - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0)


def sample_configs(space: dict[str, Any], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """n configurations drawn uniformly (log-uniformly for log distributions)."""
    import optuna.distributions as od

    configs: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, dist in space.items():
        if isinstance(dist, od.CategoricalDistribution):
            idx = rng.integers(0, len(dist.choices), n)
            vals: list[Any] = [dist.choices[i] for i in idx]
        elif isinstance(dist, od.IntDistribution):
            if dist.log:
                u = rng.uniform(math.log(dist.low - 0.5 + 1e-9), math.log(dist.high + 0.5), n)
                raw = np.exp(u)
            else:
                raw = rng.uniform(dist.low - 0.5, dist.high + 0.5, n)
            step = dist.step
            grid = dist.low + np.round((raw - dist.low) / step) * step
            vals = [int(min(max(g, dist.low), dist.high)) for g in grid]
        else:
            lo, hi = float(dist.low), float(dist.high)
            raw = (
                np.exp(rng.uniform(math.log(lo), math.log(hi), n))
                if dist.log
                else rng.uniform(lo, hi, n)
            )
            if dist.step is not None:
                raw = lo + np.round((raw - lo) / dist.step) * dist.step
            vals = [float(min(max(r, lo), hi)) for r in raw]
        for c, v in zip(configs, vals):
            c[name] = v
    return configs
