"""Which architecture learns the most per CPU-hour: row tokens against cell tokens.

Trains one network per architecture (``PFNConfig.tokens``) for the same CPU time on the
same prior, then reports side by side: optimizer steps, tables seen, held-out prior NLL,
mean ROC AUC on the KEEL development sets, and fit + predict_proba time on 1,000 x 20.

* Prior: the v2 classification mixture (``priors/tabular-clf-v2.toml``: SCM, GP, BNN and
  rule tables) at ``--rows`` rows and up to ``--features`` features, smaller than the
  recipe's 1,024 x 100 so that a CPU run of minutes sees enough tables to tell the two
  apart. Same rows, features, batch size, learning rate, schedule and seed for both.
* Equal CPU time: one torch thread each, trained one after the other for ``--minutes``
  of wall time (``Trainer.run(max_seconds=..., fit_steps=True)``: the cosine schedule is
  fitted to the steps the budget allows, so each run ends its schedule on time). A few
  timed steps first set the initial step count, so the 5 % warm-up has the right length.
* Sizes: each a sensible CPU shape for its token count, both with head dim 32.
    - row: d_model 128, 4 layers, 4 heads, the shape of the bundled checkpoints: one token
      per row, so a step costs about rows x layers x d_model^2;
    - cell: d_model 64, 3 layers, 2 heads: one token per cell plus one per row, so a step
      handles (features + 1) times more tokens (measured: 4.3 s a step at d_model 64,
      2.4 s at 32, against 0.29 s for the row network); the last layer only updates the
      query rows' target tokens, so 3 layers cost about 2 full ones. TabPFN v2 runs
      192-wide cells through 12 layers, on GPUs.
* Held-out prior NLL: mean cross-entropy per test row on ``--eval-batches`` x 16 tables
  of the same mixture, half of each table's rows as context, drawn from a seed stream
  training never uses (``step_generator(seed, i, EVAL_STREAM)``, as in rule_share.py):
  the same tables for both networks.
* Dev-set AUC: ``benchmarks/tabular.py``'s protocol (its data loading, 50/50 stratified
  splits with seeds 0..``--splits``-1, training half capped at 3,000 rows, its ROC AUC)
  on the 18 KEEL dev sets, ``PFNClassifier(checkpoint=run, context="subsample")`` with
  default settings otherwise; "subsample" for both because "auto" would give the row
  network learned prompts (cell tokens take none) on tables above its context limit.
* Speed: median of ``--speed-runs`` fit + predict_proba of ``PFNClassifier(context=
  "subsample")`` on ``make_classification(2000, 20)`` split 1,000 / 1,000, at 1 and
  2 torch threads.

Networks go to ``--out`` (default ``runs/arch/<row|cell>``, outside git); ``--eval-only``
re-evaluates them without training. A markdown table goes to stdout, progress to stderr.

    python benchmarks/architecture.py --minutes 12            # the comparison (~36 min)
    python benchmarks/architecture.py --minutes 0.2 --splits 1 --datasets pima wine  # smoke
    python benchmarks/architecture.py --eval-only             # re-evaluate runs/arch
    python benchmarks/architecture.py --archs row --steps 241 --out runs/arch-steps

Measured (``OMP_NUM_THREADS=1 python benchmarks/architecture.py --minutes 12``, 2-core
CPU shared with another training job on the other core, so the 2-thread times are
contended and slower than 1 thread; 36 min in all):

| tokens | params | train min | steps | tables | held-out NLL | dev AUC | fit+predict s |
|:---|---:|---:|---:|---:|---:|---:|---:|
| row | 575,370 | 10.6 | 2,670 | 21,360 | 1.0801 | 0.8679 | 0.40 / 1.71 |
| cell | 162,378 | 12.0 | 241 | 1,928 | 1.2823 | 0.5606 | 2.39 / 3.63 |
| row (--steps 241) | 575,370 | 1.0 | 241 | 1,928 | 1.2086 | 0.8215 | 0.42 / 1.31 |

(dev AUC: mean over the 18 KEEL dev sets, 2 splits each; fit+predict: 1 / 2 threads.)

The row network's fitted schedule ended at 10.6 of its 12 minutes (``fit_steps`` fixes
the step count at a fifth of the budget from the speed so far, and the run then went
faster), so it won on less CPU time. A cell step costs ~16x a row step (4.4 s against
0.28 s: 33 tokens per row instead of 1), and per step the cell network did not learn
faster either: the row network trained for the cell network's 241 steps (the same
tables, a minute of CPU) has the lower held-out NLL and a far higher dev AUC. The
undertrained cell network scores below 0.5 on several dev sets; on held-out prior tables
its accuracy (0.391) is below the context's majority class (0.399; row: 0.509), and on a
linear rule over Gaussian features its AUC falls from 0.97 with 2 features to 0.60 with
32 (row: 1.00 to 0.96). Its fit + predict_proba on 1,000 x 20 (8 members, all 20
features, 448 context rows per member) misses the 1 s budget that the row network meets.
Per CPU-hour on this machine, row tokens learn the most; cell tokens buy the lifted
feature limit at ~16x the compute per table, a trade for a GPU run rather than a CPU
one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import make_classification

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tabular import (  # noqa: E402
    DEFAULT_DATA,
    classification_datasets,
    drop_rare_classes,
    md_table,
    roc_auc,
    split,
    timed,
)

from pfnkit import PFNClassifier  # noqa: E402
from pfnkit.model import PFNConfig  # noqa: E402
from pfnkit.priors import BatchShape, build_prior, step_generator  # noqa: E402
from pfnkit.train import TrainConfig, Trainer, load_checkpoint  # noqa: E402
from pfnkit.train.recipe import load_recipe  # noqa: E402

EVAL_STREAM = 1 << 21  # a "rank" no training run uses: held-out tables
RECIPE = Path(__file__).resolve().parents[1] / "priors" / "tabular-clf-v2.toml"
ARCHS: dict[str, dict[str, Any]] = {
    "row": {"tokens": "row", "d_model": 128, "n_layers": 4, "n_heads": 4},
    "cell": {"tokens": "cell", "d_model": 64, "n_layers": 3, "n_heads": 2},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_config(arch: str, args: argparse.Namespace) -> PFNConfig:
    return PFNConfig(
        task="classification",
        n_features=args.features,
        n_classes=10,
        normalize_x=True,
        **ARCHS[arch],
    )


def train_config(args: argparse.Namespace, steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        rows=args.rows,
        min_context=16,
        lr=args.lr,
        precision="fp32",
        device="cpu",
        seed=args.seed,
        checkpoint_every=10**9,  # one save, at the end
        log_every=25,
        on_nonfinite="skip",
    )


def seconds_per_step(prior: Any, arch: str, args: argparse.Namespace) -> float:
    """A throwaway network's step time (after one warm-up step)."""
    trainer = Trainer(prior, model_config(arch, args), train_config(args, 100))
    trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(3):
        trainer.train_step()
    return (time.perf_counter() - t0) / 3


