"""The typer application: ``pfnkit train-prior``, ``info``, ``evaluate``, ``export``,
``grow``, ``calibrate``, ``curves`` and ``hpo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pfnkit.cli import common
from pfnkit.cli.common import err, out, user_errors
from pfnkit.cli.curves import curves_app
from pfnkit.cli.hpo import hpo_app

app = typer.Typer(
    name="pfnkit",
    help="Train and use prior-fitted networks (PFNs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(curves_app, name="curves")
app.add_typer(hpo_app, name="hpo")


@app.command("train-prior")
def train_prior(
    prior_or_recipe: Annotated[
        str | None,
        typer.Argument(help="A prior name (gp, bnn, ...) or a recipe file (priors/gp.toml)."),
    ] = None,
    prior: Annotated[str | None, typer.Option(help="Prior name, if no recipe is given.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/<prior>).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory (or its checkpoint.pt).")
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start a new run from this checkpoint's weights (a .safetensors, a .pt or a "
            "run directory): its network shape, the given prior (default: its own), a fresh "
            "optimizer and schedule."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps in all.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Datasets per step.")] = None,
    rows: Annotated[int | None, typer.Option(help="Rows per dataset.")] = None,
    max_context: Annotated[
        int | None, typer.Option(help="Most context rows (default rows - rows // 8).")
    ] = None,
    features: Annotated[int | None, typer.Option(help="Largest feature count.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Transformer layers.")] = None,
    n_heads: Annotated[int | None, typer.Option(help="Attention heads.")] = None,
    d_ffn: Annotated[int | None, typer.Option(help="FFN hidden width.")] = None,
    ffn: Annotated[
        str | None, typer.Option(help="FFN block: mlp, glu, moe, fff, lowrank, blockdiag, topk.")
    ] = None,
    ffn_option: Annotated[
        list[str] | None,
        typer.Option("--ffn-option", help="FFN block option key=value (repeatable)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or auto.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    on_nonfinite: Annotated[
        str | None,
        typer.Option(
            help="A step with a non-finite loss or gradient: stop (keep the last good "
            "checkpoint, exit 1) or skip its update (10 in a row still stop)."
        ),
    ] = None,
    data_workers: Annotated[
        int | None,
        typer.Option(help="Processes sampling batches ahead (0: in the training process)."),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="End this session after this many minutes of training (saved)."),
    ] = None,
    fit_steps: Annotated[
        bool,
        typer.Option(
            help="With --max-minutes: after a fifth of the time, set --steps to what the "
            "time allows (re-fitted at 2/5, 3/5, 4/5 from the latest speed), so that the "
            "learning-rate schedule ends on time."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a PFN on a prior (or a mixture) and write checkpoints to --out."""
    with user_errors():
        import torch

        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.train import Trainer
        from pfnkit.train.distributed import shutdown_distributed
        from pfnkit.train.recipe import load_recipe, make_run

        if threads is not None:
            if threads < 1:
                raise InvalidConfigError(
                    f"The '--threads' option must be an int >= 1 (torch CPU threads). "
                    f"Got {threads}; drop it to use torch's default."
                )
            torch.set_num_threads(threads)
        if max_minutes is not None and not (0 < max_minutes < float("inf")):
            raise InvalidConfigError(
                f"The '--max-minutes' option must be a number > 0 (minutes of training). "
                f"Got {max_minutes}."
            )
        if fit_steps and max_minutes is None:
            raise InvalidConfigError(
                "--fit-steps fits the steps to a time budget; give --max-minutes too."
            )
        if prior_or_recipe is not None and prior is not None:
            raise InvalidConfigError(
                f"Give a prior/recipe argument ({prior_or_recipe!r}) or --prior ({prior!r}), "
                "not both; drop one of them."
            )
        options = _parse_options(ffn_option or [])
        model_o = _given(
            ffn_options=options or None,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_ffn=d_ffn,
            ffn=ffn,
            n_features=features,
        )
        train_o = _given(
            steps=steps,
            batch_size=batch_size,
            rows=rows,
            max_context=max_context,
            lr=lr,
            seed=seed,
            device=device,
            precision=precision,
            checkpoint_every=checkpoint_every,
            on_nonfinite=on_nonfinite,
            data_workers=data_workers,
        )
        if resume is not None and init_from is not None:
            raise InvalidConfigError(
                "--resume continues a run and --init-from starts a new one from a "
                "checkpoint's weights; give one of them."
            )
        source = prior_or_recipe or prior
        recipe, run_name = None, None
        if source is not None:
            is_file = source.endswith(".toml") or Path(source).is_file()
            recipe = load_recipe(source) if is_file else {"prior": {"name": source}}
            run_name = Path(source).stem if is_file else source
        if init_from is not None:
            from pfnkit.train.checkpoint import read_checkpoint
            from pfnkit.train.recipe import make_warm_run

            p, model_cfg, train_cfg = make_warm_run(
                read_checkpoint(init_from), recipe, model=model_o, train=train_o, path=init_from
            )
            out_dir = out_dir or Path("runs") / (run_name or init_from.stem)
            trainer = Trainer(
                p, model_cfg, train_cfg, out_dir, overwrite=overwrite, init_from=init_from
            )
        elif resume is not None:
            if source is not None:
                raise InvalidConfigError(
                    "--resume continues a run with its own prior; drop the prior/recipe argument."
                )
            if out_dir is not None and out_dir not in (resume, resume.parent):
                raise InvalidConfigError(
                    "--resume writes to the run it continues; drop --out (or make it equal)."
                )
            trainer = Trainer.resume(resume, model_overrides=model_o, train_overrides=train_o)
        else:
            if recipe is None or run_name is None:
                raise InvalidConfigError(
                    "Give a prior name or recipe file, e.g. `pfnkit train-prior --prior gp` or "
                    "`pfnkit train-prior priors/gp.toml`, or --resume RUN_DIR."
                )
            p, model_cfg, train_cfg = make_run(recipe, model=model_o, train=train_o)
            out_dir = out_dir or Path("runs") / run_name
            trainer = Trainer(p, model_cfg, train_cfg, out_dir, overwrite=overwrite)
        max_seconds = None if max_minutes is None else 60.0 * max_minutes
        _train_with_progress(trainer, quiet, max_seconds=max_seconds, fit_steps=fit_steps)
        shutdown_distributed(trainer.dist)  # after a run that ended normally on every rank


