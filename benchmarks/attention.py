"""Attention: peak memory and time against context length, fused SDPA vs the math reference.

One split-attention call as a PFN layer makes it: N query rows attend to the Nc = N / 2
context rows, 4 heads of 32 dims, batch 1, fp32, forward only (inference). Each
configuration runs in its own child process so that peak RSS is its own; the math
reference materialises the (N, Nc) score matrix, SDPA does not. Configurations whose
score matrix would exceed ``--max-gb`` are skipped (and say so).

    python benchmarks/attention.py                     # 1k..32k rows
    python benchmarks/attention.py --rows 1024 4096 --chunk 2048
    python benchmarks/attention.py --device cuda      # peak GPU memory, synchronised times

Prints a markdown table: rows, backend, peak RSS increase (MB), time (ms, median of 3).
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

    from pfnkit.model.attend import attend

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n, nc, h, d = args.n, args.n // 2, 4, 32
    q = torch.randn(1, h, n, d, device=dev)
    k, v = torch.randn(1, h, nc, d, device=dev), torch.randn(1, h, nc, d, device=dev)
    if cuda:  # one untimed call: kernel selection and CUDA context set-up
        attend(q, k, v, backend=args.backend, chunk_rows=args.chunk)
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb()
    times = []
    with torch.inference_mode():
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            attend(q, k, v, backend=args.backend, chunk_rows=args.chunk)
            sync()
            times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"added": peak - before, "ms": statistics.median(times) * 1e3}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--chunk", type=int, default=0, help="query-row chunking (0: off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-gb", type=float, default=6.0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peak GPU memory, synced)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="sdpa", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"# split attention, 4 heads x 32 dims, context = rows / 2, batch 1, fp32, "
        f"{args.threads} thread(s), chunk {args.chunk or 'off'}, device {args.device}"
    )
    mem = "peak GPU memory added (MiB)" if args.device.startswith("cuda") else "peak RSS added (MB)"
    print(f"| rows | backend | {mem} | time (ms) |")
    print("|---:|---|---:|---:|")
    for n in args.rows:
        for backend in ("math", "sdpa"):
            scores_gb = 4 * n * (n // 2) * 4 / 1e9
            if backend == "math" and scores_gb * 2 > args.max_gb and args.chunk == 0:
                print(f"| {n} | math (reference) | skipped: scores need {scores_gb:.1f} GB | - |")
                continue
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--backend",
                backend,
                "--n",
                str(n),
                "--threads",
                str(args.threads),
                "--chunk",
                str(args.chunk),
                "--device",
                args.device,
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            label = "math (reference)" if backend == "math" else "sdpa (fused)"
            print(f"| {n} | {label} | {m['added']:.0f} | {m['ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
