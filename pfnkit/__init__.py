"""pfnkit: one core for prior-fitted networks (PFNs).

Public API: ``load_checkpoint`` and ``__version__``; priors, models and training live in
``pfnkit.priors``, ``pfnkit.model`` and ``pfnkit.train``.
"""

from pfnkit._version import __version__
from pfnkit.exceptions import CheckpointError, InvalidConfigError, PfnkitError
from pfnkit.train.checkpoint import load_checkpoint

__all__ = ["CheckpointError", "InvalidConfigError", "PfnkitError", "__version__", "load_checkpoint"]
