"""Can a study-level calibration fix PFNTreatmentEffect's CATE interval coverage?

The bundled checkpoint's 95 % CATE intervals are scaled by one number on its card, chosen
on held-out draws of its own prior (``pfnkit calibrate``). They cover about 95 % of the
prior's draws but 100 % of IHDP B's rows. This probe measures, per study:

* ``need``: the scale that would make that study's intervals cover 95 % of its rows (the
  95th percentile over rows of |tau - centre| / half-width, the intervals narrowed by
  ``interval_narrowing_`` as the estimator ships them; the card's scale is printed);
* ``twin``: the same quantity on "twins" of the study, semi-synthetic copies whose truth
  is known: the same X, t, members and context rows; outcome surfaces
  m(x) -+ e(x) g(x) around the network's m(x) = e mu1 + (1 - e) mu0, with the effect g
  either the estimate ``effect(X)`` or the network's own tau(x) answer; noise the study's
  cross-fitted residuals with random signs (a wild bootstrap). Each twin is re-answered
  by the same network with the study's effect weights held fixed. ``--twins`` twins per
  effect, scored on ``--rows`` random rows.

and then the coverage per family of each rule: the card's constant scale (with and
without the estimator's ``interval_narrowing_``), two smaller
constants, and min(A, c q95(twin)) for a few (A, c): narrow the posterior interval to what the twins
show, never widen it past A. Everything in one run, one torch thread::

    python benchmarks/causal_intervals.py                 # about 10 min on one core

(needs the benchmark venv of ``benchmarks/causal.py``: econml, causalml, doubleml).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONSTANTS = (0.6, 0.75)  # one smaller scale for every study, for comparison
# (A, c) of min(A, c twin); A = None: the card's scale
RULES = [(None, c) for c in (1.0, 1.25, 1.5, 2.0)] + [(1.2, c) for c in (1.25, 1.5)]


def _means(est, ctx, views) -> dict[str, np.ndarray]:
    """The network's posterior means of tau(x), mu0(x) and mu1(x) (standardised)."""
    dist = est._bars()
    return {
        q: dist.mean(est._mixture(ctx.logits(views, q))).double().numpy()
        for q in ("tau", "mu0", "mu1")
    }


def twin_excess(est, twins: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Per twin and scored row, |truth - centre| / half-width (see the module docstring)."""
    from pfnkit.estimators.causal import DR_CLIP, _excess

    x, t, z = est._fit_data
    n = x.shape[0]
    views = est._member_views(x)
    mean = _means(est, est.context_, views)
    f, _ = est._posterior(views, x, None, est.context_)
    oof = est._cross_fit()
    resid = z - np.where(t == 1, oof[1], oof[0])
    e = np.clip(est._dr_e(), DR_CLIP, 1 - DR_CLIP)
    m = e * mean["mu1"] + (1 - e) * mean["mu0"]
    q = rng.choice(n, min(rows, n), replace=False)
    out = []
    for _ in range(twins):
        for g in (f, mean["tau"]):
            arm = np.where(t == 1, m + (1 - e) * g, m - e * g)
            zs = (arm + resid * rng.choice([-1.0, 1.0], n)).astype(np.float32)
            ctx = est._encode(views, est._context_rows, t, zs)
            _, interval = est._posterior(views[:, q], x[q], 0.05, ctx)
            out.append(_excess(g[q], *interval))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    import causal as bench
    import torch

    from pfnkit import PFNTreatmentEffect
    from pfnkit.estimators.causal import _excess

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default", help="PFNTreatmentEffect checkpoint")
    ap.add_argument("--ihdp-seeds", type=int, default=20)
    ap.add_argument("--prior-seeds", type=int, default=30)
    ap.add_argument("--synth-seeds", type=int, default=2, help="per causalml/doubleml family")
    ap.add_argument("--twins", type=int, default=2, help="twins per effect (two effects)")
    ap.add_argument("--rows", type=int, default=256, help="scored rows per twin")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    studies = [bench.ihdp(s) for s in range(args.ihdp_seeds)]
    studies += [bench.prior_draw(s, 400, 32) for s in range(args.prior_seeds)]
    for fam in ("nw-A", "nw-B", "nw-C", "nw-D"):
        studies += [bench.nie_wager(fam, s, 1000, 6) for s in range(args.synth_seeds)]
    studies += [bench.doubleml_het(s, 1000) for s in range(args.synth_seeds)]
    real: dict[str, list[np.ndarray]] = defaultdict(list)
    narrowing: dict[str, list[float]] = defaultdict(list)
    twin: dict[str, list[float]] = defaultdict(list)
    seconds = []
    for s in studies:
        est = PFNTreatmentEffect(checkpoint=args.checkpoint, random_state=0).fit(s.x, s.t, s.y)
        card = est.interval_scale_["cate"]
        _, q = est._effect_posterior(s.x, 0.05)
        real[s.family].append(_excess(s.tau / est.y_std_, *q))
        narrowing[s.family].append(est.interval_narrowing_)
        t0 = time.perf_counter()
        tw = twin_excess(est, args.twins, args.rows, np.random.default_rng(s.seed))
        seconds.append(time.perf_counter() - t0)
        twin[s.family].append(float(np.quantile(tw, 0.95)))
        print(
            f"{s.family}-{s.seed}: need {np.quantile(real[s.family][-1], 0.95):.2f}, "
            f"twin {twin[s.family][-1]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    fams = list(real)
    head = ["rule"] + [f"{f} ({len(real[f])})" for f in fams]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, scale, narrowed: bool = True) -> None:
        cells = []
        for f in fams:
            cov = [
                np.mean(r * (1.0 if narrowed else nar) <= scale(tw))
                for r, tw, nar in zip(real[f], twin[f], narrowing[f], strict=True)
            ]
            cells.append(f"{100 * np.mean(cov):.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines.append(
        "| median need / twin | "
        + " | ".join(
            f"{np.median([np.quantile(r, 0.95) for r in real[f]]):.2f} / {np.median(twin[f]):.2f}"
            for f in fams
        )
        + " |"
    )
    lines.append(
        "| median interval_narrowing_ | "
        + " | ".join(f"{np.median(narrowing[f]):.2f}" for f in fams)
        + " |"
    )
    row(f"card scale {card:g} (default)", lambda tw: card)
    row(f"card scale {card:g}, without the narrowing", lambda tw: card, narrowed=False)
    for const in CONSTANTS:
        row(f"constant {const:g}", lambda tw, const=const: const)
    for a, c in RULES:
        a = card if a is None else a
        row(f"min({a:g}, {c:g} twin)", lambda tw, a=a, c=c: min(a, c * tw))
    print("\n".join(lines))
    print(f"\ntwins: median {np.median(seconds):.2f} s per study ({2 * args.twins} twins)")


if __name__ == "__main__":
    main()
