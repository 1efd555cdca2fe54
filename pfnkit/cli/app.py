"""The typer application: ``pfnkit train-prior``, ``info``, ``evaluate``, ``export``,
``curves`` and ``hpo``."""

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
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
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
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a PFN on a prior (or a mixture) and write checkpoints to --out."""
    with user_errors():
        import torch

        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.train import Trainer
        from pfnkit.train.recipe import load_recipe, make_run

        if threads is not None:
            torch.set_num_threads(threads)
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
        )
        if resume is not None:
            if prior_or_recipe is not None or prior is not None:
                raise InvalidConfigError(
                    "--resume continues a run with its own prior; drop the prior/recipe argument."
                )
            if out_dir is not None and out_dir != resume:
                raise InvalidConfigError(
                    "--resume writes to the run it continues; drop --out (or make it equal)."
                )
            trainer = Trainer.resume(resume, model_overrides=model_o, train_overrides=train_o)
        else:
            source = prior_or_recipe or prior
            if source is None:
                raise InvalidConfigError(
                    "Give a prior name or recipe file, e.g. `pfnkit train-prior --prior gp` or "
                    "`pfnkit train-prior priors/gp.toml`, or --resume RUN_DIR."
                )
            is_file = source.endswith(".toml") or Path(source).is_file()
            recipe = load_recipe(source) if is_file else {"prior": {"name": source}}
            p, model_cfg, train_cfg = make_run(recipe, model=model_o, train=train_o)
            if out_dir is None:
                out_dir = Path("runs") / (Path(source).stem if is_file else source)
            trainer = Trainer(p, model_cfg, train_cfg, out_dir, overwrite=overwrite)
        _train_with_progress(trainer, quiet)


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


def _train_with_progress(trainer: Any, quiet: bool) -> None:
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
                completed=info.step,
                loss=ema[-1],
                rate=info.datasets_per_s
                / (tc.batch_size * tc.accumulate * trainer.dist.world_size),
            )

        result = trainer.run(update)
    if trainer.dist.is_main:
        state = "Stopped (interrupted)" if trainer.interrupted else "Done"
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
        from pfnkit.train.checkpoint import card_of, read_checkpoint

        data = read_checkpoint(path)
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
            f"metrics      loss {met.get('loss', float('nan')):.4f}, "
            f"{met.get('wall_time', 0.0) / 60:.1f} min, {met.get('datasets_seen', 0):,} datasets",
            f"resumable    {'yes' if 'optimizer' in data else 'no (weights only)'}",
        ]
        out.print("\n".join(lines), highlight=False, soft_wrap=True, markup=False)


DATASETS = ("breast_cancer", "iris", "wine", "digits", "diabetes")


@app.command("evaluate")
def evaluate(
    dataset: Annotated[
        str, typer.Option(help=f"A scikit-learn bundled data set: {', '.join(DATASETS)}.")
    ] = "breast_cancer",
    checkpoint: Annotated[
        str, typer.Option(help="'default' (bundled), a run directory or a checkpoint file.")
    ] = "default",
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    n_estimators: Annotated[int, typer.Option(help="Ensemble members.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed of the folds and the ensemble.")] = 0,
) -> None:
    """Cross-validate PFNClassifier / PFNRegressor on a bundled data set, offline."""
    with user_errors():
        import time
        import warnings

        import numpy as np
        from sklearn import datasets as skd
        from sklearn.model_selection import KFold, StratifiedKFold

        from pfnkit import PFNClassifier, PFNRegressor
        from pfnkit.exceptions import InvalidConfigError
        from pfnkit.registry import unknown_message

        if dataset not in DATASETS:
            raise InvalidConfigError(unknown_message("data set", dataset, list(DATASETS)))
        if folds < 2:
            raise InvalidConfigError(f"--folds must be >= 2. Got {folds}.")
        X, y = getattr(skd, f"load_{dataset}")(return_X_y=True)
        regression = dataset == "diabetes"
        split = (KFold if regression else StratifiedKFold)(folds, shuffle=True, random_state=seed)
        rows: list[tuple[float, ...]] = []
        times: list[float] = []
        for train, test in split.split(X, y):
            est = (PFNRegressor if regression else PFNClassifier)(
                checkpoint=checkpoint, n_estimators=n_estimators, random_state=seed
            )
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                est.fit(X[train], y[train])
                if regression:
                    pred = est.predict(X[test])
                    nll = float(np.mean(est.nll(X[test], y[test])))
                    rows.append((float(np.sqrt(np.mean((pred - y[test]) ** 2))), nll))
                else:
                    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

                    proba = est.predict_proba(X[test])
                    auc = (
                        roc_auc_score(y[test], proba[:, 1])
                        if proba.shape[1] == 2
                        else roc_auc_score(y[test], proba, multi_class="ovr")
                    )
                    acc = accuracy_score(y[test], est.classes_[proba.argmax(1)])
                    rows.append((auc, acc, log_loss(y[test], proba, labels=est.classes_)))
            times.append(time.perf_counter() - t0)
        m = np.mean(rows, axis=0)
        what = (
            f"RMSE {m[0]:.3f}, NLL {m[1]:.3f}"
            if regression
            else f"ROC AUC {m[0]:.4f}, accuracy {m[1]:.4f}, log loss {m[2]:.4f}"
        )
        out.print(
            f"{dataset} ({X.shape[0]} rows, {X.shape[1]} features), {folds}-fold CV: {what}; "
            f"fit+predict {np.median(times):.2f} s per fold (median)",
            highlight=False,
            markup=False,
        )


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


def run() -> None:
    """Entry point: ``--debug`` anywhere on the line shows tracebacks."""
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
        common.DEBUG = True
    app()
