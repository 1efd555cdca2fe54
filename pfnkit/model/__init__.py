"""The PFN transformer, its configuration, attention backends, FFN blocks and heads."""

from pfnkit.model.attend import ATTENTION_BACKENDS, attend
from pfnkit.model.config import PFNConfig
from pfnkit.model.ffn import FFN_BLOCKS, FFNBlock
from pfnkit.model.heads import BarDistribution, borders_from_targets
from pfnkit.model.transformer import PFN, build_model

__all__ = [
    "ATTENTION_BACKENDS",
    "BarDistribution",
    "FFN_BLOCKS",
    "FFNBlock",
    "PFN",
    "PFNConfig",
    "attend",
    "borders_from_targets",
    "build_model",
]
