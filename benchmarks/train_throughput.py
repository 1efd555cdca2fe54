"""Training throughput of pfnkit against the `pfns` package (automl/PFNs) on one GP prior.

Both libraries train a PFN of the same size, with the same batch size, rows per dataset,
number of bars, optimiser (AdamW, constant learning rate, no weight decay, gradient
clipping at 1.0) and fp32 precision, on the same GP prior with fixed hyperparameters
(RBF kernel, 1 input feature, x ~ U[0, 1]). They run in the same process, alternating in
chunks of wall time (pfns for --chunk-seconds, then pfnkit, and so on) until each has
trained for --seconds, so machine noise hits both alike.

Reported, as a markdown table:
  * datasets per second: the median over chunks (and over the whole run);
  * the ratio pfnkit / pfns of the median datasets per second, and the median of the
    ratios of back-to-back chunk pairs (robust to slow drifts in machine load);
  * the mean of the last --last-k training losses (each library's own loss: the
    bar-distribution NLL on its own borders; not directly comparable, see below);
  * the held-out NLL after equal wall time: --heldout GP datasets drawn once by this
    script (independently of both libraries) and scored by both trained models at the
    same context sizes (1 .. rows-1, spread evenly), next to the exact GP posterior
    predictive NLL on the same points (the Bayes-optimal value). This is the fair
    comparison of what each library learned, since the two bar distributions have
    different borders. Its "±" is the standard error over held-out datasets only; at a
    budget of a few minutes the NLL gap between the libraries also varies from run to
    run (training noise), so read small gaps as a tie.

pfns is driven through its own pieces: the ``fast_gp`` prior (gpytorch) through
``AdhocPriorConfig``, ``TransformerConfig.create_model`` (``TableTransformer`` with
``attention_between_features=False``, the classic PFN layout that pfnkit also uses),
``FullSupportBarDistribution`` with borders from ``get_bucket_borders`` on sampled prior
targets, its ``BatchShapeSamplerConfig`` and ``StandardDataLoader`` (in-process, no
workers) and one step of its ``train_or_evaluate_epoch`` per optimiser step (an "epoch"
of one step), which is exactly pfns' training-step code (loss, clipping, bookkeeping).

Setup, in a separate venv (pfns is never a pfnkit dependency)::

    python3 -m venv benchmarks/.venv-pfns
    benchmarks/.venv-pfns/bin/pip install torch==2.13.0
    benchmarks/.venv-pfns/bin/pip install pfns==0.4.2 --no-deps
    benchmarks/.venv-pfns/bin/pip install numpy einops tqdm pyyaml typing_extensions \\
        gpytorch matplotlib scipy scikit-learn tensorboard
    benchmarks/.venv-pfns/bin/pip install -e .

Run (from the repository root)::

    benchmarks/.venv-pfns/bin/python benchmarks/train_throughput.py            # 120 s each
    benchmarks/.venv-pfns/bin/python benchmarks/train_throughput.py --seconds 30 --threads 2

Differences that remain between the two trainers (by design of each library):
  * context size: pfns draws single_eval_pos uniformly from 0..rows-1 (0 = no context);
    pfnkit draws it from min_context..max_context, set here to 1..rows-1;
  * pfns' layer is post-norm (LayerNorm without affine), pfnkit's pre-norm; on CPU pfns'
    attention runs its own einsum + softmax code, pfnkit's torch SDPA;
  * pfns' step also records per-parameter gradient norms for importance sampling
    (part of its training loop, so counted);
  * neither library normalises y for this prior; both see the raw GP draws.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

# ------------------------------------------------------------------ held-out GP data


def draw_heldout(n: int, rows: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """n GP datasets (x (n, rows, 1), y (n, rows)) in float64, from a fixed seed."""
    g = torch.Generator().manual_seed(args.seed + 1_000_003)
    x = torch.rand(n, rows, 1, generator=g, dtype=torch.float64)
    from pfnkit.priors.gp import kernel_matrix

    scale = torch.full((n,), 1.0, dtype=torch.float64)
    cov = kernel_matrix(x, x, "rbf", scale * args.lengthscale, scale * args.outputscale)
    cov = cov + args.noise * torch.eye(rows, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    y = (chol @ torch.randn(n, rows, 1, generator=g, dtype=torch.float64)).squeeze(-1)
    return x, y


def heldout_context_sizes(n: int, rows: int) -> list[int]:
    """Context sizes 1..rows-1 spread evenly over the n held-out datasets."""
    return [1 + (i * (rows - 1)) // n for i in range(n)]


def exact_gp_nll(
    x: torch.Tensor, y: torch.Tensor, sep: int, args: argparse.Namespace
) -> torch.Tensor:
    """Per-dataset mean NLL (B,) of the test rows under the exact GP posterior predictive."""
    from pfnkit.priors.gp import exact_predictive

    mean, var = exact_predictive(
        x[:, :sep],
        y[:, :sep],
        x[:, sep:],
        kernel="rbf",
        lengthscale=args.lengthscale,
        outputscale=args.outputscale,
        noise=args.noise,
    )
    yt = y[:, sep:]
    nll = 0.5 * (math.log(2 * math.pi) + var.log() + (yt - mean).square() / var)
    return nll.mean(1)


# ------------------------------------------------------------------ runners


@dataclass
class Runner:
    """One library's training state: step() trains one batch, nll() scores held-out data."""

    name: str
    losses: list[float] = field(default_factory=list)
    chunks: list[tuple[int, float]] = field(default_factory=list)  # (steps, seconds)
    n_params: int = 0

    def step(self) -> float:
        raise NotImplementedError

    def nll(self, x: torch.Tensor, y: torch.Tensor, sep: int) -> torch.Tensor:
        """Per-dataset mean NLL (B,) of rows sep: given rows :sep (x (B, N, 1), y (B, N))."""
        raise NotImplementedError