def train(prior: Any, arch: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.steps:  # a step budget instead of a time budget
        config = train_config(args, args.steps)
        trainer = Trainer(prior, model_config(arch, args), config, args.out / arch, overwrite=True)
        out = trainer.run()
        log(f"[{arch}] trained {out['step']} steps in {out['wall_time']:.0f} s")
        return {"steps": out["step"], "train_s": out["wall_time"]}
    budget = 60 * args.minutes
    per_step = seconds_per_step(prior, arch, args)
    steps = max(10, int(budget / per_step))
    log(f"[{arch}] {per_step:.2f} s/step measured; about {steps} steps in {args.minutes} min")
    trainer = Trainer(
        prior, model_config(arch, args), train_config(args, steps), args.out / arch, overwrite=True
    )
    out = trainer.run(max_seconds=budget, fit_steps=True)
    log(f"[{arch}] trained {out['step']} steps in {out['wall_time']:.0f} s, loss {out['loss']:.4f}")
    return {"steps": out["step"], "train_s": out["wall_time"]}


@torch.no_grad()
def held_out_nll(model: Any, prior: Any, args: argparse.Namespace) -> float:
    losses = []
    for i in range(args.eval_batches):
        shape = BatchShape(16, args.rows, args.features, args.rows // 2)
        batch = prior.sample(shape, generator=step_generator(args.seed, i, EVAL_STREAM))
        losses.append(float(model.loss(batch)))
    return sum(losses) / len(losses)


def dev_auc(run: Path, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """Mean ROC AUC over the KEEL dev sets (each the mean over its splits)."""
    sets = classification_datasets(args.data)
    names = [n for n in sets if not n.startswith("sk-")]
    if args.datasets:
        names = [n for n in names if n in args.datasets]
    per_set = {}
    for name in names:
        X, y = drop_rare_classes(*sets[name](), name)
        aucs = []
        for seed in range(args.splits):
            Xtr, Xte, ytr, yte = split(X, y, seed, stratify=True)
            est = PFNClassifier(checkpoint=str(run), context="subsample", random_state=seed)
            proba, _, _ = timed(lambda e=est, a=Xtr, b=ytr, t=Xte: e.fit(a, b).predict_proba(t))
            aucs.append(roc_auc(yte, proba, est.classes_))
        per_set[name] = float(np.nanmean(aucs))
        log(f"    {name}: {per_set[name]:.3f}")
    return float(np.mean(list(per_set.values()))), per_set


def speed(run: Path, threads: int, runs: int) -> float:
    x, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    X = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for r in range(runs + 1):  # the first run loads the checkpoint: not counted
            est = PFNClassifier(checkpoint=str(run), context="subsample", random_state=r)
            _, elapsed, _ = timed(lambda e=est: e.fit(X[:1000], y[:1000]).predict_proba(X[1000:]))
            if r:
                times.append(elapsed)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=12.0, help="training budget per architecture")
    p.add_argument("--steps", type=int, help="train this many steps instead of --minutes")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=16, help="held-out batches of 16 tables")
    p.add_argument("--splits", type=int, default=2, help="splits per KEEL dev set")
    p.add_argument("--datasets", nargs="+", help="KEEL dev set names (default: all)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="KEEL *.dat directory")
    p.add_argument("--speed-runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("runs/arch"))
    p.add_argument("--eval-only", action="store_true", help="evaluate the networks in --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    prior = build_prior(load_recipe(RECIPE)["prior"])
    log(
        f"prior {RECIPE.name}, {args.rows} rows, up to {args.features} features, batch "
        f"{args.batch_size}, lr {args.lr:g}, seed {args.seed}; {args.minutes} min per arch"
    )
    results: dict[str, dict[str, Any]] = {}
    for arch in args.archs:
        res: dict[str, Any] = {}
        if not args.eval_only:
            res.update(train(prior, arch, args))
        run = args.out / arch
        model = load_checkpoint(run).eval()
        card = model.card
        res.setdefault("steps", int(card["step"]))
        res.setdefault("train_s", float(card["metrics"]["wall_time"]))
        res["tables"] = int(card["metrics"]["datasets_seen"])
        res["params"] = model.n_params
        t0 = time.perf_counter()
        res["nll"] = held_out_nll(model, prior, args)
        log(f"[{arch}] held-out NLL {res['nll']:.4f} ({time.perf_counter() - t0:.0f} s)")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res["auc"], res["auc_per_set"] = dev_auc(run, args)
            log(f"[{arch}] dev AUC {res['auc']:.4f} ({time.perf_counter() - t0:.0f} s)")
            res["speed_1"] = speed(run, 1, args.speed_runs)
            res["speed_2"] = speed(run, 2, args.speed_runs)
        s1, s2 = res["speed_1"], res["speed_2"]
        log(f"[{arch}] fit + predict_proba {s1:.3f} s (1 thread), {s2:.3f} s (2 threads)")
        results[arch] = res
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    rows = [
        [
            arch,
            f"{r['params']:,}",
            f"{r['train_s'] / 60:.1f}",
            str(r["steps"]),
            f"{r['tables']:,}",
            f"{r['nll']:.4f}",
            f"{r['auc']:.4f}",
            f"{r['speed_1']:.2f} / {r['speed_2']:.2f}",
        ]
        for arch, r in results.items()
    ]
    header = [
        "tokens",
        "params",
        "train min",
        "steps",
        "tables seen",
        "held-out NLL",
        f"dev AUC ({args.splits} splits)",
        "fit+predict s (1 / 2 threads)",
    ]
    print(md_table(header, rows, "lrrrrrrr"))
    sets = list(next(iter(results.values()))["auc_per_set"])
    if len(results) > 1 and sets:
        per = [[s, *[f"{r['auc_per_set'][s]:.3f}" for r in results.values()]] for s in sets]
        print()
        print(md_table(["data set", *results], per, "l" + "r" * len(results)))
    return 0 if all(math.isfinite(r["nll"]) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
