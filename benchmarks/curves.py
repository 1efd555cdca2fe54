"""Learning-curve extrapolation: LC-PFN against MCMC, and on real LCBench curves.

    # everything (the LCBench parts need the yahpo venv, see benchmarks/_lcbench.py)
    OMP_NUM_THREADS=1 benchmarks/.venv-yahpo/bin/python benchmarks/curves.py
    # one part
    ... benchmarks/curves.py --part mcmc --curves 40 --walkers 100 --mcmc-steps 2000

Parts:
- mcmc: curves drawn from the plain parametric model (three Domhan families pow3, ilog2 and
  Janoschek with Dirichlet weights, Gaussian noise: the model LC-PFN's released weights were
  trained on), cut at 20 % and 50 % of 50 steps. emcee samples the exact posterior of that
  model; the bundled LC-PFN was trained on a wider prior (seven families, plateaus, jumps,
  divergence), so the comparison is, if anything, tilted towards MCMC. Scores: mean
  log-likelihood of each held-out later point under the per-point predictive, and wall time
  per extrapolation (one curve, one thread).
- lcbench: real curves from the YAHPO Gym LCBench surrogate (17 dev tasks), cut at 10/20/40 %.
- stopping: the predictive early-stopping rule on LCBench: epochs saved against regret.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pfnkit.curves import CurveExtrapolator  # noqa: E402
from pfnkit.priors import BatchShape, LearningCurvePrior, step_generator  # noqa: E402
from pfnkit.priors.learning_curves import FAMILIES, GAIN, START, curve_mean  # noqa: E402

MCMC_FAMILIES = ("pow3", "ilog2", "janoschek")
HORIZON = 50


def mcmc_prior() -> LearningCurvePrior:
    return LearningCurvePrior(
        families=MCMC_FAMILIES,
        min_components=3,
        max_components=3,
        p_plateau=0.0,
        p_jump=0.0,
        p_divergence=0.0,
        min_horizon=HORIZON,
        max_horizon=HORIZON,
    )


class ParametricModel:
    """The plain model in emcee's coordinates: y0, gain, per-family parameters (log scale
    for log-uniform ones), K raw Exp(1) weights, log noise."""

    def __init__(self, prior: LearningCurvePrior) -> None:
        self.prior = prior
        self.specs = [START, GAIN]
        self.names = ["y0", "gain"]
        for fam in prior.families:
            for spec in FAMILIES[fam].params:
                self.specs.append(spec)
                self.names.append(f"{fam}.{spec.name}")
        self.k = len(prior.families)
        noise = prior.noise
        self.log_noise = (math.log(noise.low), math.log(noise.high))  # type: ignore[union-attr]
        self.ndim = len(self.specs) + self.k + 1

    def unpack(self, theta: torch.Tensor) -> tuple:
        """theta (W, D) -> (y0, gain, weights (W, K), family params, noise (W,), log prior)."""
        lp = torch.zeros(theta.shape[0], dtype=torch.float64)
        values = []
        for j, spec in enumerate(self.specs):
            v = theta[:, j]
            if spec.log:  # flat in log coordinates between the log bounds
                inside = (v >= math.log(spec.low)) & (v <= math.log(spec.high))
                v = v.exp()
            else:
                inside = (v >= spec.low) & (v <= spec.high)
            lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
            values.append(v)
        raw = theta[:, len(self.specs) : len(self.specs) + self.k]
        lp = lp + torch.where((raw > 0).all(1), -raw.sum(1), torch.full_like(lp, -math.inf))
        w = raw.clamp_min(1e-12) / raw.clamp_min(1e-12).sum(1, keepdim=True)
        log_s = theta[:, -1]
        lo, hi = self.log_noise
        lp = torch.where((log_s >= lo) & (log_s <= hi), lp, torch.full_like(lp, -math.inf))
        params: dict[str, dict[str, torch.Tensor]] = {}
        for name, v in zip(self.names[2:], values[2:]):
            fam, pname = name.split(".")
            params.setdefault(fam, {})[pname] = v
        return values[0], values[1], w, params, log_s.exp(), lp

    def initial(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Walkers drawn from the prior."""
        cols = []
        for spec in self.specs:
            u = rng.uniform(size=n)
            if spec.log:
                cols.append(math.log(spec.low) + u * math.log(spec.high / spec.low))
            else:
                cols.append(spec.low + u * (spec.high - spec.low))
        cols += [rng.exponential(size=n) for _ in range(self.k)]
        cols.append(rng.uniform(*self.log_noise, size=n))
        return np.stack(cols, 1)

    def mean(self, theta: torch.Tensor, x: torch.Tensor) -> tuple:
        y0, gain, w, params, s, lp = self.unpack(theta)
        xs = x[None, :].expand(theta.shape[0], -1)
        return curve_mean(xs, y0, gain, w, params, self.prior.families), s, lp