class PfnsRunner(Runner):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("pfns")
        from pfns.model import bar_distribution
        from pfns.model.criterions import BarDistributionConfig
        from pfns.priors.data_loading import StandardDataLoader
        from pfns.priors.prior import AdhocPriorConfig
        from pfns.train import (
            BatchShapeSamplerConfig,
            MainConfig,
            OptimizerConfig,
            TransformerConfig,
            train_or_evaluate_epoch,
        )

        self._train_or_evaluate_epoch = train_or_evaluate_epoch
        torch.manual_seed(args.seed)
        hps = {
            "noise": args.noise,  # gpytorch GaussianLikelihood noise: a variance
            "outputscale": args.outputscale,  # ScaleKernel outputscale: a variance
            "lengthscale": args.lengthscale,
            "sampling": "uniform",  # x ~ U[0, 1]
        }
        # a list: a bare string would be iterated character by character by pfns 0.4.2
        prior = AdhocPriorConfig(prior_names=["fast_gp"], prior_kwargs={"hyperparameters": hps})
        get_batch = prior.create_get_batch_method()

        # borders at quantiles of sampled prior targets, as in pfns' example_config.py
        ys, n_ys = [], 0
        while n_ys < args.border_samples:
            b = get_batch(
                batch_size=args.batch_size, seq_len=args.rows, num_features=1, device="cpu"
            )
            ys.append(b.target_y.flatten())
            n_ys += ys[-1].numel()
        borders = bar_distribution.get_bucket_borders(args.n_bars, ys=torch.cat(ys))

        self.config = MainConfig(
            priors=[prior],
            optimizer=OptimizerConfig("adamw", lr=args.lr, weight_decay=0.0),
            model=TransformerConfig(
                criterion=BarDistributionConfig(borders.tolist(), full_support=True),
                emsize=args.d_model,
                nhid=args.d_ffn,
                nlayers=args.n_layers,
                nhead=args.n_heads,
                features_per_group=1,
                attention_between_features=args.pfns_feature_attention,
            ),
            batch_shape_sampler=BatchShapeSamplerConfig(
                batch_size=args.batch_size,
                max_seq_len=args.rows,
                min_num_features=1,
                max_num_features=1,
                seed=args.seed,
            ),
            epochs=10**9,
            steps_per_epoch=1,
            train_mixed_precision=False,
            scheduler="constant",
            num_workers=0,
            progress_bar=False,
            verbose=False,
        )
        torch.manual_seed(args.seed)
        with contextlib.redirect_stdout(io.StringIO()):  # pfns prints its set-up
            self.model = self.config.model.create_model()
            self.dl = StandardDataLoader(
                get_batch_method=get_batch,
                num_steps=1,
                batch_shape_sampler_function=self.config.batch_shape_sampler.sample_batch_shape,
                num_workers=0,
                device="cpu",
            )
        self.dl.model = self.model
        self.criterion = self.model.criterion
        self.optimizer = self.config.optimizer.create_optimizer(self.model.parameters())
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> float:
        result = self._train_or_evaluate_epoch(
            c=self.config,
            model=self.model,
            optimizer=self.optimizer,
            dl=self.dl,
            device="cpu",
            scaler=None,
            criterion=self.criterion,
            rank=0,
            using_dist=False,
            training=True,
        )
        return float(result.loss)

    @torch.no_grad()
    def nll(self, x: torch.Tensor, y: torch.Tensor, sep: int) -> torch.Tensor:
        self.model.eval()
        logits = self.model(x=x.float(), y=y[:, :sep].float(), only_return_standard_out=True)
        out = self.criterion(logits, y[:, sep:].float()).double().mean(1)
        self.model.train()
        return out


