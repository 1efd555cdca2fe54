"""LC-PFN on LCBench (YAHPO surrogate): curve extrapolation and predictive early stopping.

Used by ``benchmarks/curves.py``; both functions return a markdown table (caption line +
table) and print progress to stderr. Needs the benchmark venv (see ``_lcbench.py``)::

    OMP_NUM_THREADS=1 benchmarks/.venv-yahpo/bin/python benchmarks/_curves_lcbench.py  # smoke

Curves are the surrogate's ``val_accuracy`` / 100, i.e. fractions in [0, 1]; log-likelihoods
are densities of that fraction; errors and regrets are reported in accuracy points (x 100).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from _lcbench import N_EPOCHS, LCBench
from numpy.typing import NDArray
from scipy.optimize import OptimizeWarning, curve_fit

from pfnkit.curves import CurveExtrapolator

CUT_FRACTIONS = (0.1, 0.2, 0.4)  # observed part of the 52 epochs -> 5, 10, 21 epochs
METHODS = ("LC-PFN", "last value", "pow3 fit")
Z90 = 1.6448536269514722  # standard normal 0.95 quantile: central 90 % interval
_issues: Counter[str] = Counter()  # data / fitting problems, reported on stderr


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _task_curves(task: str, n_configs: int, seed: int) -> NDArray[np.float64]:
    """val_accuracy curves of ``n_configs`` random configs as fractions, (n_configs, 52)."""
    lc = LCBench(task)
    y = lc.curves(lc.sample_configs(n_configs, seed)) / 100.0
    if not np.all(np.isfinite(y)):
        raise ValueError(f"task {task}: the surrogate returned non-finite accuracies")
    outside = int(np.sum((y < 0) | (y > 1)))
    if outside:  # the surrogate is a regression model; a fraction must stay in [0, 1]
        _issues["surrogate values outside [0, 100] %, clipped"] += outside
        y = np.clip(y, 0.0, 1.0)
    return y


def _pow3(t: NDArray[np.float64], c: float, a: float, alpha: float) -> NDArray[np.float64]:
    return c - a * t ** (-alpha)


def _pow3_final(obs: NDArray[np.float64]) -> float:
    """Least-squares pow3 fit y(t) = c - a t^-alpha to obs (steps 1..n), value at epoch 52."""
    t = np.arange(1.0, obs.size + 1)
    p0 = (float(np.clip(obs[-1], 0, 1)), float(np.clip(obs[-1] - obs[0], -1, 1)), 0.5)
    bounds = ([0.0, -1.0, 1e-3], [1.0, 1.0, 5.0])  # asymptote in [0, 1], |y(1) - c| <= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OptimizeWarning)
        try:
            p, _ = curve_fit(_pow3, t, obs, p0=p0, bounds=bounds, maxfev=2000)
        except (RuntimeError, ValueError):
            _issues["pow3 fit failed -> last value"] += 1
            return float(obs[-1])
    if caught:  # e.g. "Covariance of the parameters could not be estimated" (flat curves)
        _issues["pow3 fit: OptimizeWarning (fit kept)"] += 1
    final = float(_pow3(np.array([float(N_EPOCHS)]), *p)[0])
    if not math.isfinite(final):
        _issues["pow3 fit non-finite -> last value"] += 1
        return float(obs[-1])
    return float(np.clip(final, 0.0, 1.0))


def _caption(what: str, tasks: Sequence[str], n_configs: int, seed: int) -> str:
    issues = "; ".join(f"{k}: {v}" for k, v in sorted(_issues.items()))
    return (
        f"{what} LCBench (YAHPO surrogate) val accuracy, {len(tasks)} task(s) "
        f"({', '.join(tasks)}), {n_configs} random configs each (seed {seed}), 52 epochs."
        + (f" Notes: {issues}." if issues else "")
    )


def extrapolation_table(
    tasks: Sequence[str], n_configs: int = 40, seed: int = 0, checkpoint: str = "default"
) -> str:
    """Predict the final (epoch-52) accuracy from the first 10 / 20 / 40 % of each curve."""
    ex = CurveExtrapolator(checkpoint)
    _issues.clear()
    cuts = [round(f * N_EPOCHS) for f in CUT_FRACTIONS]
    finals: list[NDArray[np.float64]] = []  # per task, (n_configs,)
    point: dict[tuple[int, str], list[NDArray[np.float64]]] = {}  # (cut, method) -> per task
    loglik: dict[tuple[int, str], list[NDArray[np.float64]]] = {}
    cover: dict[tuple[int, str], list[NDArray[np.bool_]]] = {}
    ms: dict[tuple[int, str], list[float]] = {}  # time per curve, ms

    def put(k: int, m: str, p: NDArray[np.float64], times: list[float]) -> None:
        point.setdefault((k, m), []).append(p)
        ms.setdefault((k, m), []).extend(times)

    t_start = time.perf_counter()
    for i, task in enumerate(tasks):
        y = _task_curves(task, n_configs, seed)
        final = y[:, -1]
        finals.append(final)
        for k in cuts:
            obs = y[:, :k]
            t0 = time.perf_counter()  # one batch: predict + median + interval + density
            pred = ex.predict(obs, at=[N_EPOCHS], max_steps=N_EPOCHS, value_range=(0.0, 1.0))
            med = pred.median()[:, 0]
            lo, hi = pred.interval(0.9)
            ll = pred.logpdf(final)[:, 0]
            put(k, "LC-PFN", med, [(time.perf_counter() - t0) * 1e3 / len(y)])
            loglik.setdefault((k, "LC-PFN"), []).append(ll)
            cover.setdefault((k, "LC-PFN"), []).append((lo[:, 0] <= final) & (final <= hi[:, 0]))

            t0 = time.perf_counter()
            last = obs[:, -1].copy()
            put(k, "last value", last, [(time.perf_counter() - t0) * 1e3 / len(y)])

            fits, times = [], []
            for c in obs:
                t0 = time.perf_counter()
                fits.append(_pow3_final(c))
                times.append((time.perf_counter() - t0) * 1e3)
            put(k, "pow3 fit", np.array(fits), times)
        _log(f"[extrapolation] {task} ({i + 1}/{len(tasks)}) {time.perf_counter() - t_start:.1f} s")

    # Baselines: Gaussian around the point prediction, sigma = RMS error of the same method at
    # the same cut on the OTHER tasks (leave-one-task-out). The baselines thus get calibrated
    # uncertainty from held-out ground truth, which the LC-PFN never sees: this favours them.
    loto = len(tasks) > 1
    if not loto:
        _issues["1 task: baseline sigma fitted in-sample"] += 1
    for k in cuts:
        for m in METHODS[1:]:
            errs = [p - f for p, f in zip(point[(k, m)], finals)]
            for j, (e, p, f) in enumerate(zip(errs, point[(k, m)], finals)):
                other = [x for jj, x in enumerate(errs) if jj != j or not loto]
                sigma = max(float(np.sqrt(np.mean(np.concatenate(other) ** 2))), 1e-4)
                ll = -0.5 * np.log(2 * np.pi * sigma**2) - e**2 / (2 * sigma**2)
                loglik.setdefault((k, m), []).append(ll)
                cover.setdefault((k, m), []).append(np.abs(f - p) <= Z90 * sigma)

    rows = [
        "| observed | method | log-lik | MAE (pts) | 90% coverage | ms / curve |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for k, frac in zip(cuts, CUT_FRACTIONS):
        for m in METHODS:
            km = (k, m)
            ll_m = np.mean([x.mean() for x in loglik[km]])  # mean per task, then over tasks
            mae = np.mean([np.abs(p - f).mean() for p, f in zip(point[km], finals)]) * 100
            cov = np.mean([x.mean() for x in cover[km]])
            rows.append(
                f"| {k}/{N_EPOCHS} ({frac:.0%}) | {m} | {ll_m:.2f} | {mae:.2f} | {cov:.0%} "
                f"| {np.median(ms[km]):.3f} |"
            )
    caption = _caption(
        "Final-epoch prediction from the first 10/20/40 % of epochs,", tasks, n_configs, seed
    ) + (
        " log-lik: mean log density of the true final accuracy (fraction in [0, 1]), per "
        "curve, averaged per task then over tasks; point prediction: LC-PFN median, MAE in "
        "accuracy points. Baselines' log-lik and 90 % interval use a Gaussian whose sigma is "
        "the method's RMS error on the other tasks (leave-one-task-out), calibration from "
        "held-out truth that favours the baselines. ms / curve: median (LC-PFN: one batched "
        "predict + median + interval + logpdf per task and cut, / curves; pow3: per fit)."
    )
    return caption + "\n\n" + "\n".join(rows) + "\n"


def early_stopping_table(
    tasks: Sequence[str],
    n_configs: int = 40,
    seed: int = 1,
    thresholds: Sequence[float] = (0.01, 0.05, 0.1),
    min_steps: int = 3,
    checkpoint: str = "default",
) -> str:
    """Random search over ``n_configs`` configs per task, with / without LC-PFN stopping.

    The rule is ``CurveExtrapolator.should_stop``: after epoch e (min_steps <= e < 52), stop
    if P(final value > best final value of the configs completed so far) < threshold; never
    before a config has completed. Implemented without redundant forward passes: the LC-PFN
    predictive of the final value given a prefix does not depend on the incumbent, so each
    task runs ONE batched ``predict`` over every prefix of every config, and each rule only
    evaluates ``prob_improvement`` (a CDF) of those predictions against its own incumbent.
    """
    if min_steps < 2:
        raise ValueError(f"min_steps must be >= 2, got {min_steps}")
    ex = CurveExtrapolator(checkpoint)
    _issues.clear()
    rules: list[float | None] = [None, *thresholds]
    steps = np.arange(min_steps, N_EPOCHS)  # prefix lengths at which the rule may stop
    regret: dict[float | None, list[float]] = {r: [] for r in rules}
    used: dict[float | None, list[int]] = {r: [] for r in rules}

    t_start = time.perf_counter()
    for i, task in enumerate(tasks):
        y = _task_curves(task, n_configs, seed)
        final = y[:, -1]
        pred = ex.predict(
            [c[:e] for c in y for e in steps],
            at=[N_EPOCHS],
            max_steps=N_EPOCHS,
            value_range=(0.0, 1.0),
        )
        per_config = [
            dataclasses.replace(pred, logits=pred.logits[s], low=pred.low[s], span=pred.span[s])
            for s in (slice(j * steps.size, (j + 1) * steps.size) for j in range(len(y)))
        ]
        for r in rules:
            best, epochs = -math.inf, 0
            for j in range(len(y)):
                stop = N_EPOCHS
                if r is not None and best > -math.inf:
                    below = np.flatnonzero(per_config[j].prob_improvement(best)[:, 0] < r)
                    stop = int(steps[below[0]]) if below.size else N_EPOCHS
                epochs += stop
                if stop == N_EPOCHS:
                    best = max(best, float(final[j]))
            regret[r].append((float(final.max()) - best) * 100)
            used[r].append(epochs)
        _log(
            f"[early stopping] {task} ({i + 1}/{len(tasks)}) {time.perf_counter() - t_start:.1f} s"
        )

    full = n_configs * N_EPOCHS  # epochs of one task without stopping
    rows = [
        "| rule | mean regret (pts) | max regret (pts) | epochs saved | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rules:
        name = "no stopping" if r is None else f"LC-PFN, P(improve) < {r:g}"
        u = np.array(used[r], dtype=np.float64)
        rows.append(
            f"| {name} | {np.mean(regret[r]):.2f} | {np.max(regret[r]):.2f} "
            f"| {1 - u.sum() / (full * u.size):.0%} "
            f"| {np.mean(full / u):.2f}x (overall {full * u.size / u.sum():.2f}x) |"
        )
    caption = _caption("Random search with LC-PFN early stopping,", tasks, n_configs, seed) + (
        f" Configs trained one after another; after each epoch e >= {min_steps} a config "
        "stops when P(its epoch-52 accuracy beats the best completed one) < threshold. "
        "Regret: best final accuracy of all configs minus that of the chosen (best completed) "
        "config, accuracy points, mean / max over tasks; epochs saved over all tasks; "
        "speed-up: epochs without stopping / epochs used, mean over tasks (overall)."
    )
    return caption + "\n\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    import torch
    from _lcbench import DEV_TASKS, skip_if_unavailable

    skip_if_unavailable()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    smoke = DEV_TASKS[:3]
    print(extrapolation_table(smoke, n_configs=10))
    print(early_stopping_table(smoke, n_configs=10))
    print(f"smoke test: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
