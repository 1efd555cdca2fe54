"""The "power" ensemble members' Yeo-Johnson fit: pfnkit's all-columns-at-once search against
scikit-learn's PowerTransformer (the baseline it replaced), in the same run.

Per table shape: the median fit + transform seconds of each over --repeats runs, their ratio,
and how far pfnkit's result is from scikit-learn's (largest lambda and output difference over
columns that are not constant). Tables: mixed skewed columns (lognormal, negative lognormal,
exponential, Student t, uniform, integer-valued), 10% missing cells in the last shape.

    python benchmarks/power_transform.py --threads 1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

SHAPES = ((200, 10), (1000, 20), (3000, 50), (10000, 100))


def table(rows: int, features: int, missing: float, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    makers = (
        lambda: rng.lognormal(0, rng.uniform(0.3, 2.5), rows),
        lambda: -rng.lognormal(0, rng.uniform(0.3, 2.5), rows),
        lambda: rng.exponential(rng.uniform(0.5, 5), rows) - 1,
        lambda: rng.standard_t(rng.uniform(1.5, 6), rows),
        lambda: rng.uniform(-1, 1, rows) * 10 ** rng.uniform(-2, 6),
        lambda: np.round(rng.normal(0, rng.uniform(0.5, 4), rows)),
    )
    x = np.column_stack([makers[j % len(makers)]() for j in range(features)])
    if missing:
        x[rng.rand(*x.shape) < missing] = np.nan
    return x


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads")
    args = p.parse_args(argv)

    from sklearn.preprocessing import PowerTransformer
    from threadpoolctl import threadpool_limits

    from pfnkit.estimators.power import YeoJohnson

    print("| rows x features | missing | scikit-learn ms | pfnkit ms | speed-up |", end="")
    print(" max lambda diff | max output diff |")
    print("|:---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    with threadpool_limits(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (rows, features) in enumerate(SHAPES):
            missing = 0.1 if i == len(SHAPES) - 1 else 0.0
            x = table(rows, features, missing, seed=i)

            def sk(x=x):
                t = PowerTransformer(method="yeo-johnson", standardize=True).fit(x)
                return t, t.transform(x)

            def ours(x=x):
                t = YeoJohnson().fit(x)
                return t, t.transform(x)

            t_sk, (ref, ref_out) = median_seconds(sk, args.repeats)
            t_us, (new, new_out) = median_seconds(ours, args.repeats)
            dlam = float(np.max(np.abs(ref.lambdas_ - new.lambdas_)))
            dout = float(np.nanmax(np.abs(ref_out - new_out)))
            ratios.append(t_sk / t_us)
            print(
                f"| {rows:,} x {features} | {missing:.0%} | {t_sk * 1e3:.1f} | {t_us * 1e3:.1f} "
                f"| {t_sk / t_us:.1f}x | {dlam:.1e} | {dout:.1e} |",
                flush=True,
            )
    print(f"\nmedian speed-up {np.median(ratios):.1f}x over {len(ratios)} shapes")


if __name__ == "__main__":
    main()
