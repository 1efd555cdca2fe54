"""FFN blocks, registered by name in ``FFN_BLOCKS``; any block drops into any layer.

Every block takes ``(d_model, d_ffn, **typed_options)`` and maps (..., d_model) to
(..., d_model); options come from ``PFNConfig.ffn_options``, recipes ([model] ffn_options)
or ``pfnkit train-prior --ffn-option key=value``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn._base import FFNBlock
from pfnkit.model.ffn.dense import GLUBlock, MLPBlock
from pfnkit.model.ffn.fff import FFFBlock
from pfnkit.model.ffn.moe import MoEBlock
from pfnkit.model.ffn.semi24 import Semi24Block
from pfnkit.model.ffn.structured import BlockDiagBlock, LowRankBlock, TopKBlock
from pfnkit.registry import Registry, closest

FFN_BLOCKS: Registry[type[FFNBlock]] = Registry("FFN block")
FFN_BLOCKS.register("mlp", MLPBlock)
FFN_BLOCKS.register("glu", GLUBlock)
FFN_BLOCKS.register("moe", MoEBlock)
FFN_BLOCKS.register("fff", FFFBlock)
FFN_BLOCKS.register("lowrank", LowRankBlock)
FFN_BLOCKS.register("blockdiag", BlockDiagBlock)
FFN_BLOCKS.register("topk", TopKBlock)
FFN_BLOCKS.register("semi24", Semi24Block)

__all__ = [
    "FFN_BLOCKS",
    "BlockDiagBlock",
    "FFFBlock",
    "FFNBlock",
    "GLUBlock",
    "LowRankBlock",
    "MLPBlock",
    "MoEBlock",
    "Semi24Block",
    "TopKBlock",
    "block_options",
    "build_ffn",
]


def block_options(cls: type) -> dict[str, inspect.Parameter]:
    """The typed options a block takes (constructor parameters after d_model, d_ffn)."""
    params = inspect.signature(cls).parameters
    return {k: p for k, p in params.items() if k not in ("d_model", "d_ffn")}


def _describe(options: dict[str, inspect.Parameter]) -> str:
    if not options:
        return "no options"
    return ", ".join(f"{k}: {type(p.default).__name__} = {p.default!r}" for k, p in options.items())


def build_ffn(
    name: str, d_model: int, d_ffn: int, options: dict[str, Any] | None = None
) -> FFNBlock:
    """Construct the named block; a wrong option names the block and what it takes."""
    cls = FFN_BLOCKS.get(name)
    allowed = block_options(cls)
    checked: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in allowed:
            hint = closest(key, list(allowed))
            raise InvalidConfigError(
                f"Unknown option {key!r} for FFN block {name!r}. Options: {_describe(allowed)}."
                + (f" Did you mean {hint!r}?" if hint else "")
            )
        default = allowed[key].default
        want = type(default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not inspect.Parameter.empty and not isinstance(value, want):
            raise InvalidConfigError(
                f"Option {key!r} of FFN block {name!r} must be of type {want.__name__}. "
                f"Got {value!r} ({type(value).__name__})."
            )
        checked[key] = value
    return cls(d_model, d_ffn, **checked)
