"""Test-time adaptation: how a frozen PFN meets a real table of any size.

Context strategies decide what each ensemble member sees as context:

- ``SubsampleContext`` ("subsample"): a random subset of the rows per member;
- ``FullContext`` ("full"): every row in one context;
- ``KNNContext`` ("knn"): each test row's k nearest training rows (LoCalPFN);
  ``KNNContext(mode="graph")`` ("knn-fast") encodes every training row once with its own
  neighbours and lets test rows attend to those; ``KNNContext(mode="clusters")``
  ("knn-shared") shares a context among the test rows nearest a cluster centre;
- ``MixedContext``: members split between strategies;
- ``TunedContext`` ("tuned"): learned prompt tokens on the frozen PFN (TuneTables).

``FineTune`` (the estimators' ``fine_tune=``) trains the PFN itself on the table.
``resolve_context`` turns an estimator's ``context=`` into a strategy; ``"auto"`` follows
``AUTO_RULE``.
"""

from __future__ import annotations

from typing import Any

from pfnkit.exceptions import InvalidConfigError
from pfnkit.tuning._base import ContextProblem, ContextStrategy, FittedContext
from pfnkit.tuning.finetune import FineTune, fine_tune
from pfnkit.tuning.knn import KNNContext
from pfnkit.tuning.mixed import MixedContext
from pfnkit.tuning.prompt import PromptedPFN, TunedContext
from pfnkit.tuning.source import TableSource
from pfnkit.tuning.subsample import FullContext, SubsampleContext

STRATEGY_TYPES = (SubsampleContext, FullContext, KNNContext, TunedContext, MixedContext)
CONTEXTS = ("auto", "subsample", "full", "knn", "knn-fast", "knn-shared", "tuned")

# A network reads contexts a little longer than those it was trained on as well as a
# subsample of them: benchmarks/context_length.py (the 11 tabular_more classification
# tables and KEEL ring, v2 classifier): all rows matched a subsample at 1.1x the limit
# (mean AUC 0.7933 vs 0.7930) and came close at 1.8x (0.7824 vs 0.7834).
CONTEXT_STRETCH = 1.25

AUTO_RULE = (
    "'auto': when every training row fits in the checkpoint's training context, or in "
    f"{CONTEXT_STRETCH:g} times it, one context of all rows per member; above that, half "
    "the members a random subsample of rows and half a learned prompt (one per member): "
    "MixedContext((SubsampleContext(), TunedContext(n_tokens=48))); a PFN with cell "
    "tokens, which takes no prompts, then gets the subsample."
)


def auto_context(n_rows: int, context_limit: int, prompts: bool = True) -> Any:
    """The strategy "auto" picks for a table of n_rows (see ``AUTO_RULE``); ``prompts``:
    whether the PFN takes learned prompt tokens (row tokens do, cell tokens do not)."""
    if n_rows <= context_limit:
        return SubsampleContext()
    if n_rows <= int(CONTEXT_STRETCH * context_limit):
        return SubsampleContext(max_rows=n_rows)  # all rows: a short stretch costs nothing
    if not prompts:
        return SubsampleContext()
    # 48 tokens: four prompts stay under 5 % of the bundled PFN's parameters
    return MixedContext((SubsampleContext(), TunedContext(n_tokens=48)))


def resolve_context(spec: Any, n_rows: int, context_limit: int, prompts: bool = True) -> Any:
    """The strategy object for an estimator's ``context=`` value (``prompts``: see
    ``auto_context``)."""
    if isinstance(spec, STRATEGY_TYPES):
        return spec
    if not isinstance(spec, str) or spec not in CONTEXTS:
        from pfnkit.registry import closest

        hint = closest(str(spec), list(CONTEXTS)) if isinstance(spec, str) else None
        raise InvalidConfigError(
            f"The 'context' parameter must be one of {', '.join(map(repr, CONTEXTS))} or a "
            f"strategy from pfnkit.tuning (SubsampleContext, FullContext, KNNContext, "
            f"TunedContext). Got {spec!r} instead." + (f" Did you mean {hint!r}?" if hint else "")
        )
    if spec == "auto":
        return auto_context(n_rows, context_limit, prompts)
    return {
        "subsample": SubsampleContext(),
        "full": FullContext(),
        "knn": KNNContext(),
        "knn-fast": KNNContext(mode="graph"),
        "knn-shared": KNNContext(mode="clusters"),
        "tuned": TunedContext(),
    }[spec]


def resolve_fine_tune(spec: Any, default: FineTune | None = None) -> FineTune | None:
    """The FineTune options for an estimator's ``fine_tune=`` value (None: off); ``True``
    means ``default`` (the estimator's own, else ``FineTune()``)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return default if default is not None else FineTune()
    if isinstance(spec, FineTune):
        return spec
    raise InvalidConfigError(
        "The 'fine_tune' parameter must be False, True or a pfnkit.tuning.FineTune(...). "
        f"Got {spec!r} instead."
    )


__all__ = [
    "AUTO_RULE",
    "CONTEXT_STRETCH",
    "CONTEXTS",
    "ContextProblem",
    "ContextStrategy",
    "FineTune",
    "FittedContext",
    "FullContext",
    "KNNContext",
    "MixedContext",
    "STRATEGY_TYPES",
    "PromptedPFN",
    "SubsampleContext",
    "TableSource",
    "TunedContext",
    "auto_context",
    "fine_tune",
    "resolve_context",
    "resolve_fine_tune",
]
