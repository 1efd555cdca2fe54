"""Training: the loop, its configuration, schedule, checkpoints and DDP set-up."""

from pfnkit.train.checkpoint import (
    FORMAT_VERSION,
    PFNCard,
    export_safetensors,
    load_checkpoint,
    load_pfn,
    read_checkpoint,
    save_checkpoint,
)
from pfnkit.train.config import TrainConfig
from pfnkit.train.loop import StepInfo, Trainer
from pfnkit.train.schedule import lr_at

__all__ = [
    "FORMAT_VERSION",
    "PFNCard",
    "StepInfo",
    "TrainConfig",
    "Trainer",
    "export_safetensors",
    "load_checkpoint",
    "load_pfn",
    "lr_at",
    "read_checkpoint",
    "save_checkpoint",
]
