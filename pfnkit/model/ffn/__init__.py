"""FFN blocks, registered by name in ``FFN_BLOCKS``; any block drops into any layer."""

from __future__ import annotations

from typing import Any

from pfnkit.exceptions import InvalidConfigError
from pfnkit.model.ffn._base import FFNBlock
from pfnkit.model.ffn.dense import GLUBlock, MLPBlock
from pfnkit.registry import Registry

FFN_BLOCKS: Registry[type[FFNBlock]] = Registry("FFN block")
FFN_BLOCKS.register("mlp", MLPBlock)
FFN_BLOCKS.register("glu", GLUBlock)

__all__ = ["FFN_BLOCKS", "FFNBlock", "GLUBlock", "MLPBlock", "build_ffn"]


def build_ffn(
    name: str, d_model: int, d_ffn: int, options: dict[str, Any] | None = None
) -> FFNBlock:
    """Construct the named block; a wrong option names the block and what it takes."""
    cls = FFN_BLOCKS.get(name)
    try:
        return cls(d_model, d_ffn, **(options or {}))
    except TypeError as e:
        import inspect

        params = [
            p
            for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "d_model", "d_ffn")
        ]
        raise InvalidConfigError(
            f"Invalid ffn_options {options!r} for FFN block {name!r}; it takes "
            f"{params or 'no options'} ({e})."
        ) from None