def _parse_options(items: list[str]) -> dict[str, Any]:
    """["top_k=2", "router=hash"] -> {"top_k": 2, "router": "hash"} (JSON values, else text)."""
    from pfnkit.exceptions import InvalidConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidConfigError(
                f"--ffn-option takes key=value (e.g. --ffn-option top_k=2). Got {item!r}."
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _train_with_progress(
    trainer: Any, quiet: bool, *, max_seconds: float | None = None, fit_steps: bool = False
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tc, mc = trainer.train_config, trainer.model_config
    if trainer.dist.is_main:
        what = "Resuming" if trainer.step else "Training"
        err.print(
            f"{what} {mc.task} PFN ({trainer.model.n_params:,} params, d_model {mc.d_model}, "
            f"{mc.n_layers} layers, ffn {mc.ffn}) on prior '{getattr(trainer.prior, 'name', '?')}'"
            f" -> {trainer.out_dir} [step {trainer.step}/{tc.steps}, {trainer.device}"
            f"{', bf16' if trainer.bf16 else ''}"
            f"{f', {trainer.dist.world_size} ranks' if trainer.dist.enabled else ''}]",
            highlight=False,
            markup=False,
        )
    show = trainer.dist.is_main and not quiet
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} steps/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=False,
    )
    with progress:
        task = progress.add_task(
            "train", total=tc.steps, completed=trainer.step, loss=trainer.last_loss, rate=0.0
        )

        ema: list[float] = []

        def update(info: Any) -> None:
            # the bar shows a moving average: single-batch losses are noisy
            ema.append(info.loss if not ema else 0.95 * ema[-1] + 0.05 * info.loss)
            del ema[:-1]
            progress.update(
                task,
                total=info.steps,
                completed=info.step,
                loss=ema[-1],
                rate=info.datasets_per_s
                / (tc.batch_size * tc.accumulate * trainer.dist.world_size),
            )

        result = trainer.run(update, max_seconds=max_seconds, fit_steps=fit_steps)
    tc = trainer.train_config  # --fit-steps may have set a new total
    if trainer.dist.is_main:
        state = "Stopped (interrupted)" if trainer.interrupted else "Done"
        if not trainer.interrupted and result["step"] < tc.steps:
            state = "Stopped (--max-minutes reached)"
        err.print(
            f"{state} at step {result['step']}/{tc.steps}, loss {result['loss']:.4f}, "
            f"{result['wall_time'] / 60:.1f} min of training. Checkpoint: "
            f"{trainer.out_dir}/checkpoint.pt",
            highlight=False,
            markup=False,
        )
        if trainer.interrupted:
            err.print(
                f"Continue with: pfnkit train-prior --resume {trainer.out_dir}",
                highlight=False,
                markup=False,
            )
            raise typer.Exit(130)


