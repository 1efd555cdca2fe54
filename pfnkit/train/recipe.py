"""Recipes: TOML files with [prior], [model] and [train] tables that define a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.config import PFNConfig
from pfnkit.priors import build_prior
from pfnkit.registry import closest
from pfnkit.train.config import TrainConfig, parse_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("prior", "model", "train")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file; unknown tables and TOML syntax errors name the problem."""
    p = Path(path)
    if not p.is_file():
        raise InvalidConfigError(
            f"Recipe file '{path}' does not exist. Give a prior name (e.g. gp, bnn) or a "
            "path to a .toml recipe such as priors/gp.toml."
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidConfigError(
            f"Recipe '{path}' is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}); save it as UTF-8."
        ) from None
    try:
        recipe = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidConfigError(f"Recipe '{path}' is not valid TOML: {e}.") from None
    for key in recipe:
        if key not in SECTIONS:
            hint = closest(key, list(SECTIONS))
            raise InvalidConfigError(
                f"Unknown table [{key}] in recipe '{path}'. Allowed: "
                + ", ".join(f"[{s}]" for s in SECTIONS)
                + (f". Did you mean [{hint}]?" if hint else ".")
            )
        if not isinstance(recipe[key], dict):
            raise InvalidConfigError(f"'{key}' in recipe '{path}' must be a table ([{key}]).")
    if "prior" not in recipe:
        raise InvalidConfigError(f"Recipe '{path}' needs a [prior] table with a 'name'.")
    return recipe


def make_run(
    recipe: dict[str, Any],
    *,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> tuple[Any, PFNConfig, TrainConfig]:
    """Build (prior, model config, train config) from a recipe plus overrides."""
    prior = build_prior(recipe["prior"])
    model_d = {**parse_fields(PFNConfig, recipe.get("model", {}), "model"), **(model or {})}
    model_d["task"] = prior.task
    if prior.task == "classification" and "n_classes" not in model_d:
        model_d["n_classes"] = int(getattr(prior, "max_classes", 10))
    train_d = {**parse_fields(TrainConfig, recipe.get("train", {}), "train"), **(train or {})}
    return prior, PFNConfig.from_dict(model_d), TrainConfig.from_dict(train_d)


def make_warm_run(
    state: dict[str, Any],
    recipe: dict[str, Any] | None,
    *,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    path: Any = "",
) -> tuple[Any, PFNConfig, TrainConfig]:
    """(prior, model config, train config) for a run warm-started from a checkpoint dict.

    The network's shape is the checkpoint's: a recipe's ``[model]`` keys and ``model``
    options are laid over it, and the Trainer (``init_from``) refuses any that differ. The
    prior is the recipe's, else the checkpoint's own; the training options are the
    recipe's, else the checkpoint's, with ``train`` on top.
    """
    saved = state["model_config"]
    given = {**parse_fields(PFNConfig, (recipe or {}).get("model", {}), "model"), **(model or {})}
    prior = build_prior(recipe["prior"] if recipe is not None else state["prior"])
    if prior.task != saved.get("task"):
        raise InvalidConfigError(
            f"--init-from '{path}' holds a {saved.get('task')} network but the prior "
            f"{getattr(prior, 'name', '')!r} is a {prior.task} prior; warm-start from a "
            f"{prior.task} checkpoint."
        )
    base = (
        parse_fields(TrainConfig, recipe.get("train", {}), "train")
        if recipe is not None
        else dict(state.get("train_config", {}))
    )
    train_d = {**base, **(train or {})}
    return prior, PFNConfig.from_dict({**saved, **given}), TrainConfig.from_dict(train_d)
