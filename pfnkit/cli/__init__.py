"""The ``pfnkit`` command line (typer is imported only when the CLI runs)."""

from __future__ import annotations


def main() -> None:
    from pfnkit.cli.app import run

    run()
