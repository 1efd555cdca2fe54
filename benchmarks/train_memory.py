"""Peak memory (RSS) of a training step at rows 1024, d_model 256, 6 layers.

Each configuration runs in its own child process so that peaks do not mix; the baseline is
the math (unfused) attention reference, side by side with torch's fused SDPA, in fp32 and
bf16 autocast.

    python benchmarks/train_memory.py                 # rows 1024, d_model 256, 6 layers, batch 8
    python benchmarks/train_memory.py --batch-size 16 --steps 3

Prints a markdown table: backend, precision, RSS before the first step, peak RSS, the
increase a step adds, and the median step time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from _common import rss_mb


def child(args: argparse.Namespace) -> None:
    import torch

    from pfnkit.model import PFNConfig
    from pfnkit.priors import GPPrior
    from pfnkit.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    model_cfg = PFNConfig(
        d_model=args.d_model, n_layers=args.n_layers, n_heads=4, attention=args.backend
    )
    train_cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        rows=args.rows,
        precision=args.precision,
        border_samples=20_000,
    )
    trainer = Trainer(GPPrior(), model_cfg, train_cfg)
    trainer.sample_batch(0)  # warm the prior's code paths before measuring
    before = rss_mb()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before": before, "peak": peak, "step_s": statistics.median(times)}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="sdpa", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"# training-step memory: rows {args.rows}, d_model {args.d_model}, {args.n_layers} "
        f"layers, batch {args.batch_size}, {args.steps} steps, {args.threads} thread(s)"
    )
    print(
        "| attention | precision | RSS before (MB) | peak RSS (MB) | step adds (MB) | "
        "step time (s, median) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for backend in ("math", "sdpa"):
        for precision in ("fp32", "bf16"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--backend",
                backend,
                "--precision",
                precision,
            ] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}"
                for k in ("rows", "d_model", "n_layers", "batch_size", "steps", "threads")
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            label = "math (baseline)" if backend == "math" else "sdpa (fused)"
            print(
                f"| {label} | {precision} | {m['before']:.0f} | {m['peak']:.0f} | "
                f"{m['peak'] - m['before']:.0f} | {m['step_s']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
