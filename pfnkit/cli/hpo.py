"""``pfnkit hpo ...``: freeze-thaw hyperparameter optimisation on an optuna study."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pfnkit.cli.common import err, one_line, out, user_errors
from pfnkit.hpo.bench import METHODS

hpo_app = typer.Typer(
    help="Freeze-thaw HPO (ifBO) on optuna: run workers, inspect a study, compare methods.",
    no_args_is_help=True,
)

StorageOpt = Annotated[
    str,
    typer.Option(
        help=(
            "optuna storage: sqlite:///study.db, postgresql://user@host/db (many hosts) "
            "or journal:///path/study.log (a shared file, NFS)."
        )
    ),
]
StudyOpt = Annotated[str, typer.Option("--study", help="Study name in the storage.")]
ObjectiveArg = Annotated[
    Path, typer.Argument(help="Python file defining objective(job) -> values.")
]
SpaceOpt = Annotated[Path, typer.Option(help="YAML search space (optuna distributions).")]
MaxStepsOpt = Annotated[int, typer.Option(help="Full training length of one configuration.")]
FunctionOpt = Annotated[str, typer.Option(help="Name of the objective function.")]
DirectionOpt = Annotated[str, typer.Option(help="'maximize' or 'minimize'.")]
ValueLowOpt = Annotated[float, typer.Option(help="Lowest value the metric takes.")]
ValueHighOpt = Annotated[
    str, typer.Option(help="Highest value, or 'observed' for the largest seen.")
]
SurrogateOpt = Annotated[str, typer.Option(help="'default' (bundled FT-PFN) or a checkpoint path.")]


def value_range(low: float, high: str) -> tuple[float, float | None]:
    """(low, high) from --value-low and --value-high ('observed': None)."""
    from pfnkit.exceptions import InvalidConfigError

    if high == "observed":
        return low, None
    try:
        return low, float(high)
    except ValueError:
        raise InvalidConfigError(
            f"--value-high must be a number or 'observed'. Got {high!r}."
        ) from None


def load_objective(path: Path, name: str) -> Any:
    """The function ``name`` from the Python file ``path``."""
    from pfnkit.exceptions import InvalidConfigError

    if not path.is_file():
        raise InvalidConfigError(f"OBJECTIVE file '{path}' does not exist.")
    spec = importlib.util.spec_from_file_location(f"pfnkit_objective_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InvalidConfigError(f"Cannot import OBJECTIVE file '{path}' (is it a .py file?).")
    module = importlib.util.module_from_spec(spec)
    # modules beside the objective file import as they do when it runs as a script; the
    # folder stays on sys.path, for imports made inside the objective while it trains
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise InvalidConfigError(
            f"Importing OBJECTIVE file '{path}' failed: {type(e).__name__}: {e}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise InvalidConfigError(
            f"OBJECTIVE file '{path}' has no function {name!r} (found: {', '.join(found) or '-'})."
            " Define objective(job) returning the values at steps job.from_step+1..job.to_step,"
            " or pass --function NAME."
        )
    return fn


def default_artifacts(storage: str, study: str) -> Path:
    """Where ``hpo run`` keeps per-configuration checkpoints without ``--artifacts``:
    ``<study>-artifacts/`` beside the database file of a ``sqlite:///`` storage or the log
    of a ``journal:`` one, else in the working directory."""
    from pfnkit.hpo.storage import journal_path, sqlite_path

    db = sqlite_path(storage) or journal_path(storage)
    return (db.parent if db is not None else Path()) / f"{study}-artifacts"


def check_database(storage: str) -> None:
    """Refuse a ``sqlite:///`` or ``journal:`` storage whose file does not exist (opening
    it would create an empty one, hiding a mistyped path)."""
    from pfnkit.exceptions import InvalidConfigError
    from pfnkit.hpo.storage import journal_path, sqlite_path

    for db, what in ((sqlite_path(storage), "SQLite database"), (journal_path(storage), "journal")):
        if db is not None and not db.is_file():
            raise InvalidConfigError(
                f"--storage {storage}: no {what} at '{db}'. Check the path (`pfnkit hpo run` "
                "creates it)."
            )


@hpo_app.command("run")
def run(
    objective: ObjectiveArg,
    space: SpaceOpt,
    budget: Annotated[int, typer.Option(help="Steps (epochs) to spend in all, shared.")],
    max_steps: MaxStepsOpt,
    storage: StorageOpt = "sqlite:///study.db",
    study: StudyOpt = "pfnkit-hpo",
    function: FunctionOpt = "objective",
    direction: DirectionOpt = "maximize",
    value_low: ValueLowOpt = 0.0,
    value_high: ValueHighOpt = "1",
    surrogate: SurrogateOpt = "default",
    artifacts: Annotated[
        Path | None,
        typer.Option(
            help="Directory for per-configuration checkpoints (job.checkpoint_dir). "
            "Default: <study>-artifacts/ beside the SQLite file, else in the working directory."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of this worker.")] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(help="Resume a configuration whose worker has been silent this long."),
    ] = 600.0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run a freeze-thaw worker; start several on one storage to work in parallel."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.hpo import FreezeThaw, load_space

        if budget < 1:
            raise InvalidConfigError(f"--budget must be >= 1 step. Got {budget}.")
        values = value_range(value_low, value_high)
        fn = load_objective(objective, function)
        if artifacts is None:
            artifacts = default_artifacts(storage, study)
        ft = FreezeThaw(
            load_space(space),
            max_steps=max_steps,
            surrogate=surrogate,
            storage=storage,
            study_name=study,
            direction=direction,
            value_range=values,
            artifacts_dir=artifacts,
            seed=seed,
            lease_seconds=lease_seconds,
        )
        err.print(
            f"Checkpoints: {artifacts}/trial-N, one directory per configuration.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if quiet:
            ft.optimize(fn, budget)
        else:
            _run_with_progress(ft, fn, budget)
        best = ft.best()
        used = ft.steps_used()
        if best is None:
            err.print(f"Used {used}/{budget} steps; no value yet.", markup=False)
        else:
            params, value, steps = best
            err.print(
                f"Used {used}/{budget} steps. Best value {value:.6g} after {steps} steps: "
                f"{json.dumps(params)}",
                markup=False,
                highlight=False,
            )


def _run_with_progress(ft: Any, fn: Any, budget: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("hpo"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        console=err,
    ) as bar:
        task = bar.add_task("hpo", total=budget, completed=ft.steps_used(), best="")

        def update(ft: Any, job: Any) -> None:
            best = ft.best()
            text = "" if best is None else f"best {best[1]:.4g} ({best[2]} steps)"
            bar.update(task, completed=min(ft.steps_used(), budget), best=text)

        ft.optimize(fn, budget, callback=update)


@hpo_app.command("bench")
def bench(
    objective: ObjectiveArg,
    space: SpaceOpt,
    budget: Annotated[int, typer.Option(help="Steps (epochs) each run may spend.")],
    max_steps: MaxStepsOpt,
    seeds: Annotated[int, typer.Option(help="Runs per method, with seeds 0..S-1.")] = 3,
    methods: Annotated[
        str, typer.Option(help=f"Comma-separated, from: {', '.join(METHODS)}.")
    ] = ",".join(METHODS),
    function: FunctionOpt = "objective",
    direction: DirectionOpt = "maximize",
    value_low: ValueLowOpt = 0.0,
    value_high: ValueHighOpt = "1",
    surrogate: SurrogateOpt = "default",
) -> None:
    """Compare freeze-thaw with optuna's baselines on your objective (in-memory studies)."""
    with user_errors():
        import optuna

        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.hpo import load_space
        from pfnkit.hpo.bench import check_settings, preload, run_method, table

        names = check_settings(
            [m.strip() for m in methods.split(",") if m.strip()],
            budget=budget,
            max_steps=max_steps,
            direction=direction,
        )
        if seeds < 1:
            raise InvalidConfigError(f"--seeds must be >= 1. Got {seeds}.")
        values = value_range(value_low, value_high)
        fn = load_objective(objective, function)
        dists = load_space(space)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        preload(names, surrogate=surrogate, max_steps=max_steps, value_range=values)
        runs = []
        for seed in range(seeds):
            for m in names:
                r = run_method(
                    m,
                    fn,
                    dists,
                    budget=budget,
                    max_steps=max_steps,
                    seed=seed,
                    direction=direction,
                    value_range=values,
                    surrogate=surrogate,
                )
                final = r.incumbent[-1]
                err.print(
                    f"{m} seed {seed}: best {'-' if final is None else f'{final:.6g}'}, "
                    f"{r.run_time:.1f} s",
                    markup=False,
                    highlight=False,
                )
                runs.append(r)
        caption = (
            f"{objective.name}: best final value (step {max_steps}) among configurations "
            f"trained to {max_steps} steps ({direction}), mean over {seeds} seed(s), '(k/n)' "
            f"where only k had one; budget {budget} steps per run"
            + (f"; FT-PFN: {surrogate}" if "ft" in names else "")
        )
        out.print(
            caption + "\n\n" + table(runs, names), markup=False, highlight=False, soft_wrap=True
        )


