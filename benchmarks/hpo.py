"""Freeze-thaw HPO on LCBench (YAHPO surrogate): pfnkit's FreezeThaw against optuna baselines.

    # the full run: 17 dev tasks x 10 seeds x 5 methods, budget 1000 epochs per run
    OMP_NUM_THREADS=1 benchmarks/.venv-yahpo/bin/python benchmarks/hpo.py
    # a smoke test with a small dev FT-PFN (pfnkit train-prior priors/freeze-thaw.toml \
    #   --out runs/ft-dev --steps 300 --d-model 64 --n-layers 2 --threads 1)
    OMP_NUM_THREADS=1 benchmarks/.venv-yahpo/bin/python benchmarks/hpo.py --tasks 3945 7593 \
        --seeds 2 --budget 300 --surrogate runs/ft-dev --out runs/hpo_smoke
    # some methods only; --resume skips the runs already in OUT/runs.jsonl
    ... benchmarks/hpo.py --methods ft tpe-hb --resume

An epoch is one step of one configuration (at most 52 per configuration); the metric is
val_accuracy / 100, maximised. Each configuration's 52-epoch curve is computed once (one
batched surrogate call, cached per run) and served step by step. After every epoch spent a
run records its incumbent: the best FINAL (epoch-52) value among configurations trained to
52 epochs. Normalised regret = (y* - incumbent) / (y* - y_ref), clipped at 0, with y* the best
and y_ref the median final value of N_REF random configurations of the task (1 before any
configuration finished). A second table and plot panel score the same runs by the best
value seen at any epoch (ifBO's "anytime" regret), which also counts configurations that
were not trained to the end. Needs the benchmark venv (see ``benchmarks/_lcbench.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _lcbench import DEV_TASKS, N_EPOCHS, LCBench, skip_if_unavailable
from numpy.typing import NDArray

from pfnkit.hpo.bench import FRACTIONS, METHODS, fraction_index, preload, run_method

N_REF, REF_SEED = 5000, 20240917


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def optuna_space(cs: Any) -> dict[str, Any]:
    """ConfigSpace hyperparameters -> optuna distributions (constants dropped)."""
    import ConfigSpace.hyperparameters as csh
    import optuna.distributions as od

    out: dict[str, Any] = {}
    for hp in cs.get_hyperparameters():
        if isinstance(hp, csh.Constant):
            continue
        if isinstance(hp, csh.UniformFloatHyperparameter):
            out[hp.name] = od.FloatDistribution(float(hp.lower), float(hp.upper), log=hp.log)
        elif isinstance(hp, csh.UniformIntegerHyperparameter):
            out[hp.name] = od.IntDistribution(int(hp.lower), int(hp.upper), log=hp.log)
        elif isinstance(hp, csh.CategoricalHyperparameter):
            out[hp.name] = od.CategoricalDistribution(list(hp.choices))
        else:
            raise TypeError(f"unsupported hyperparameter {hp!r}")
    return out


class Task:
    """One LCBench task: optuna space, reference values, per-run cached curves (fractions)."""

    def __init__(self, task: str) -> None:
        self.name = task
        self.lc = LCBench(task)
        self.space = optuna_space(self.lc.space())
        self.cache: dict[tuple[Any, ...], NDArray[np.float64]] = {}
        self.curve_time = 0.0

    def reset(self) -> None:
        self.cache, self.curve_time = {}, 0.0

    def curves(self, configs: list[dict[str, Any]]) -> NDArray[np.float64]:
        return np.clip(self.lc.curves(configs, check=False) / 100.0, 0.0, 1.0)

    def curve(self, params: dict[str, Any]) -> NDArray[np.float64]:
        key = tuple(sorted(params.items()))
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = self.curves([params])[0]
            self.curve_time += time.perf_counter() - t0
        return self.cache[key]

    def reference(self, path: Path) -> tuple[float, float]:
        """(y*, y_ref): best and median final value of N_REF random configs, cached in path."""
        refs: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        r = refs.get(self.name)
        if r is None or (r["n"], r["seed"]) != (N_REF, REF_SEED):
            final = self.curves(self.lc.sample_configs(N_REF, REF_SEED))[:, -1]
            r = {"n": N_REF, "seed": REF_SEED, "best": final.max(), "median": np.median(final)}
            refs[self.name] = {k: float(v) for k, v in r.items()}
            path.write_text(json.dumps(refs, indent=1))
        return float(r["best"]), float(r["median"])


def regret_curve(incumbent: list[float | None], y_star: float, y_ref: float) -> NDArray[np.float64]:
    inc = np.array([y_ref if v is None else v for v in incumbent], dtype=np.float64)
    return np.maximum((y_star - inc) / (y_star - y_ref), 0.0)


def one_run(
    task: Task,
    method: str,
    seed: int,
    budget: int,
    surrogate: str,
    ref: tuple[float, float],
    n_fresh: int | None = None,
) -> dict[str, Any]:
    task.reset()

    def objective(job: Any) -> list[float]:  # served from the configuration's cached curve
        return [float(v) for v in task.curve(job.params)[job.from_step : job.to_step]]

    # a fixed study name: HyperbandPruner assigns brackets by a hash of it
    run = run_method(
        method,
        objective,
        task.space,
        budget=budget,
        max_steps=N_EPOCHS,
        seed=seed,
        surrogate=surrogate,
        study_name=f"lcbench-{task.name}-{method}-{seed}",
        n_fresh=n_fresh,
    )
    reg = regret_curve(run.incumbent, *ref)
    reg_any = regret_curve(list(run.anytime), *ref)
    return {
        "task": task.name,
        "method": method,
        "seed": seed,
        "budget": budget,
        "surrogate": surrogate if method == "ft" else None,
        "n_fresh": n_fresh if method == "ft" else None,
        "regret": {f"{f:g}": float(reg[fraction_index(budget, f)]) for f in FRACTIONS},
        "regret_any": {f"{f:g}": float(reg_any[fraction_index(budget, f)]) for f in FRACTIONS},
        "run_time": run.run_time,
        "curve_time": task.curve_time,
        "n_configs": len(task.cache),
        "ask_times": [round(t, 5) for t in run.ask_times],
        "incumbent": [None if v is None else round(v, 6) for v in run.incumbent],
        "anytime": [round(v, 6) for v in run.anytime],
    }


def _mean_se(x: list[float]) -> str:
    m = statistics.fmean(x)
    if len(x) < 2:
        return f"{m:.3f}"
    return f"{m:.3f} ({statistics.stdev(x) / math.sqrt(len(x)):.3f})"


def table(runs: list[dict[str, Any]], methods: list[str], caption: str, key: str = "regret") -> str:
    """Mean (standard error) of runs[key] at each budget fraction, per method."""
    lines = [
        caption,
        "",
        "| method | regret @25% | regret @50% | regret @100% | ask time (median) | run time |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [r for r in runs if r["method"] == m and key in r]
        if not rs:
            continue
        cells = [_mean_se([r[key][f"{f:g}"] for r in rs]) for f in FRACTIONS]
        asks = [t for r in rs for t in r["ask_times"]]
        ask = f"{statistics.median(asks) * 1e3:.1f} ms" if asks else "-"
        rt = f"{statistics.fmean(r['run_time'] for r in rs):.3g} s"
        lines.append(f"| {METHODS[m]} | {' | '.join(cells)} | {ask} | {rt} |")
    return "\n".join(lines)


def plot(
    runs: list[dict[str, Any]], methods: list[str], refs: dict[str, Any], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    panels = (("incumbent", "best final (epoch-max) value"), ("anytime", "best value at any epoch"))
    for ax, (key, what) in zip(axes, panels, strict=True):
        for m in methods:
            rs = [r for r in runs if r["method"] == m and key in r]
            if not rs:
                continue
            reg = np.mean([regret_curve(r[key], *refs[r["task"]]) for r in rs], axis=0)
            ax.plot(np.arange(1, reg.size + 1), np.maximum(reg, 1e-4), label=METHODS[m])
        ax.set(xlabel="epochs spent", yscale="log", title=what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean normalised regret")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", nargs="+", default=list(DEV_TASKS))
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..S-1 per task and method")
    ap.add_argument("--budget", type=int, default=1000, help="epochs per run")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--surrogate", default="default", help="FT-PFN checkpoint path")
    ap.add_argument(
        "--n-fresh", type=int, default=None, help="fresh candidates per ask (FreezeThaw's default)"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/hpo_bench"))
    ap.add_argument("--plot", type=Path, default=None, help="default OUT/regret.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="reuse the runs in OUT/runs.jsonl")
    args = ap.parse_args()
    skip_if_unavailable()

    import optuna
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "runs.jsonl"
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.resume and jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            # a freeze-thaw run is reused only with the same surrogate and n_fresh
            same = r["method"] != "ft" or (r["surrogate"], r.get("n_fresh")) == (
                args.surrogate,
                args.n_fresh,
            )
            if r["budget"] == args.budget and same:
                done[(r["task"], r["method"], r["seed"])] = r
    elif jsonl.exists():
        jsonl.unlink()

    # load the networks once, outside the timed runs
    preload(args.methods, surrogate=args.surrogate, max_steps=N_EPOCHS)
    runs: list[dict[str, Any]] = []
    refs: dict[str, tuple[float, float]] = {}
    t_start = time.perf_counter()
    for task_name in args.tasks:
        task = Task(task_name)
        refs[task_name] = task.reference(args.out / "reference.json")
        _log(f"task {task_name}: y* {refs[task_name][0]:.4f}, y_ref {refs[task_name][1]:.4f}")
        for seed in range(args.seeds):
            for m in args.methods:
                r = done.get((task_name, m, seed))
                if r is None:
                    r = one_run(
                        task, m, seed, args.budget, args.surrogate, refs[task_name], args.n_fresh
                    )
                    with jsonl.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    asks = r["ask_times"]
                    _log(
                        f"  {task_name} seed {seed} {METHODS[m]:<26} regret@100% "
                        f"{r['regret']['1']:.3f}  {r['run_time']:6.1f} s "
                        f"(curves {r['curve_time']:.1f} s, {r['n_configs']} configs"
                        + (f", ask median {statistics.median(asks) * 1e3:.1f} ms)" if asks else ")")
                    )
                runs.append(r)
    caption = (
        f"LCBench (YAHPO surrogate) val accuracy: {len(args.tasks)} task(s), {args.seeds} "
        f"seed(s), budget {args.budget} epochs (at most {N_EPOCHS} per configuration); "
        f"normalised regret (mean over tasks x seeds, standard error) against the best and "
        f"median of {N_REF} random configurations; FT-PFN: {args.surrogate}"
        + ("" if args.n_fresh is None else f", {args.n_fresh} fresh candidates per ask")
        + "; "
        f"{args.threads} thread(s)"
    )
    print(table(runs, args.methods, caption))
    print()
    print(
        table(
            runs,
            args.methods,
            "The same runs scored by the best value seen at any epoch (ifBO's anytime "
            "regret; counts configurations that were not trained to the end):",
            key="regret_any",
        )
    )
    title = f"LCBench, {len(args.tasks)} tasks x {args.seeds} seeds"
    plot_path = args.plot or args.out / "regret.png"
    plot(runs, args.methods, refs, plot_path, title)
    args_json = {k: str(v) for k, v in vars(args).items()}
    results = {"caption": caption, "args": args_json, "reference": refs, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(results))
    _log(f"{len(runs)} runs in {time.perf_counter() - t_start:.0f} s; -> {args.out}, {plot_path}")


if __name__ == "__main__":
    main()
