"""GP fidelity: a PFN trained on a fixed-hyperparameter GP prior vs the exact GP posterior.

Trains a PFN with pfnkit's Trainer on ``GPPrior`` (RBF, fixed lengthscale / outputscale /
noise, 1-D inputs on [0, 1]) for a wall-time budget, and at several points of that budget
evaluates, on the same held-out datasets, the mean negative log-likelihood per test point
of the PFN and of the exact GP posterior predictive (same kernel, same noise). The gap is
PFN NLL - exact NLL (nats); 0 means the PFN mimics the GP perfectly.

    python benchmarks/gp_vs_exact.py --minutes 30 --out runs/bench_gp     # the README figure
    python benchmarks/gp_vs_exact.py --minutes 2 --datasets 256           # a quick look

Prints a markdown table: training minutes, steps, PFN NLL, exact NLL, gap.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from pfnkit.model import PFNConfig
from pfnkit.priors import BatchShape, GPPrior, step_generator
from pfnkit.priors.gp import exact_predictive
from pfnkit.train import TrainConfig, Trainer

EVAL_STREAM = 1 << 21  # held-out datasets come from a seed stream training never uses


def held_out(prior: GPPrior, n_datasets: int, rows: int, max_ctx: int, seed: int) -> list:
    """Batches of 50 datasets, each batch with its own context size spread over [1, max_ctx]."""
    per = 50
    n_batches = math.ceil(n_datasets / per)
    seps = torch.linspace(1, max_ctx, n_batches).round().long().tolist()
    return [
        prior.sample(
            BatchShape(per, rows, 1, int(s)), generator=step_generator(seed, i, EVAL_STREAM)
        )
        for i, s in enumerate(seps)
    ]


def exact_nll(prior: GPPrior, batches: list) -> float:
    total, count = 0.0, 0
    for b in batches:
        s = b.single_eval_pos
        mean, var = exact_predictive(
            b.x[:, :s],
            b.y[:, :s],
            b.x[:, s:],
            kernel=prior.kernel,
            lengthscale=float(prior.lengthscale),
            outputscale=float(prior.outputscale),
            noise=float(prior.noise),
        )
        y = b.target_y[:, s:].double()
        nll = 0.5 * (torch.log(2 * math.pi * var) + (y - mean).square() / var)
        total += float(nll.sum())
        count += nll.numel()
    return total / count


@torch.no_grad()
def pfn_nll(trainer: Trainer, batches: list) -> float:
    model = trainer.model.eval()
    total, count = 0.0, 0
    for b in batches:
        s = b.single_eval_pos
        nll = model.bar_distribution.nll(model(b.x, b.y[:, :s]), b.target_y[:, s:])
        total += float(nll.sum())
        count += nll.numel()
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-time budget")
    ap.add_argument(
        "--evals",
        type=float,
        nargs="*",
        default=[1 / 6, 1 / 3, 2 / 3, 1.0],
        help="fractions of the budget at which to evaluate",
    )
    ap.add_argument("--datasets", type=int, default=1000, help="held-out datasets")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--out", default=None, help="run directory to keep the trained PFN")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    prior = GPPrior(kernel="rbf", lengthscale=0.6, outputscale=1.0, noise=0.01)
    max_ctx = args.rows - args.rows // 8
    model_cfg = PFNConfig(d_model=args.d_model, n_layers=args.n_layers, n_heads=4, n_bars=1000)

    # time a few steps to turn the wall-time budget into a cosine schedule length
    probe = Trainer(
        prior,
        model_cfg,
        TrainConfig(steps=10, batch_size=args.batch_size, rows=args.rows, precision=args.precision),
    )
    probe.train_step()
    t0 = time.perf_counter()
    for _ in range(8):
        probe.train_step()
    sec_per_step = (time.perf_counter() - t0) / 8
    # plan for 85% of the budget: a busy machine slows steps down, and the cosine schedule
    # should end within the budget
    steps = max(10, int(0.85 * args.minutes * 60 / sec_per_step))
    del probe

    tc = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        rows=args.rows,
        lr=args.lr,
        precision=args.precision,
        checkpoint_every=max(1, steps // 10),
        log_every=50,
    )
    trainer = Trainer(prior, model_cfg, tc, args.out, overwrite=True)
    batches = held_out(prior, args.datasets, args.rows, max_ctx, seed=123)
    ref = exact_nll(prior, batches)
    n_eval = sum(b.batch_size for b in batches)
    print(
        f"# GP fidelity: {n_eval} held-out datasets, rows {args.rows}, context 1..{max_ctx}; "
        f"PFN d_model {args.d_model}, {args.n_layers} layers; {steps} steps planned "
        f"({sec_per_step:.3f} s/step probed, {args.threads} thread(s), {args.precision})",
        flush=True,
    )
    print("| train minutes | steps | PFN NLL | exact GP NLL | gap (nats) |")
    print("|---:|---:|---:|---:|---:|", flush=True)
    marks = sorted(args.evals)
    train_time = 0.0
    while trainer.step < steps:
        t0 = time.perf_counter()
        trainer.train_step()
        train_time += time.perf_counter() - t0
        if trainer.step % tc.checkpoint_every == 0:
            trainer.save()
        due = marks and (train_time >= marks[0] * args.minutes * 60 or trainer.step == steps)
        if due:
            while marks and (train_time >= marks[0] * args.minutes * 60 or trainer.step == steps):
                marks.pop(0)
            nll = pfn_nll(trainer, batches)
            print(
                f"| {train_time / 60:.1f} | {trainer.step} | {nll:.4f} | {ref:.4f} | "
                f"{nll - ref:+.4f} |",
                flush=True,
            )
    trainer.save()


if __name__ == "__main__":
    main()
