"""Freeze-thaw hyperparameter optimisation on optuna (optuna is imported on first use).

from pfnkit.hpo import FreezeThaw
ft = FreezeThaw(space, max_steps=50, storage="sqlite:///study.db", study_name="mlp")
ft.optimize(objective, budget=1000)      # objective(job) trains job.from_step..to_step

from pfnkit.hpo import LCPFNPruner      # for your own optuna loop
"""

from __future__ import annotations

from typing import Any

__all__ = ["FreezeThaw", "FreezeThawSurrogate", "Job", "LCPFNPruner", "load_space"]


def __getattr__(name: str) -> Any:
    if name in ("FreezeThaw", "Job"):
        from pfnkit.hpo import loop

        return getattr(loop, name)
    if name == "FreezeThawSurrogate":
        from pfnkit.hpo.surrogate import FreezeThawSurrogate

        return FreezeThawSurrogate
    if name == "LCPFNPruner":
        from pfnkit.hpo.pruner import LCPFNPruner

        return LCPFNPruner
    if name == "load_space":
        from pfnkit.hpo.space import load_space

        return load_space
    raise AttributeError(f"module 'pfnkit.hpo' has no attribute {name!r}")
