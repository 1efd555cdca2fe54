"""Priors: distributions over datasets that PFNs are trained on.

``PRIORS`` maps a name to a prior class; ``build_prior`` turns a recipe table (a dict, as
read from TOML) into a prior and ``prior_to_dict`` turns it back.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from pfnkit.exceptions import InvalidConfigError
from pfnkit.priors._base import (
    Batch,
    BatchShape,
    Choice,
    LogUniform,
    Prior,
    Uniform,
    hyperprior_from_dict,
    hyperprior_to_dict,
    step_generator,
    step_seed,
)
from pfnkit.priors.bnn import BNNPrior
from pfnkit.priors.causal import CausalPrior
from pfnkit.priors.freeze_thaw import FreezeThawPrior
from pfnkit.priors.gp import GPPrior
from pfnkit.priors.learning_curves import LearningCurvePrior
from pfnkit.priors.mixture import MixturePrior
from pfnkit.priors.rules import RulePrior
from pfnkit.priors.scm import SCMPrior
from pfnkit.registry import Registry, closest

PRIORS: Registry[type] = Registry("prior")
PRIORS.register("gp", GPPrior)
PRIORS.register("bnn", BNNPrior)
PRIORS.register("scm", SCMPrior)
PRIORS.register("rules", RulePrior)
PRIORS.register("mixture", MixturePrior)
PRIORS.register("learning_curve", LearningCurvePrior)
PRIORS.register("freeze_thaw", FreezeThawPrior)
PRIORS.register("causal", CausalPrior)

__all__ = [
    "PRIORS",
    "Batch",
    "BatchShape",
    "BNNPrior",
    "CausalPrior",
    "Choice",
    "FreezeThawPrior",
    "GPPrior",
    "LearningCurvePrior",
    "LogUniform",
    "MixturePrior",
    "RulePrior",
    "SCMPrior",
    "Prior",
    "Uniform",
    "build_prior",
    "prior_to_dict",
    "step_generator",
    "step_seed",
]


def prior_to_dict(prior: Any) -> dict[str, Any]:
    """The recipe table of a prior: ``{"name": ..., field: value, ...}``."""
    if isinstance(prior, MixturePrior):
        out: dict[str, Any] = {
            "name": "mixture",
            "components": [prior_to_dict(c) for c in prior.components],
        }
        if prior.weights is not None:
            out["weights"] = list(prior.weights)
        return out
    out = {"name": prior_name(type(prior))}
    for f in dataclasses.fields(prior):
        out[f.name] = hyperprior_to_dict(getattr(prior, f.name))
    return out


def prior_name(cls: type) -> str:
    """The registered name of a prior class, else its import path "module:ClassName"."""
    name = getattr(cls, "name", None)
    if isinstance(name, str) and name in PRIORS and PRIORS.get(name) is cls:
        return name
    return f"{cls.__module__}:{cls.__qualname__}"


def prior_class(name: str) -> type:
    """Look up a registered prior, or import one given as "package.module:ClassName"."""
    if ":" not in name:
        return PRIORS.get(name)
    module_name, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise InvalidConfigError(
            f"Cannot import prior {name!r} ({e}). Give a registered name "
            f"({', '.join(PRIORS.names())}) or an importable 'package.module:ClassName'."
        ) from None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and hasattr(cls, "sample")):
        raise InvalidConfigError(
            f"{name!r} is not a prior class: a prior is a dataclass with a sample() method."
        )
    return cls


def build_prior(recipe: dict[str, Any] | str) -> Any:
    """Build a prior from its name or recipe table; misspelled fields fail loudly."""
    if isinstance(recipe, str):
        recipe = {"name": recipe}
    recipe = dict(recipe)
    if "name" not in recipe:
        raise InvalidConfigError(
            f"A prior recipe needs a 'name' (one of {', '.join(PRIORS.names())}). "
            f"Got fields {sorted(recipe)}."
        )
    name = recipe.pop("name")
    cls = prior_class(str(name))
    if cls is MixturePrior:
        comps = recipe.pop("components", None)
        weights = recipe.pop("weights", None)
        if recipe:
            raise InvalidConfigError(
                f"Unknown field(s) {sorted(recipe)} for prior 'mixture'; it takes "
                "'components' and 'weights'."
            )
        if not isinstance(comps, list) or not comps:
            raise InvalidConfigError(
                "Prior 'mixture' needs 'components', a list of prior tables "
                "([[prior.components]] in TOML)."
            )
        return MixturePrior(
            tuple(build_prior(c) for c in comps),
            None if weights is None else tuple(float(w) for w in weights),
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in recipe.items():
        if key not in fields:
            hint = closest(key, list(fields))
            raise InvalidConfigError(
                f"Unknown field {key!r} for prior {name!r}. Allowed: {', '.join(fields)}."
                + (f" Did you mean {hint!r}?" if hint else "")
            )
        default = fields[key].default
        if isinstance(default, tuple):
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise InvalidConfigError(
                    f"Field {key!r} of prior {name!r} must be a list of names. Got {value!r}."
                )
            kwargs[key] = tuple(value)
            continue
        value = _parse_number(default, value)
        if isinstance(default, bool | int | str) and not isinstance(default, float):
            if type(value) is not type(default) and not (
                isinstance(default, int) and isinstance(value, int)
            ):
                raise InvalidConfigError(
                    f"Field {key!r} of prior {name!r} must be a {type(default).__name__}. "
                    f"Got {value!r}."
                )
        elif isinstance(value, bool) or not isinstance(value, int | float | dict):
            raise InvalidConfigError(
                f"Field {key!r} of prior {name!r} must be a number or a hyperprior such as "
                f"{{log_uniform = [0.1, 1.0]}}. Got {value!r}."
            )
        kwargs[key] = hyperprior_from_dict(key, value)
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a hyperprior where an int is required
        raise InvalidConfigError(f"Invalid recipe for prior {name!r}: {e}") from None


def _parse_number(default: Any, value: Any) -> Any:
    """A number written as text in a recipe (``lengthscale = "0.5"``) is parsed like the
    number itself, for a field whose default is a number; anything else is left as given."""
    if not isinstance(value, str) or default is None or isinstance(default, bool | str | tuple):
        return value
    try:
        number = float(value.strip())
    except ValueError:
        return value
    if isinstance(default, int):
        return int(number) if number.is_integer() else value
    return number
