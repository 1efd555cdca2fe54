"""What share of rule tables to mix into the tabular classification prior.

Trains one small PFN per share of ``RulePrior`` tables in the tabular-clf-v2 mixture
(the other components keep their v1 ratios), all for the same number of steps with the
same seed, and reports the held-out NLL per test row of each on the SCM prior, on the
rule prior and on the whole v1 mixture (held-out datasets come from a seed stream that
training never uses; the same datasets for every network).

    python benchmarks/rule_share.py                                   # the default sweep
    python benchmarks/rule_share.py --steps 300 --shares 0 0.2        # a quick look
    python benchmarks/rule_share.py --checkpoints A.safetensors B.safetensors \
        --rows 384 --features 64     # trained checkpoints on the same held-out tables

Prints a markdown table: share, training seconds, NLL on each held-out prior. With
``--checkpoints`` nothing is trained: each checkpoint (say v1, trained at share 0, and v2, at
0.2) is scored on the same held-out tables, the rows and features of which must be within
every checkpoint's limits, plus a column of the same rule tables with ``onehot_share=1``:
the same draws, those narrow enough presented one-hot (about a quarter at 100 features), so
the difference to the rules column is what the one-hot presentation changes.

Measured (2-core CPU, one thread, ``--steps 1000``; d_model 64, 2 layers, 256 rows,
32 features): NLL on SCM 1.2824 / 1.2853 / 1.2866 / 1.2910 and on rules 0.6370 / 0.6369 /
0.6362 / 0.6368 at shares 0 / 0.1 / 0.2 / 0.35. At this size and length the network does
not yet learn the rules from the mixture (rule NLL flat) and pays up to 0.009 nats on SCM
tables, so the share must be measured at the real model size and step count.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from pfnkit.model import PFNConfig
from pfnkit.priors import BatchShape, MixturePrior, RulePrior, build_prior, step_generator
from pfnkit.train import TrainConfig, Trainer
from pfnkit.train.recipe import load_recipe

EVAL_STREAM = 1 << 21
RECIPE = Path(__file__).resolve().parents[1] / "priors" / "tabular-clf-v2.toml"


def mixture_at(share: float) -> MixturePrior:
    """The v2 mixture with the rule component at ``share`` (others in their ratios)."""
    v2 = build_prior(load_recipe(RECIPE)["prior"])
    assert isinstance(v2, MixturePrior) and v2.weights is not None
    rule = [i for i, c in enumerate(v2.components) if isinstance(c, RulePrior)][0]
    rest = sum(w for i, w in enumerate(v2.weights) if i != rule)
    weights = tuple(
        share if i == rule else (1 - share) * w / rest for i, w in enumerate(v2.weights)
    )
    return MixturePrior(v2.components, weights)


@torch.no_grad()
def held_out_nll(model: torch.nn.Module, prior: object, args: argparse.Namespace) -> float:
    losses = []
    for i in range(args.eval_batches):
        gen = step_generator(args.seed, i, EVAL_STREAM)
        shape = BatchShape(16, args.rows, args.features, args.rows // 2)
        losses.append(float(model.loss(prior.sample(shape, generator=gen))))  # type: ignore[attr-defined]
    return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.35])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoints", nargs="+", help="score these checkpoints, train nothing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    v2 = mixture_at(0.2)
    scm = v2.components[0]
    rules = [c for c in v2.components if isinstance(c, RulePrior)][0]
    v1 = mixture_at(0.0)
    if args.checkpoints:
        from pfnkit.estimators._base import load_model

        print(
            f"held-out NLL over {args.eval_batches} x 16 tables of {args.rows} rows, "
            f"{args.features} features, seed {args.seed}\n"
        )
        hot = dataclasses.replace(rules, onehot_share=1.0)
        print("| checkpoint | NLL scm | NLL rules | NLL rules one-hot | NLL v1 mixture |")
        print("|---|---|---|---|---|")
        for path in args.checkpoints:
            net, _ = load_model(path, "classification", "cpu")
            nll = [held_out_nll(net.eval(), p, args) for p in (scm, rules, hot, v1)]
            print(f"| {Path(path).stem} | " + " | ".join(f"{v:.4f}" for v in nll) + " |")
        return
    model = PFNConfig(
        task="classification",
        n_features=args.features,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=4,
        n_classes=10,
        normalize_x=True,
    )
    print(
        f"{args.steps} steps x {args.batch_size} tables of {args.rows} rows, "
        f"{args.features} features, d_model {args.d_model}, {args.n_layers} layers, "
        f"seed {args.seed}; held-out NLL over {args.eval_batches} x 16 tables\n"
    )
    print("| rule share | train s | NLL scm | NLL rules | NLL v1 mixture |")
    print("|---|---|---|---|---|")
    for share in args.shares:
        train = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            rows=args.rows,
            min_context=16,
            lr=1e-3,
            device="cpu",
            seed=args.seed,
        )
        trainer = Trainer(mixture_at(share), model, train)
        t0 = time.perf_counter()
        trainer.run()
        secs = time.perf_counter() - t0
        net = trainer.model.eval()
        nll = [held_out_nll(net, p, args) for p in (scm, rules, v1)]
        print(f"| {share:g} | {secs:.0f} | " + " | ".join(f"{v:.4f}" for v in nll) + " |")


if __name__ == "__main__":
    main()
