"""FFN blocks: inference latency per row against a dense MLP of the same total width.

For every hidden width (1k..16k units) and batch size (1 and 1,024 rows), each block is
timed in eval mode under ``torch.inference_mode`` and compared with ``mlp`` of the same
total width, measured in the same run, interleaved:

* ``fff``: leaves of ``--leaf-dim`` units, depth log2(width / leaf_dim), hard descent;
* ``moe``: 8 experts of width / 8 units, top-2 (a quarter of the width per row);
* ``lowrank``: both projections factored through rank d_model / 4;
* ``topk``: keeps width / 8 hidden activations (the up projection stays dense).

    python benchmarks/ffn.py                          # d_model 512, 1 thread
    python benchmarks/ffn.py --widths 4096 --batches 1 --reps 200
    python benchmarks/ffn.py --device cuda            # on a GPU (synchronised timing)
    python benchmarks/ffn.py --quality --minutes 5    # a PFN per block, equal CPU time

With ``--quality``, a PFN (d_model 128, 4 layers, d_ffn 512) is trained with each block on
the same prior (``--prior``, default a GP with hyperpriors over 1..4 features) for the same
wall time, and its held-out NLL on 512 fixed datasets is compared with ``mlp``'s.

Prints a markdown table: block, width, batch, microseconds per row (median), and the
speed-up over ``mlp`` (its median time / the block's).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from pfnkit.model.ffn import build_ffn


def blocks_for(width: int, d_model: int, leaf_dim: int) -> dict[str, tuple[str, dict]]:
    depth = max(0, int(math.log2(max(1, width // leaf_dim))))
    return {
        "mlp": ("mlp", {}),
        "fff": ("fff", {"depth": depth}),
        "moe": ("moe", {"n_experts": 8, "top_k": 2, "expert_dim": width // 8}),
        "lowrank": ("lowrank", {"rank": d_model // 4}),
        "topk": ("topk", {"k": width // 8}),
    }


QUALITY_BLOCKS = {
    "mlp": {},
    "glu": {},
    "moe": {"n_experts": 8, "top_k": 2, "expert_dim": 64},
    "fff": {"depth": 3, "master_leaf": True},
    "lowrank": {},
    "blockdiag": {},
    "topk": {},
}


def quality(args: argparse.Namespace) -> None:
    from pfnkit.model import PFNConfig
    from pfnkit.priors import BatchShape, build_prior, step_generator
    from pfnkit.train import TrainConfig, Trainer
    from pfnkit.train.recipe import load_recipe

    recipe = load_recipe(args.prior)
    prior = build_prior(recipe["prior"])
    n_features = recipe.get("model", {}).get("n_features", 1)
    held = [
        prior.sample(BatchShape(64, 128, n_features, sep), generator=step_generator(99, i, 7))
        for i, sep in enumerate(range(8, 120, 14))
    ]
    print(
        f"# PFN quality per FFN block: prior {args.prior}, {args.minutes} CPU-min each, "
        f"{args.threads} thread(s); held-out NLL on {sum(b.batch_size for b in held)} datasets"
    )
    print("| block | options | params | steps | CPU min | held-out NLL | vs mlp (nats) | vs mlp |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = None
    # a second mlp with another seed shows the run-to-run noise the differences sit in
    runs = [(name, options, 0) for name, options in QUALITY_BLOCKS.items()]
    runs.insert(1, ("mlp", {}, 1))
    for name, options, seed in runs:
        cfg = PFNConfig(
            n_features=n_features, d_model=128, n_layers=4, d_ffn=512, ffn=name, ffn_options=options
        )

        def train_config(steps: int, seed: int = seed) -> TrainConfig:
            return TrainConfig(
                steps=steps,
                batch_size=16,
                rows=128,
                lr=1e-3,
                warmup_steps=min(200, steps // 10),
                min_lr_ratio=0.05,
                seed=seed,
            )

        # Budget in CPU time of this process, not wall time (on a shared machine another
        # job's load would hand some blocks fewer steps), turned into a step count from
        # the block's measured step time so that each run gets a full cosine schedule.
        probe = Trainer(prior, cfg, train_config(10**6))
        for _ in range(3):
            probe.train_step()
        t0 = time.process_time()
        for _ in range(10):
            probe.train_step()
        per_step = (time.process_time() - t0) / 10
        steps = max(20, int(args.minutes * 60 / per_step))
        trainer = Trainer(prior, cfg, train_config(steps))
        t0 = time.process_time()
        while trainer.step < steps:
            trainer.train_step()
        cpu_min = (time.process_time() - t0) / 60
        model = trainer.model.eval()
        with torch.no_grad():
            nll = statistics.fmean(float(model.loss(b)) for b in held)
        base = nll if base is None else base
        label = name if seed == 0 else f"{name} (seed {seed})"
        print(
            f"| {label} | {options or '-'} | {model.n_params:,} | {trainer.step} | "
            f"{cpu_min:.1f} | {nll:.4f} | {nll - base:+.4f} | "
            f"{(nll - base) / abs(base) * 100:+.1f}% |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 1024])
    ap.add_argument("--leaf-dim", type=int, default=32)
    ap.add_argument("--reps", type=int, default=50, help="timed calls per block and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (latency, synchronised)")
    ap.add_argument("--quality", action="store_true", help="train a PFN per block instead")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time per block")
    ap.add_argument("--prior", default="priors/gp_hyper.toml", help="recipe for --quality")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quality:
        quality(args)
        return
    torch.manual_seed(0)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(
        f"# FFN inference latency: d_model {args.d_model}, {args.threads} thread(s), fp32, "
        f"device {args.device}, "
        f"median of {args.rounds} rounds x {args.reps} calls"
    )
    print("| block | width | batch | params | active params/row | us per row | speed-up vs mlp |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for width in args.widths:
        specs = blocks_for(width, args.d_model, args.leaf_dim)
        built = {
            k: build_ffn(name, args.d_model, width, opts).eval().to(dev)
            for k, (name, opts) in specs.items()
        }
        for batch in args.batches:
            x = torch.randn(batch, args.d_model, device=dev)
            reps = max(3, args.reps if batch == 1 else args.reps // 10)
            times: dict[str, list[float]] = {k: [] for k in built}
            with torch.inference_mode():
                for blk in built.values():
                    blk(x)  # warm-up
                for _ in range(args.rounds):
                    for k, blk in built.items():
                        sync()
                        t0 = time.perf_counter()
                        for _ in range(reps):
                            blk(x)
                        sync()
                        times[k].append((time.perf_counter() - t0) / reps)
            base = statistics.median(times["mlp"])
            for k, blk in built.items():
                med = statistics.median(times[k])
                print(
                    f"| {k} | {width} | {batch} | {blk.total_params:,} | "
                    f"{blk.active_params_per_token:,} | {med / batch * 1e6:.2f} | "
                    f"{base / med:.1f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
