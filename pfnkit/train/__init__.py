"""Training: the loop, its configuration, schedule, checkpoints and DDP set-up."""

from pfnkit.train.checkpoint import (
    FORMAT_VERSION,
    export_safetensors,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pfnkit.train.config import TrainConfig
from pfnkit.train.loop import StepInfo, Trainer
from pfnkit.train.schedule import lr_at

__all__ = [
    "FORMAT_VERSION",
    "StepInfo",
    "TrainConfig",
    "Trainer",
    "export_safetensors",
    "load_checkpoint",
    "lr_at",
    "read_checkpoint",
    "save_checkpoint",
]