class PfnkitRunner(Runner):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("pfnkit")
        from pfnkit.model import PFNConfig
        from pfnkit.priors import GPPrior
        from pfnkit.train import TrainConfig, Trainer

        prior = GPPrior(
            kernel="rbf",
            lengthscale=args.lengthscale,
            outputscale=args.outputscale,
            noise=args.noise,  # a variance, as in gpytorch
            x_dist="uniform",
        )
        model_config = PFNConfig(
            task="regression",
            n_features=1,
            d_model=args.d_model,
            n_layers=args.n_layers,
            n_heads=args.n_heads,
            d_ffn=args.d_ffn,
            n_bars=args.n_bars,
        )
        train_config = TrainConfig(
            steps=10**9,  # the budget is wall time; with the flat schedule below it is moot
            batch_size=args.batch_size,
            rows=args.rows,
            min_context=1,
            max_context=args.rows - 1,  # as close as pfnkit allows to pfns' 0..rows-1
            lr=args.lr,
            weight_decay=0.0,
            warmup_steps=0,  # constant learning rate, like pfns' "constant" scheduler
            min_lr_ratio=1.0,
            grad_clip=1.0,
            precision="fp32",
            seed=args.seed,
            device="cpu",
            border_samples=args.border_samples,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            self.trainer = Trainer(prior, model_config, train_config)
        self.model = _unwrap(self.trainer.model)
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> float:
        return float(self.trainer.train_step())

    @torch.no_grad()
    def nll(self, x: torch.Tensor, y: torch.Tensor, sep: int) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        logits = self.model(x.float(), y[:, :sep].float())
        out = self.model.bar_distribution.nll(logits, y[:, sep:].float()).double().mean(1)
        self.model.train(was_training)
        return out


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


# ------------------------------------------------------------------ benchmark


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    build: dict[str, Any] = {"pfns": PfnsRunner, "pfnkit": PfnkitRunner}
    runners: list[Runner] = []
    for name in args.libs:
        t0 = time.perf_counter()
        runners.append(build[name](args))
        print(
            f"# set up {name} in {time.perf_counter() - t0:.1f} s "
            f"({runners[-1].n_params:,} parameters)",
            file=sys.stderr,
        )

    used = {r.name: 0.0 for r in runners}
    while any(used[r.name] < args.seconds for r in runners):
        for r in runners:
            target = min(args.chunk_seconds, args.seconds - used[r.name])
            if target <= 0:
                continue
            steps, t0 = 0, time.perf_counter()
            while True:
                r.losses.append(r.step())
                steps += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= target:
                    break
            used[r.name] += elapsed
            r.chunks.append((steps, elapsed))
            print(
                f"# {r.name}: {steps} steps in {elapsed:.1f} s "
                f"({steps * args.batch_size / elapsed:.1f} datasets/s), "
                f"loss {statistics.fmean(r.losses[-steps:]):.3f}",
                file=sys.stderr,
            )

    x, y = draw_heldout(args.heldout, args.rows, args)
    seps = heldout_context_sizes(args.heldout, args.rows)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seps):
        groups.setdefault(s, []).append(i)
    per_dataset: dict[str, torch.Tensor] = {}
    for name, fn in [("exact GP", None)] + [(r.name, r.nll) for r in runners]:
        out = torch.empty(args.heldout, dtype=torch.float64)
        for s, idx in groups.items():
            xi, yi = x[idx], y[idx]
            out[idx] = exact_gp_nll(xi, yi, s, args) if fn is None else fn(xi, yi, s)
        per_dataset[name] = out

    print()
    print(
        f"GP prior: RBF, lengthscale {args.lengthscale}, outputscale {args.outputscale}, "
        f"noise variance {args.noise}, 1 feature, x ~ U[0, 1]. Model: d_model {args.d_model}, "
        f"{args.n_layers} layers, {args.n_heads} heads, d_ffn {args.d_ffn}, {args.n_bars} bars. "
        f"Batch {args.batch_size} x {args.rows} rows, AdamW lr {args.lr} (constant), "
        f"{args.threads} torch thread(s), {args.seconds:g} s per library in "
        f"{args.chunk_seconds:g} s chunks."
    )
    print()
    print(
        "| library | params | steps | datasets/s (median of chunks) | datasets/s (overall) "
        f"| train loss (last {args.last_k}) | held-out NLL ({args.heldout} datasets) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    med: dict[str, float] = {}
    for r in runners:
        full = [c for c in r.chunks if c[1] >= 0.5 * args.chunk_seconds] or r.chunks
        rates = [s * args.batch_size / t for s, t in full]
        med[r.name] = statistics.median(rates)
        steps = sum(s for s, _ in r.chunks)
        total = sum(t for _, t in r.chunks)
        nll = per_dataset[r.name]
        print(
            f"| {r.name} | {r.n_params:,} | {steps} | {med[r.name]:.1f} "
            f"| {steps * args.batch_size / total:.1f} "
            f"| {statistics.fmean(r.losses[-args.last_k :]):.3f} "
            f"| {nll.mean():.3f} ± {nll.std() / math.sqrt(len(nll)):.3f} |"
        )
    gp = per_dataset["exact GP"]
    print(
        f"| exact GP posterior | – | – | – | – | – | {gp.mean():.3f} ± "
        f"{gp.std() / math.sqrt(len(gp)):.3f} |"
    )
    if "pfns" in med and "pfnkit" in med:
        by_name = {r.name: r.chunks for r in runners}
        # chunks run back to back in pairs: their ratio cancels slow drifts in machine load
        pairs = list(zip(by_name["pfns"], by_name["pfnkit"], strict=False))
        pairs = [p for p in pairs if min(p[0][1], p[1][1]) >= 0.5 * args.chunk_seconds] or pairs
        pair_ratios = [(s2 / t2) / (s1 / t1) for (s1, t1), (s2, t2) in pairs]
        diff = per_dataset["pfnkit"] - per_dataset["pfns"]
        print()
        print(
            f"Throughput ratio pfnkit / pfns (median datasets/s): "
            f"**{med['pfnkit'] / med['pfns']:.2f}x** (median of {len(pair_ratios)} "
            f"back-to-back chunk pairs: {statistics.median(pair_ratios):.2f}x, range "
            f"{min(pair_ratios):.2f}-{max(pair_ratios):.2f}). Held-out NLL pfnkit - pfns: "
            f"{diff.mean():+.3f} ± {diff.std() / math.sqrt(len(diff)):.3f} (paired, "
            "per-dataset means; negative favours pfnkit)."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="training time per library")
    p.add_argument(
        "--chunk-seconds", type=float, default=10.0, help="wall time of one alternation chunk"
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--d-ffn", type=int, default=256)
    p.add_argument("--n-bars", type=int, default=1000)
    p.add_argument("--rows", type=int, default=128, help="rows per dataset (context + test)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lengthscale", type=float, default=0.5)
    p.add_argument("--outputscale", type=float, default=1.0)
    p.add_argument("--noise", type=float, default=0.1, help="observation-noise variance")
    p.add_argument(
        "--border-samples",
        type=int,
        default=200_000,
        help="prior targets sampled to place each library's bar borders",
    )
    p.add_argument("--heldout", type=int, default=256, help="held-out GP datasets")
    p.add_argument("--last-k", type=int, default=50, help="training losses averaged at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--libs",
        nargs="+",
        choices=["pfns", "pfnkit"],
        default=["pfns", "pfnkit"],
        help="libraries to run, in alternation order",
    )
    p.add_argument(
        "--pfns-feature-attention",
        action="store_true",
        help="use pfns' default attention_between_features=True (2 tokens per row)",
    )
    args = p.parse_args(argv)
    if args.rows < 2:
        p.error("--rows must be >= 2")
    return args


if __name__ == "__main__":
    run(parse_args())
