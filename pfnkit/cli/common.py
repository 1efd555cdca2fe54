"""What every ``pfnkit`` command shares: consoles and the one-line error handler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from pfnkit.exceptions import PfnkitError

err = Console(stderr=True)
out = Console()
DEBUG = False  # set by ``--debug`` anywhere on the command line


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn pfnkit errors into one red line and exit code 1 (tracebacks with --debug)."""
    try:
        yield
    except PfnkitError as e:
        if DEBUG:
            raise
        err.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