def _open(storage: str, study: str) -> Any:
    import optuna

    from pfnkit.exceptions import InvalidConfigError
    from pfnkit.hpo.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_database(storage)
    try:
        store = open_storage(storage)
        return optuna.load_study(study_name=study, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise InvalidConfigError(
            f"No study {study!r} in {storage}. Studies there: {', '.join(names) or 'none'}."
        ) from None
    except Exception as e:  # a malformed URL, a missing driver, an unreachable server, ...
        raise InvalidConfigError(
            f"Cannot open --storage {storage!r}: {one_line(e)} Use an optuna storage URL such"
            " as sqlite:///study.db, postgresql://user@host/db or journal:///path/study.log."
        ) from None


@hpo_app.command("status")
def status(storage: StorageOpt = "sqlite:///study.db", study: StudyOpt = "pfnkit-hpo") -> None:
    """Configurations per state, steps used, paused and running work, the best value."""
    with user_errors():
        from pfnkit.hpo.storage import LEASE_ATTR, STEPS_ATTR

        s = _open(storage, study)
        trials = s.get_trials(deepcopy=False)
        names = {"WAITING": "paused", "RUNNING": "training", "COMPLETE": "finished"}
        counts: dict[str, int] = {}
        for t in trials:
            key = names.get(t.state.name, t.state.name.lower())
            counts[key] = counts.get(key, 0) + 1
        used = sum(int(t.user_attrs.get(STEPS_ATTR, 0)) for t in trials)
        workers = {
            (t.user_attrs.get(LEASE_ATTR) or {}).get("worker")
            for t in trials
            if t.state.name == "RUNNING"
        }
        lines = [
            f"study {study}: {len(trials)} configurations, {used} steps used",
            "  " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
            f"  workers training now: {len(workers - {None})}",
        ]
        done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        if done:
            lines.append(f"  best final value: {s.best_value:.6g} (trial {s.best_trial.number})")
        out.print("\n".join(lines), markup=False, highlight=False)


@hpo_app.command("best")
def best(storage: StorageOpt = "sqlite:///study.db", study: StudyOpt = "pfnkit-hpo") -> None:
    """Print the best configuration as JSON: params, value, steps, trial."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.hpo.storage import STEPS_ATTR

        s = _open(storage, study)
        done = [t for t in s.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not done:
            raise InvalidConfigError(
                f"Study {study!r} has no finished configuration yet; see `pfnkit hpo status`."
            )
        t = s.best_trial
        out.print_json(
            json.dumps(
                {
                    "trial": t.number,
                    "value": t.value,
                    "steps": t.user_attrs.get(STEPS_ATTR),
                    "params": t.params,
                }
            )
        )