def run_mcmc(
    model: ParametricModel,
    x_obs: np.ndarray,
    y_obs: np.ndarray,
    walkers: int,
    steps: int,
    burn_in: int,
    seed: int,
) -> np.ndarray:
    """Posterior samples (S, D) of theta given the observed points."""
    import emcee

    xo = torch.as_tensor(x_obs, dtype=torch.float64)
    yo = torch.as_tensor(y_obs, dtype=torch.float64)

    def log_prob(theta: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(theta, dtype=torch.float64)
        mu, s, lp = model.mean(t, xo)
        ll = (-0.5 * ((yo - mu) / s[:, None]).square() - s[:, None].log()).sum(1)
        out = lp + ll - 0.5 * math.log(2 * math.pi) * yo.numel()
        return torch.nan_to_num(out, nan=-math.inf).numpy()

    rng = np.random.default_rng(seed)
    p0 = model.initial(walkers, rng)
    sampler = emcee.EnsembleSampler(walkers, model.ndim, log_prob, vectorize=True)
    sampler._random = np.random.mtrand.RandomState(seed)  # reproducible moves
    sampler.run_mcmc(p0, burn_in + steps, progress=False)
    return sampler.get_chain(discard=burn_in, thin=10, flat=True)


def mcmc_part(args: argparse.Namespace) -> str:
    try:
        import emcee  # noqa: F401
    except ImportError:
        return "SKIP mcmc: emcee is not installed (pip install emcee)."
    prior = mcmc_prior()
    model = ParametricModel(prior)
    batch = prior.sample(
        BatchShape(args.curves, HORIZON, 1, HORIZON - 1), generator=step_generator(2024, 0)
    )
    curves = batch.y.double().numpy()  # steps 1..50 in order (horizon fixed)
    x_all = np.arange(1, HORIZON + 1) / HORIZON
    settings = [args.curves, args.walkers, args.burn_in, args.mcmc_steps]
    cache_path = Path(args.mcmc_cache)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("settings") != settings:
        cache = {"settings": settings}
    reused = any(str(n) in cache for n in (HORIZON // 5, HORIZON // 2))
    pfns = {name: CurveExtrapolator(name) for name in args.checkpoint}
    lines = [
        f"# LC-PFN vs MCMC (emcee, {args.walkers} walkers, {args.burn_in} burn-in + "
        f"{args.mcmc_steps} steps, thin 10) on {args.curves} curves of the plain "
        f"{'+'.join(MCMC_FAMILIES)} model, {HORIZON} steps; 1 thread",
        "",
        "| observed | method | log-lik / point | time / curve | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for n_obs in (HORIZON // 5, HORIZON // 2):
        future = np.arange(n_obs, HORIZON)  # 0-based indices of the held-out points
        # both methods see the observed points clipped to [0, 1] (as a real accuracy
        # would be; noise can push a few past the ends) and are scored on raw points
        obs = np.clip(curves[:, :n_obs], 0.0, 1.0)
        key = str(n_obs)
        if key not in cache:
            ll_mc, t_mc = [], []
            for i, c in enumerate(curves):
                t0 = time.perf_counter()
                samples = run_mcmc(
                    model,
                    x_all[:n_obs],
                    obs[i],
                    args.walkers,
                    args.mcmc_steps,
                    args.burn_in,
                    seed=i,
                )
                theta = torch.as_tensor(samples, dtype=torch.float64)
                mu, s, _ = model.mean(theta, torch.as_tensor(x_all[future]))
                t_mc.append(time.perf_counter() - t0)
                yf = torch.as_tensor(c[future])
                logp = -0.5 * ((yf - mu) / s[:, None]).square() - s[:, None].log()
                logp = logp - 0.5 * math.log(2 * math.pi)
                ll_mc.append(float((logp.logsumexp(0) - math.log(len(samples))).mean()))
                print(f"  cut {n_obs}: MCMC {i + 1}/{len(curves)}", file=sys.stderr, flush=True)
            cache[key] = {"ll": ll_mc, "time": t_mc}
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))
        ll_mc_a = np.asarray(cache[key]["ll"])
        tm = statistics.median(cache[key]["time"])
        pct = f"{n_obs}/{HORIZON}"
        for name, ex in pfns.items():
            ll_pfn, t_pfn = [], []
            for i, c in enumerate(curves):
                t0 = time.perf_counter()
                pred = ex.predict(obs[i], at=future + 1, max_steps=HORIZON)
                t_pfn.append(time.perf_counter() - t0)
                ll_pfn.append(float(np.mean(pred.logpdf(c[future]))))
            tp = statistics.median(t_pfn)
            diff = np.asarray(ll_pfn) - ll_mc_a
            se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
            label = "bundled" if name == "default" else Path(name).name
            lines += [
                f"| {pct} | LC-PFN ({label}) | {np.mean(ll_pfn):.3f} | {tp * 1e3:.1f} ms | "
                f"{tm / tp:,.0f}x |",
                f"| {pct} | LC-PFN ({label}) - MCMC | {diff.mean():+.3f} +- {se:.3f} | | |",
            ]
        lines.append(f"| {pct} | MCMC (emcee) | {ll_mc_a.mean():.3f} | {tm:.2f} s | 1x |")
    if reused:
        lines.append(
            f"\nMCMC results reused from {cache_path}: its times come from that earlier run, "
            "so the speed-ups compare timings taken under different machine load."
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--part", choices=["all", "mcmc", "lcbench", "stopping"], default="all")
    ap.add_argument(
        "--checkpoint", nargs="+", default=["default"], help="LC-PFN(s) to compare (mcmc)"
    )
    ap.add_argument(
        "--mcmc-cache", default="runs/curves_mcmc_cache.json", help="reuse MCMC results"
    )
    ap.add_argument("--curves", type=int, default=40, help="held-out curves for --part mcmc")
    # Domhan et al.'s sampler settings: 100 walkers, 500 burn-in + 2,000 steps
    ap.add_argument("--walkers", type=int, default=100)
    ap.add_argument("--burn-in", type=int, default=500)
    ap.add_argument("--mcmc-steps", type=int, default=2000)
    ap.add_argument("--configs", type=int, default=40, help="LCBench configs per task")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("all", "mcmc"):
        print(mcmc_part(args), flush=True)
        print()
    if args.part in ("all", "lcbench", "stopping"):
        import _lcbench

        if not _lcbench.available():
            print(f"SKIP lcbench/stopping: {_lcbench.unavailable_reason()}")
            return
        from _curves_lcbench import early_stopping_table, extrapolation_table

        if args.part in ("all", "lcbench"):
            print(extrapolation_table(_lcbench.DEV_TASKS, args.configs, 0, args.checkpoint[0]))
            print()
        if args.part in ("all", "stopping"):
            print(
                early_stopping_table(
                    _lcbench.DEV_TASKS, args.configs, 1, checkpoint=args.checkpoint[0]
                )
            )


if __name__ == "__main__":
    main()
