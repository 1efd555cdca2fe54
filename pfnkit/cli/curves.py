"""``pfnkit curves ...``: learning-curve extrapolation from the command line."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from pfnkit.cli.common import err, out, user_errors

curves_app = typer.Typer(
    help="Extrapolate learning curves with the bundled LC-PFN (offline).",
    no_args_is_help=True,
)


def read_curves(path: Path) -> tuple[list[str], list[Any]]:
    """Curves from a CSV file: one column per curve, one row per step (1, 2, ...).

    A first row that is not numeric is a header naming the curves. Shorter curves leave
    their trailing cells empty. An empty cell inside a curve, or a blank line between
    rows, is a missing value: the row keeps its step (later values never move earlier),
    and since the LC-PFN reads no missing steps, it is an error naming the column, step
    and line. The file must be UTF-8 text.
    """
    import numpy as np

    from pfnkit.exceptions import InvalidConfigError

    if not path.is_file():
        raise InvalidConfigError(f"FILE '{path}' does not exist. Give a CSV of curve values.")
    rows: list[list[str]] = []
    lines: list[int] = []  # the file line each row ends on, for error messages
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for r in reader:
                rows.append(r)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise InvalidConfigError(
            f"FILE '{path}' is not UTF-8 text (byte {e.start} cannot be decoded). "
            "Save the CSV as UTF-8."
        ) from None
    except (OSError, csv.Error) as e:
        raise InvalidConfigError(f"FILE '{path}' cannot be read as CSV: {e}") from None

    def blank(r: list[str]) -> bool:
        return not any(cell.strip() for cell in r)

    # a blank line is a row of missing values; only trailing ones (and ones before a
    # header) carry nothing
    while rows and blank(rows[-1]):
        rows.pop()
        lines.pop()
    if not rows:
        raise InvalidConfigError(f"FILE '{path}' holds no values.")

    def number(cell: str) -> float | None:
        cell = cell.strip()
        if not cell:
            return None
        try:
            return float(cell)
        except ValueError:
            return None

    first = next(i for i, r in enumerate(rows) if not blank(r))
    header = rows[first]
    if all(number(c) is None for c in header):
        names = [c.strip() or f"curve{i}" for i, c in enumerate(header)]
        rows, lines = rows[first + 1 :], lines[first + 1 :]
    else:
        names = [f"curve{i}" for i in range(max(len(r) for r in rows))]
    curves: list[Any] = []
    for j, name in enumerate(names):
        cells = [r[j].strip() if j < len(r) else "" for r in rows]
        while cells and not cells[-1]:
            cells.pop()
        values = []
        for i, cell in enumerate(cells):
            if not cell:
                raise InvalidConfigError(
                    f"FILE '{path}': column {name!r} has no value at step {i + 1} (line "
                    f"{lines[i]}{', a blank line' if blank(rows[i]) else ''}) but has values "
                    "after it; the LC-PFN cannot read a missing step. Fill in the value, or "
                    "give only the steps up to it."
                )
            v = number(cell)
            if v is None:
                raise InvalidConfigError(
                    f"FILE '{path}': column {name!r}, step {i + 1} (line {lines[i]}) holds "
                    f"{cell!r}, not a number."
                )
            values.append(v)
        curves.append(np.asarray(values, dtype=np.float64))
    return names, curves


@curves_app.command("extrapolate")
def extrapolate(
    file: Annotated[
        Path, typer.Argument(help="CSV: one column per curve, one row per step from 1.")
    ],
    at: Annotated[
        list[float], typer.Option(help="Step to predict (repeatable); default: max-steps.")
    ] = [],  # noqa: B006 (typer reads the default, it is never mutated)
    max_steps: Annotated[
        int | None,
        typer.Option(help="Full training length the steps scale to (default: largest --at)."),
    ] = None,
    low: Annotated[float, typer.Option(help="Lowest value the metric can take.")] = 0.0,
    high: Annotated[
        str, typer.Option(help="Highest value, or 'observed' for the largest seen (losses).")
    ] = "1",
    direction: Annotated[
        str, typer.Option(help="'maximize' (accuracy) or 'minimize' (loss).")
    ] = "maximize",
    level: Annotated[float, typer.Option(help="Central interval to report.")] = 0.9,
    checkpoint: Annotated[
        str, typer.Option(help="'default' (bundled LC-PFN), a run directory or a file.")
    ] = "default",
    plot: Annotated[
        Path | None, typer.Option(help="Write a plot (PNG/PDF/SVG) of curves and bands.")
    ] = None,
) -> None:
    """Predict later values of learning curves with uncertainty."""
    with user_errors():
        import numpy as np

        from pfnkit.curves import CurveExtrapolator
        from pfnkit.exceptions import InvalidConfigError

        names, curves = read_curves(file)
        if not at and max_steps is None:
            raise InvalidConfigError("Give the steps to predict with --at, or --max-steps.")
        steps = list(at) if at else [float(max_steps)]  # type: ignore[arg-type]
        if high == "observed":
            hi: float | None = None
        else:
            try:
                hi = float(high)
            except ValueError:
                raise InvalidConfigError(
                    f"--high must be a number or 'observed'. Got {high!r}."
                ) from None
        ex = CurveExtrapolator(checkpoint)
        pred = ex.predict(
            curves,
            at=steps,
            max_steps=max_steps,
            value_range=(low, hi),
            direction=direction,  # type: ignore[arg-type]
        )
        mean, (lo_q, hi_q) = pred.mean(), pred.interval(level)
        pct = f"{level:.0%}"
        lines = [f"curve,step,mean,median,low {pct},high {pct}"]
        median = pred.median()
        for c, name in enumerate(names):
            for a, s in enumerate(pred.at):
                lines.append(
                    f"{name},{s:g},{mean[c, a]:.4f},{median[c, a]:.4f},"
                    f"{lo_q[c, a]:.4f},{hi_q[c, a]:.4f}"
                )
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        if plot is not None:
            horizon = max_steps if max_steps is not None else int(max(steps))
            grid = np.unique(
                np.concatenate(
                    [np.linspace(2, horizon, min(horizon - 1, 100)).round(), np.asarray(steps)]
                )
            )
            band = ex.predict(
                curves,
                at=grid,
                max_steps=horizon,
                value_range=(low, hi),
                direction=direction,  # type: ignore[arg-type]
            )
            write_plot(plot, names, curves, grid, band, level)
            err.print(f"Wrote {plot}", highlight=False, markup=False)


def write_plot(
    path: Path, names: list[str], curves: list[Any], grid: Any, pred: Any, level: float
) -> None:
    """Observed curves, predictive medians and central bands, one colour per curve."""
    from pfnkit.exceptions import InvalidConfigError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidConfigError(
            "--plot needs matplotlib, an optional extra: pip install 'pfnkit[plot]'."
        ) from None
    median = pred.median()
    lo, hi = pred.interval(level)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, (name, curve) in enumerate(zip(names, curves)):
        color = f"C{c % 10}"
        future = grid > len(curve)
        ax.fill_between(
            grid[future], lo[c][future], hi[c][future], color=color, alpha=0.2, linewidth=0
        )
        ax.plot(grid[future], median[c][future], color=color, linestyle="--", linewidth=1)
        ax.plot(range(1, len(curve) + 1), curve, color=color, marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(f"LC-PFN extrapolation: median and {level:.0%} band")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as e:
        raise InvalidConfigError(f"Cannot write --plot '{path}': {e}") from None
    finally:
        plt.close(fig)