@app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="Run directory, .pt or .safetensors file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Show a checkpoint's card: prior, model, training, step and metrics."""
    with user_errors():
        from pfnkit.train.checkpoint import card_of, init_chain, model_from_data, read_checkpoint

        data = read_checkpoint(path)
        model_from_data(data, path)  # info shows what the loader accepts, and nothing else
        card = card_of(data)
        card["n_params"] = int(
            sum(v.numel() for k, v in data["state_dict"].items() if not k.endswith("borders"))
        )
        if as_json:
            out.print_json(json.dumps(card))
            return
        m, t, met = (
            card.get("model_config", {}),
            card.get("train_config", {}),
            card.get("metrics", {}),
        )
        lines = [
            f"checkpoint   {path}",
            f"format       {card.get('format_version')} (pfnkit {card.get('pfnkit_version')})",
            f"prior        {json.dumps(card.get('prior'))}",
            f"model        {m.get('task')}, d_model {m.get('d_model')}, "
            f"{m.get('n_layers')} layers, "
            f"{m.get('n_heads')} heads, ffn {m.get('ffn')}, {m.get('n_features')} features, "
            f"{card['n_params']:,} params",
            f"training     step {card.get('step')}/{t.get('steps')}, batch {t.get('batch_size')}, "
            f"rows {t.get('rows')}, lr {t.get('lr')}, seed {t.get('seed')}, "
            f"world size {card.get('world_size', 1)}",
            f"metrics      loss {_num(met.get('loss'), '.4f')}, "
            f"{_num(met.get('wall_time', 0.0), '.1f', 1 / 60)} min, "
            f"{_num(met.get('datasets_seen', 0), ',')} datasets",
            *(f"initialised  from {source}" for source in init_chain(card.get("init_from"))),
            f"resumable    {'yes' if 'optimizer' in data else 'no (weights only)'}",
        ]
        out.print("\n".join(lines), highlight=False, soft_wrap=True, markup=False)


