"""How well the FT-PFN predicts final values on LCBench, against the single-curve LC-PFN.

    benchmarks/.venv-yahpo/bin/python benchmarks/ft_surrogate.py \
        --checkpoint default runs/freeze-thaw

For every dev task and repeat: 30 random configurations, each observed up to a random epoch
in 0..39 (0: not started). The FT-PFN sees all partial curves at once (with their
hyperparameters) and predicts every configuration's epoch-52 value; the LC-PFN sees each
curve (>= 2 points) alone. Reported: mean log-likelihood of the true final value and mean
absolute error, for started configurations (both models) and for fresh ones (FT-PFN only).
Values are val_accuracy / 100. Needs the benchmark venv (see ``benchmarks/_lcbench.py``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _lcbench import DEV_TASKS, N_EPOCHS, skip_if_unavailable
from hpo import Task

from pfnkit.curves import CurveExtrapolator
from pfnkit.hpo.space import encode, sample_configs
from pfnkit.hpo.surrogate import Curve, FreezeThawSurrogate

N_CONFIGS, MAX_CUT = 30, 40


def evaluate(checkpoint: str, repeats: int, seed: int) -> dict[str, list[float]]:
    sur, lc = FreezeThawSurrogate(checkpoint, seed=seed), CurveExtrapolator()
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in ("ft", "lc", "ft_ae", "lc_ae", "fresh")}
    for name in DEV_TASKS:
        task = Task(name)
        for _ in range(repeats):
            configs = sample_configs(task.space, N_CONFIGS, rng)
            y = task.curves(configs)
            cut = rng.integers(0, MAX_CUT, size=N_CONFIGS)
            h = np.array([encode(c, task.space) for c in configs])
            tags = rng.random(N_CONFIGS)
            curves = [Curve(h[i], tags[i], y[i, : cut[i]]) for i in range(N_CONFIGS) if cut[i]]
            logits = sur.logits(curves, h, tags, np.full(N_CONFIGS, float(N_EPOCHS)), N_EPOCHS)
            target = torch.tensor(y[:, -1], dtype=torch.float32)
            ll = -sur.bars.nll(logits, target).double().numpy()
            mean = sur.mean(logits)
            part = cut >= 2
            pred = lc.predict(
                [y[i, : cut[i]] for i in np.flatnonzero(part)],
                at=[N_EPOCHS],
                max_steps=N_EPOCHS,
                value_range=(0, 1),
            )
            out["ft"] += ll[part].tolist()
            out["lc"] += pred.logpdf(y[part, -1][:, None]).ravel().tolist()
            out["ft_ae"] += np.abs(mean[part] - y[part, -1]).tolist()
            out["lc_ae"] += np.abs(pred.mean().ravel() - y[part, -1]).tolist()
            out["fresh"] += ll[cut == 0].tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", nargs="+", default=["default"], help="FT-PFN checkpoints")
    ap.add_argument("--repeats", type=int, default=2, help="sets of 30 configurations per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    skip_if_unavailable()
    torch.set_num_threads(args.threads)
    print(
        f"LCBench {len(DEV_TASKS)} dev tasks x {args.repeats} x {N_CONFIGS} configurations, "
        f"observed to a random epoch < {MAX_CUT}; predicting the epoch-{N_EPOCHS} value\n"
    )
    print(
        "| FT-PFN checkpoint | FT-PFN log-lik (started) | LC-PFN log-lik (same curves) "
        "| FT-PFN MAE | LC-PFN MAE | FT-PFN log-lik (not started) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for ck in args.checkpoint:
        r = evaluate(ck, args.repeats, args.seed)
        print(
            f"| {ck} | {np.mean(r['ft']):.3f} | {np.mean(r['lc']):.3f} | "
            f"{np.mean(r['ft_ae']):.4f} | {np.mean(r['lc_ae']):.4f} | "
            f"{np.mean(r['fresh']):.3f} (n={len(r['fresh'])}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
