"""What every ``pfnkit`` command shares: consoles and the one-line error handler."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from pfnkit.exceptions import PfnkitError

err = Console(stderr=True)
out = Console()
DEBUG = False  # set by ``--debug`` anywhere on the command line


def is_parameter_error(e: BaseException) -> bool:
    """Whether ``e`` is scikit-learn's estimator-parameter validation error.

    Estimators validate their parameters with scikit-learn (``InvalidParameterError``, a
    ValueError whose message already names the parameter, the allowed values and the value
    given), so the CLI shows it like a PfnkitError. Looked up lazily: when scikit-learn was
    never imported, no error can come from it, and the CLI starts without importing it.
    """
    mod = sys.modules.get("sklearn.utils._param_validation")
    cls = getattr(mod, "InvalidParameterError", None)
    return cls is not None and isinstance(e, cls)


def one_line(e: BaseException) -> str:
    """The error's message on one line (some libraries wrap theirs over several)."""
    return " ".join(str(e).split())


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn pfnkit errors (and scikit-learn's parameter errors) into one red line and exit
    code 1; other exceptions are bugs and keep their traceback (so does everything with
    --debug)."""
    try:
        yield
    except (PfnkitError, ValueError) as e:
        if DEBUG or not (isinstance(e, PfnkitError) or is_parameter_error(e)):
            raise
        msg = str(e) if isinstance(e, PfnkitError) else one_line(e)
        err.print(f"[bold red]Error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