def _num(value: Any, spec: str, scale: float = 1.0) -> str:
    """A metric for `info`, or '?' when a hand-edited card holds something else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return format(value * scale if scale != 1.0 else value, spec)


DATASETS = ("breast_cancer", "iris", "wine", "digits", "diabetes")
TASKS = ("auto", "classification", "regression")
# --task auto: a numeric target with at most this many distinct integer values is a class label
AUTO_MAX_CLASSES = 20


@app.command("evaluate")
def evaluate(
    csv: Annotated[
        Path | None,
        typer.Argument(
            help="Your own CSV file (comma-separated, UTF-8, a header line) to cross-validate "
            "on, with --target. Empty cells are missing values; text columns are categorical.",
            show_default=False,
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help=f"A scikit-learn bundled data set instead of a CSV: {', '.join(DATASETS)} "
            "(default breast_cancer).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="The CSV's column to predict (required with a CSV).", show_default=False),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="auto, classification or regression. auto: classification when the target "
            f"holds text or at most {AUTO_MAX_CLASSES} distinct integers, else regression."
        ),
    ] = "auto",
    context: Annotated[
        str | None,
        typer.Option(
            help="Context strategy, passed to the estimator as context= (e.g. auto, subsample, "
            "full, knn, tuned). Default: the estimator's own.",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str, typer.Option(help="'default' (bundled), a run directory or a checkpoint file.")
    ] = "default",
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    n_estimators: Annotated[int, typer.Option(help="Ensemble members.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed of the folds and the ensemble.")] = 0,
) -> None:
    """Cross-validate PFNClassifier / PFNRegressor on your CSV file or a bundled data set,
    offline."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.registry import unknown_message

        if folds < 2:
            raise InvalidConfigError(f"--folds must be >= 2. Got {folds}.")
        if task not in TASKS:
            raise InvalidConfigError("--task: " + unknown_message("task", task, list(TASKS)))
        if csv is not None:
            if dataset is not None:
                raise InvalidConfigError(
                    f"Give a CSV file or --dataset, not both. Got '{csv}' and --dataset "
                    f"{dataset}; leave one out."
                )
            if target is None:
                raise InvalidConfigError(
                    "--target is required with a CSV file: name the column to predict, e.g. "
                    f"pfnkit evaluate {csv} --target COLUMN."
                )
            X, y, regression = _read_csv_table(csv, target, task, folds)
            name = f"{csv.name} (target {target!r}, "
        else:
            if target is not None:
                raise InvalidConfigError(
                    f"--target {target!r} names a column of a CSV file, but none was given. "
                    "Give the CSV file (pfnkit evaluate FILE.csv --target COLUMN) or leave "
                    "--target out."
                )
            dataset = dataset or "breast_cancer"
            if dataset not in DATASETS:
                raise InvalidConfigError(unknown_message("data set", dataset, list(DATASETS)))
            from sklearn import datasets as skd

            X, y = getattr(skd, f"load_{dataset}")(return_X_y=True)
            regression = dataset == "diabetes"
            own = "regression" if regression else "classification"
            if task not in ("auto", own):
                raise InvalidConfigError(
                    f"--task {task} does not fit --dataset {dataset}, a {own} data set. Leave "
                    "--task out."
                )
            name = f"{dataset} ("
        estimator_kwargs: dict[str, Any] = dict(
            checkpoint=checkpoint, n_estimators=n_estimators, random_state=seed
        )
        if context is not None:  # the estimator validates it (and knows the allowed values)
            estimator_kwargs["context"] = context
        scores, seconds = _cross_validate(
            X, y, regression=regression, folds=folds, seed=seed, estimator_kwargs=estimator_kwargs
        )
        what = (
            f"RMSE {scores[0]:.3f}, NLL {scores[1]:.3f}"
            if regression
            else f"ROC AUC {scores[0]:.4f}, accuracy {scores[1]:.4f}, log loss {scores[2]:.4f}"
        )
        out.print(
            f"{name}{X.shape[0]} rows, {X.shape[1]} features), {folds}-fold CV: {what}; "
            f"fit+predict {seconds:.2f} s per fold (median)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _cross_validate(
    X: Any,
    y: Any,
    *,
    regression: bool,
    folds: int,
    seed: int,
    estimator_kwargs: dict[str, Any],
) -> tuple[Any, float]:
    """Cross-validate a PFNRegressor or PFNClassifier on (X, y).

    Folds are shuffled KFold (regression) or StratifiedKFold (classification), seeded by
    ``seed``. X is an array or a DataFrame (passed to the estimator as it is).

    Returns:
        The metrics' means over folds (RMSE, NLL; or ROC AUC, accuracy, log loss) and the
        median seconds of one fold's fit + predict.
    """
    import time
    import warnings

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold

    from pfnkit import PFNClassifier, PFNRegressor
    from pfnkit.cli.common import is_parameter_error, one_line
    from pfnkit.exceptions import InvalidConfigError, PfnkitError

    estimator = PFNRegressor if regression else PFNClassifier
    if "context" in estimator_kwargs and "context" not in estimator().get_params():
        raise InvalidConfigError(
            f"--context needs an estimator with a 'context' parameter; this pfnkit's "
            f"{estimator.__name__} has none. Upgrade pfnkit or leave --context out."
        )
    classes = None if regression else np.unique(y)
    take = (lambda a, i: a.iloc[i]) if hasattr(X, "iloc") else (lambda a, i: a[i])
    split = (KFold if regression else StratifiedKFold)(folds, shuffle=True, random_state=seed)
    scores: list[tuple[float, ...]] = []
    times: list[float] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with warnings.catch_warnings(), progress:
        # the estimators' context-subsample notes; small classes are noted by the caller
        warnings.simplefilter("ignore", UserWarning)
        try:
            splits = list(split.split(X, y))
        except ValueError as e:
            raise InvalidConfigError(f"Cannot split into {folds} folds: {one_line(e)}") from e
        bar = progress.add_task(f"{folds}-fold CV", total=folds)
        for i, (train, test) in enumerate(splits, 1):
            x_test, y_test = take(X, test), y[test]
            t0 = time.perf_counter()
            try:
                est = estimator(**estimator_kwargs)
                est.fit(take(X, train), y[train])
                if regression:
                    pred, nll = est.predict(x_test), est.nll(x_test, y_test)
                else:
                    proba = est.predict_proba(x_test)
            except ValueError as e:
                if isinstance(e, PfnkitError) or is_parameter_error(e):
                    raise
                # the estimators raise ValueError for data they cannot take (scikit-learn's
                # contract): a user error here, not a bug (--debug shows the traceback)
                raise PfnkitError(
                    f"{estimator.__name__} failed on fold {i} of {folds}: {one_line(e)}"
                ) from e
            times.append(time.perf_counter() - t0)
            if regression:
                rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
                scores.append((rmse, float(np.mean(nll))))
            else:
                assert classes is not None
                # a fold's training rows may lack a class: its column is 0 for every test row
                full = np.zeros((len(test), len(classes)))
                column = {c: j for j, c in enumerate(classes)}
                full[:, [column[c] for c in est.classes_]] = proba
                # macro one-vs-rest over the classes this test fold holds (sklearn's "ovr"
                # when it holds all; that one raises when a class is missing)
                aucs = [
                    roc_auc_score(y_test == c, full[:, j])
                    for j, c in enumerate(classes)
                    if 0 < np.sum(y_test == c) < len(y_test)
                ]
                auc = float(np.mean(aucs)) if aucs else float("nan")
                acc = float(np.mean(classes[full.argmax(1)] == y_test))
                scores.append((auc, acc, float(log_loss(y_test, full, labels=classes))))
            progress.advance(bar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN AUC: every fold one class
        means = np.nanmean(np.array(scores, dtype=float), axis=0)
    return means, float(np.median(times))


def _read_csv_table(path: Path, target: str, task: str, folds: int) -> tuple[Any, Any, bool]:
    """Read a user's CSV into (X DataFrame, y array, regression?), with notes on stderr."""
    import numpy as np

    from pfnkit.cli.common import one_line
    from pfnkit.exceptions import InvalidConfigError, PfnkitError
    from pfnkit.registry import closest

    try:
        import pandas as pd
    except ImportError:
        raise PfnkitError(
            "Reading a CSV file needs pandas, which pfnkit does not install: pip install pandas"
        ) from None
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InvalidConfigError(f"The CSV file '{path}' {what}. Give the path of a CSV file.")
    try:
        # utf-8-sig: also reads the byte-order mark that Excel writes in front of UTF-8
        df = pd.read_csv(path, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        byte = f" (byte 0x{e.object[e.start]:02x})" if isinstance(e.object, bytes) else ""
        raise InvalidConfigError(
            f"'{path}' is not UTF-8 text{byte}. Save it as UTF-8 (e.g. 'CSV UTF-8' in Excel, "
            f"or iconv -f latin1 -t utf-8 {path.name} > utf8.csv)."
        ) from None
    except pd.errors.EmptyDataError:
        raise InvalidConfigError(
            f"'{path}' is empty. A CSV file needs a header line naming the columns, then one "
            "line per row."
        ) from None
    except pd.errors.ParserError as e:
        raise InvalidConfigError(f"'{path}' is not a valid CSV file: {one_line(e)}") from None
    columns = [str(c) for c in df.columns]
    if len(columns) < 2:
        sep = next((s for s in (";", "\t", "|") if s in columns[0]), None)
        raise InvalidConfigError(
            f"'{path}' has one column ({columns[0]!r}); evaluate needs the target and at least "
            "one feature column, separated by commas."
            + (f" This file looks separated by {sep!r}: save it comma-separated." if sep else "")
        )
    if target not in columns:
        folded = {c.strip().lower(): c for c in columns}
        hint = folded.get(target.strip().lower()) or closest(target, columns)
        shown = ", ".join(repr(c) for c in columns[:30])
        if len(columns) > 30:
            shown += f", ... ({len(columns)} in all)"
        raise InvalidConfigError(
            f"--target {target!r} is not a column of {path.name}. Columns: {shown}."
            + (f" Did you mean {hint!r}?" if hint else "")
        )
    target_col = df.columns[columns.index(target)]
    missing = df[target_col].isna().to_numpy()
    if missing.any():
        err.print(
            f"Note: dropped {int(missing.sum())} of {len(df)} rows whose target {target!r} is "
            "missing (empty).",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        df = df[~missing]
    if len(df) < folds:
        raise InvalidConfigError(
            f"--folds {folds} needs at least {folds} rows with a target; {path.name} has "
            f"{len(df)}. Give fewer --folds or more rows."
        )
    y_col, X = df[target_col], df.drop(columns=[target_col])
    numeric = pd.api.types.is_numeric_dtype(y_col) and not pd.api.types.is_bool_dtype(y_col)
    distinct = y_col.unique()
    integer = numeric and bool(np.all(np.mod(distinct.astype(float), 1) == 0))
    if task == "auto":
        classification = not numeric or (integer and len(distinct) <= AUTO_MAX_CLASSES)
        why = (
            "holds text"
            if not numeric
            else f"holds {len(distinct)} distinct {'integers' if integer else 'numbers'}"
        )
        other = "regression" if classification else "classification"
        override = f"; --task {other} to override" if numeric else ""
        chosen = (
            f"{'classification' if classification else 'regression'} "
            f"(target {target!r} {why}{override})"
        )
    else:
        classification = task == "classification"
        if not classification and not numeric:
            text = y_col[pd.to_numeric(y_col, errors="coerce").isna()].iloc[0]
            raise InvalidConfigError(
                f"--task regression needs a numeric target; column {target!r} holds text such "
                f"as {text!r}. Use --task classification, or make every target a number."
            )
        if classification and numeric and not integer:
            frac = next(float(v) for v in distinct if float(v) % 1)
            raise InvalidConfigError(
                f"--task classification needs class labels; column {target!r} holds fractional "
                f"numbers such as {frac:g}. Use --task regression."
            )
        chosen = f"{task} (--task)"
    err.print(f"Task: {chosen}", highlight=False, markup=False, soft_wrap=True)
    if classification:
        y = y_col.to_numpy()
        labels, counts = np.unique(y, return_counts=True)
        if labels.size < 2:
            raise InvalidConfigError(
                f"Classification needs at least 2 classes; target {target!r} holds one value "
                f"({labels[0]!r}) in every row. Choose another --target."
            )
        if counts.min() < folds:
            small = labels[counts < folds]
            err.print(
                f"Note: {small.size} class(es) (e.g. {small[0]!r}) have fewer rows than the "
                f"{folds} folds; some folds' training or test rows lack them.",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    else:
        y = y_col.to_numpy(dtype=float)
    return X, y, not classification


@app.command("export")
def export(
    path: Annotated[Path, typer.Argument(help="Run directory or .pt checkpoint.")],
    out: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    card: Annotated[
        bool, typer.Option(help="Also write a markdown card next to it (OUT.md).")
    ] = True,
) -> None:
    """Export weights and configs to safetensors (no optimizer state), with a card."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.train.checkpoint import card_markdown, read_checkpoint, write_safetensors

        if out.suffix != ".safetensors":
            raise InvalidConfigError(f"OUT must end in .safetensors. Got '{out}'.")
        data = read_checkpoint(path)
        write_safetensors(data, out)
        msg = f"Wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
        if card:
            text = card_markdown(data, title=out.stem)
            card_path = out.with_suffix(".md")
            card_path.write_text(text)
            msg += f" and {card_path}"
        err.print(msg, highlight=False, markup=False)


@app.command("grow")
def grow(
    path: Annotated[Path, typer.Argument(help="Run directory, .pt or .safetensors checkpoint.")],
    out_path: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    layers: Annotated[
        int, typer.Option("--layers", help="Layers of the grown network (more than now).")
    ],
) -> None:
    """Make a deeper copy of a trained PFN that computes the same function (each new layer
    copies the one below it with its residual outputs at zero), to train further with
    `pfnkit train-prior RECIPE --init-from OUT` and a recipe with the new n_layers."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.train.checkpoint import read_checkpoint, write_safetensors
        from pfnkit.train.grow import grow_layers

        if out_path.suffix != ".safetensors":
            raise InvalidConfigError(f"OUT must end in .safetensors. Got '{out_path}'.")
        data = read_checkpoint(path)
        grown = grow_layers(data, layers, source=str(path))
        write_safetensors(grown, out_path)
        old = data["model_config"].get("n_layers")
        err.print(
            f"Wrote {out_path}: {old} -> {layers} layers, the same outputs. Train it with a "
            f"recipe whose [model] has n_layers = {layers}: pfnkit train-prior RECIPE "
            f"--init-from {out_path} --out RUN",
            highlight=False,
            markup=False,
        )


@app.command("calibrate")
def calibrate(
    path: Annotated[
        Path, typer.Argument(help="A classifier or treatment-effect .safetensors checkpoint.")
    ],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write the calibrated copy here (default: PATH, in place)."),
    ] = None,
    draws: Annotated[
        int, typer.Option(help="Held-out prior tables (studies) to calibrate on.")
    ] = 300,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the held-out draws (default: 30000000 for classifiers, 20000000 "
            "for treatment effects)."
        ),
    ] = None,
) -> None:
    """Calibrate a checkpoint on held-out draws of its own prior and store the result on its
    card: classifiers get a softmax temperature (lowest log loss through PFNClassifier),
    treatment-effect checkpoints CATE and ATE interval scales."""
    with user_errors():
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.train.checkpoint import card_of, read_checkpoint, write_safetensors

        if path.suffix != ".safetensors":
            raise InvalidConfigError(
                f"PATH must be a .safetensors checkpoint (export a run first with `pfnkit "
                f"export`). Got '{path}'."
            )
        target = out_path if out_path is not None else path
        if target.suffix != ".safetensors":
            raise InvalidConfigError(f"--out must end in .safetensors. Got '{target}'.")
        if draws < 20:
            raise InvalidConfigError(
                f"--draws must be >= 20 (fewer cannot place a 95th percentile or tell "
                f"temperatures apart). Got {draws}."
            )
        from pfnkit.train.checkpoint import PFNCard, model_from_data

        data = read_checkpoint(path)
        model = model_from_data(data, path)
        model.card = card_of(data)
        kind = PFNCard.of(model).kind
        what = "held-out studies" if kind == "treatment-effect" else "held-out tables"

        def progress(done: int, total: int) -> None:
            if done % 25 == 0 or done == total:
                err.print(f"  {done}/{total} {what}", highlight=False)

        if kind == "treatment-effect":
            from pfnkit.estimators.causal import calibrate_intervals

            result = calibrate_intervals(
                model, draws=draws, seed=20_000_000 if seed is None else seed, progress=progress
            )
        elif kind == "classifier":
            from pfnkit.estimators.calibration import CALIBRATION_SEED, calibrate_temperature

            result = calibrate_temperature(
                model,
                draws=draws,
                seed=CALIBRATION_SEED if seed is None else seed,
                progress=progress,
            )
        else:
            raise InvalidConfigError(
                "pfnkit calibrate supports treatment-effect checkpoints (interval scales) and "
                "classifier checkpoints (softmax temperature). Got a "
                f"{kind or 'prior-less'} checkpoint, "
                "which has nothing to calibrate here (PFNRegressor uses the bar "
                "distribution as trained, softmax_temperature=1.0)."
            )
        data["calibration"] = result
        write_safetensors(data, target)  # atomic: a failed write leaves the old file
        out.print_json(json.dumps(result))
        err.print(f"Wrote {target} with its calibration on the card.", highlight=False)


def run() -> None:
    """Entry point: ``--debug`` anywhere on the line shows tracebacks."""
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
        common.DEBUG = True
    app()
