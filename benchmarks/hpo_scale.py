"""The freeze-thaw loop's own overhead: workers on SQLite, PostgreSQL and a journal file.

    python benchmarks/hpo_scale.py | tee runs/hpo_scale.md   # ~15 min on 2 cores
    python benchmarks/hpo_scale.py --quick                  # smoke run (~2 min)
    python benchmarks/hpo_scale.py --backends sqlite journal --budget 400 --trials 100 1000

What it measures, with an instant objective (it returns the values at once, so every
second is the loop's: the study reads, the claim under the study lock, the FT-PFN's
acquisition, the lease heartbeat thread, the report):

1. **Throughput.** 1, 2 and 4 worker processes (multiprocessing spawn) run
   ``FreezeThaw.optimize`` on one fresh study with the bundled surrogate
   (``surrogate="default"``), max_steps 8, step_size 1, until the shared budget is trained.
   Process start-up, imports and the surrogate load are excluded: the workers wait at a
   barrier once their ``FreezeThaw`` is built, each records when it calls ``optimize`` (its
   first ask) and when its last ``tell`` returns, and the wall time is max(last) -
   min(first). steps/s = budget / wall time, the median over ``--repeats`` fresh studies
   (the same processes). Every run checks that the study holds exactly ``budget`` steps.
2. **ask/tell time against the study's size.** One study per backend is grown through
   the storage API (``optuna.trial.create_trial`` + ``create_new_trial``) to 100, 1,000
   and 5,000 configurations (``--trials``) that look like a freeze-thaw run's: each
   trained 1..8 steps (uniform), with its intermediate values, ``pfnkit_steps``,
   ``pfnkit_tag`` and the lease its last report left; WAITING (paused) below 8 steps,
   COMPLETE at 8. A new ``FreezeThaw`` (a worker joining the study: cold caches) then
   makes ``--asks`` rounds of ask + tell (ask with a budget, as ``optimize`` calls it);
   the first is shown apart (cold), the others' median is the table's. Its parts: the
   acquisition (``select``: the FT-PFN's forward pass over every paused configuration)
   and the full reads of the study's trials (``StudyStore.trials``, counted per ask). The
   fill of the SQLite file runs with ``PRAGMA synchronous=OFF`` (a faster fill only; the
   measured loop uses the usual connection). A size whose fill and asks would end the run
   after ``--minutes`` (estimated from the smaller sizes) is skipped, and the table says so.

PostgreSQL is a throwaway server from the Debian package (``apt-get install postgresql``),
started as in the tests (``tests/_postgres.py``: fsync off, localhost TCP); without it the
PostgreSQL rows are skipped with a note. One torch thread per process. The workers compete
for the machine's cores (the table says how many): 4 workers on 2 cores are oversubscribed,
and other processes on a shared machine move the numbers.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, here and in the workers

import argparse
import math
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MAX_STEPS, STEP_SIZE = 8, 1
BACKENDS = ("sqlite", "postgresql", "journal")
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "width": {"type": "int", "low": 8, "high": 512, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet() -> None:
    import warnings

    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def curve_value(params: dict[str, Any], step: int) -> float:
    """The instant objective's value at ``step``: a saturating curve whose height depends on
    the configuration (in [0, 1])."""
    height = 1 - abs(math.log10(params["lr"]) + 2) / 3 - params["dropout"] / 4
    return max(height, 0.0) * (1 - math.exp(-step / 3))


def objective(job: Any) -> list[float]:
    return [curve_value(job.params, s) for s in range(job.from_step + 1, job.to_step + 1)]


# ---------------------------------------------------------------- backends


class Backends:
    """Storage URLs for fresh studies on each backend; starts and stops the PostgreSQL server."""

    def __init__(self, names: list[str], tmp: Path) -> None:
        self.tmp, self.names, self.server, self.notes = tmp, list(names), None, []
        self.pg_version = "not run"
        if "postgresql" in self.names:
            sys.path.insert(0, str(REPO / "tests"))
            from _postgres import Unavailable, start_server

            try:
                self.server = start_server()
            except Unavailable as e:
                self.notes.append(f"PostgreSQL rows skipped: {e}.")
            except Exception as e:  # installed, but it did not start: skip and say why
                self.notes.append(f"PostgreSQL rows skipped: the server did not start ({e}).")
            if self.server is None:
                self.names.remove("postgresql")
            else:
                from sqlalchemy import create_engine, text

                engine = create_engine(self.server.url)
                with engine.connect() as conn:
                    self.pg_version = str(conn.execute(text("SHOW server_version")).scalar())
                engine.dispose()

    def url(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / f'{name}.db'}"
        if backend == "journal":
            return f"journal:{self.tmp / f'{name}.log'}"
        assert self.server is not None
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# ---------------------------------------------------------------- 1. throughput


def _worker(
    index: int, studies: list[tuple[str, str]], budget: int, barrier: Any, out: Any
) -> None:
    """One worker process: for each (storage URL, study name), build a FreezeThaw, wait for
    the others at the barrier, run ``optimize`` and report its first-ask/last-tell times."""
    try:
        _quiet()
        from pfnkit.hpo import FreezeThaw
        from pfnkit.hpo.surrogate import FreezeThawSurrogate

        surrogate = FreezeThawSurrogate("default", seed=index)
        for rep, (url, name) in enumerate(studies):
            ft = FreezeThaw(
                SPACE,
                max_steps=MAX_STEPS,
                step_size=STEP_SIZE,
                surrogate=surrogate,
                storage=url,
                study_name=name,
                seed=1000 * rep + index,
            )
            rec = {"index": index, "rep": rep, "steps": 0, "jobs": 0, "last": math.nan}
            tell = ft.tell

            def timed_tell(job: Any, values: Any, _tell: Any = tell, _rec: dict = rec) -> Any:
                recorded = _tell(job, values)
                _rec["last"] = time.time()
                _rec["steps"] += job.to_step - job.from_step
                _rec["jobs"] += 1
                return recorded

            ft.tell = timed_tell  # type: ignore[method-assign]
            barrier.wait(timeout=600)
            rec["first"] = time.time()
            ft.optimize(objective, budget)
            out.put(rec)
    except BaseException:
        out.put({"index": index, "error": traceback.format_exc()})
        barrier.abort()


def _study_steps(url: str, name: str) -> tuple[int, int]:
    """(steps recorded, configurations) of a study, read afresh."""
    import optuna

    from pfnkit.hpo.storage import STEPS_ATTR, open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    steps = sum(int(t.user_attrs.get(STEPS_ATTR, 0)) for t in trials)
    # every step's value is recorded once: the intermediate values agree with the steps
    values = sum(len(t.intermediate_values) for t in trials)
    return (steps if steps == values else -1), len(trials)


def throughput(backends: Backends, workers: list[int], budget: int, repeats: int) -> list[dict]:
    """Run each (backend, worker count) ``repeats`` times, each on a fresh study, with one
    set of worker processes."""
    from pfnkit.hpo.storage import open_study

    ctx = mp.get_context("spawn")
    rows = []
    for backend in backends.names:
        for n in workers:
            tag = uuid.uuid4().hex[:6]
            names = [f"tp-{backend}-{n}-{r}-{tag}" for r in range(repeats)]
            studies = [(backends.url(backend, name), name) for name in names]
            for url, name in studies:  # created here, not in a race between the workers
                open_study(url, name, "maximize")
            _log(f"throughput: {backend}, {n} worker(s), {repeats} x {budget} steps")
            barrier, out = ctx.Barrier(n), ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(i, studies, budget, barrier, out))
                for i in range(n)
            ]
            for p in procs:
                p.start()
            got = []
            for _ in range(n * repeats):
                got.append(out.get(timeout=900))
                if "error" in got[-1]:
                    for p in procs:
                        p.kill()
                    raise RuntimeError(f"a worker failed on {backend}:\n{got[-1]['error']}")
            for p in procs:
                p.join(timeout=60)
            for r, (url, name) in enumerate(studies):
                recs = [g for g in got if g["rep"] == r]
                steps, configs = _study_steps(url, name)
                rows.append(
                    {
                        "backend": backend,
                        "workers": n,
                        "rep": r,
                        "wall": max(g["last"] for g in recs) - min(g["first"] for g in recs),
                        "steps": steps,
                        "worker_steps": sum(g["steps"] for g in recs),
                        "jobs": sum(g["jobs"] for g in recs),
                        "configs": configs,
                        "split": sorted((g["steps"] for g in recs), reverse=True),
                    }
                )
    return rows


# ---------------------------------------------------------------- 2. ask time vs trials


def _fill_storage(backend: str, url: str) -> Any:
    """The storage the fill writes through (SQLite: synchronous=OFF, for speed only)."""
    import optuna

    from pfnkit.hpo.storage import open_storage

    if backend != "sqlite":
        return open_storage(url)
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    @event.listens_for(storage.engine, "connect")
    def _fast(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    storage.engine.dispose()
    return storage


def fill(
    storage: Any, name: str, space: dict, have: int, upto: int, rng: np.random.Generator
) -> float:
    """Add ``upto - have`` configurations to study ``name``; the seconds it took."""
    from optuna.trial import TrialState, create_trial

    from pfnkit.hpo.space import sample_configs
    from pfnkit.hpo.storage import LEASE_ATTR, STEPS_ATTR, TAG_ATTR

    study_id = storage.get_study_id_from_name(name)
    t0 = time.perf_counter()
    for params in sample_configs(space, max(upto - have, 0), rng):
        steps = int(rng.integers(1, MAX_STEPS + 1))
        values = {s: curve_value(params, s) for s in range(1, steps + 1)}
        done = steps >= MAX_STEPS
        lease = {"worker": "fill:0", "time": time.time() - 60, "to": steps}
        template = create_trial(
            state=TrialState.COMPLETE if done else TrialState.WAITING,
            value=values[steps] if done else None,
            params=params,
            distributions=space,
            user_attrs={STEPS_ATTR: steps, TAG_ATTR: float(rng.random()), LEASE_ATTR: lease},
            intermediate_values=values,
        )
        storage.create_new_trial(study_id, template_trial=template)
    return time.perf_counter() - t0


def _timed(fn: Any, spent: dict[str, float], key: str) -> Any:
    """``fn`` adding its seconds to ``spent[key]`` and its calls to ``spent["n_" + key]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t
            spent["n_" + key] = spent.get("n_" + key, 0.0) + 1

    return wrapper


def _measure(ft: Any, asks: int) -> dict[str, float]:
    """``asks`` rounds of ask + tell on ``ft``: the first (cold) and the others' medians."""
    spent = {"select": 0.0, "reads": 0.0, "n_reads": 0.0}
    acq, store = ft.acquisition, ft.store
    acq.select = _timed(acq.select, spent, "select")  # type: ignore[method-assign]
    store.trials = _timed(store.trials, spent, "reads")  # type: ignore[method-assign]
    samples = []
    for _ in range(asks):
        spent.update(select=0.0, reads=0.0, n_reads=0.0)
        t0 = time.perf_counter()
        job = ft.ask(budget=10**9)  # a budget, as optimize passes: the claim counts it
        t1 = time.perf_counter()
        assert job is not None
        ft.tell(job, objective(job))
        t2 = time.perf_counter()
        samples.append(
            {
                "step": t2 - t0,
                "ask": t1 - t0,
                "tell": t2 - t1,
                "select": spent["select"],
                "reads": spent["reads"],
                "n_reads": spent["n_reads"],
            }
        )
    warm = samples[1:] or samples
    out = {k: statistics.median(s[k] for s in warm) for k in samples[0]}
    return {**out, "cold": samples[0]["step"], "asks": len(warm)}


def ask_time(backends: Backends, sizes: list[int], asks: int, deadline: float) -> list[dict]:
    """For each size (smallest first) and backend: grow the backend's study to that many
    configurations, then time ask + tell on a new FreezeThaw. A size whose fill and asks
    would end after ``deadline`` (estimated from the smaller sizes) is skipped."""
    from pfnkit.hpo import FreezeThaw
    from pfnkit.hpo.space import load_space
    from pfnkit.hpo.surrogate import FreezeThawSurrogate

    space = load_space(SPACE)
    surrogate = FreezeThawSurrogate("default", seed=0)
    state = {}
    for backend in backends.names:
        name = f"ask-{backend}-{uuid.uuid4().hex[:6]}"
        url = backends.url(backend, name)
        FreezeThaw(space, max_steps=MAX_STEPS, surrogate=surrogate, storage=url, study_name=name)
        state[backend] = {
            "name": name,
            "url": url,
            "storage": _fill_storage(backend, url),
            "rng": np.random.default_rng(0),
            "have": 0,
            "filled": 0.0,
            "per_trial": 0.05,  # fill seconds per configuration, a guess until measured
            "per_ask": 0.5,  # ask + tell seconds per configuration in the study, likewise
        }
    rows = []
    for size in sorted(sizes):
        for backend in backends.names:
            st = state[backend]
            need = st["per_trial"] * (size - st["have"]) + asks * st["per_ask"] * size / 1000
            if time.time() + need > deadline:
                rows.append({"backend": backend, "trials": size, "skipped": need})
                continue
            _log(f"ask time: {backend}, filling to {size} configurations")
            took = fill(st["storage"], st["name"], space, st["have"], size, st["rng"])
            st["per_trial"] = took / max(size - st["have"], 1)
            st["filled"] += took
            st["have"] = size
            _log(f"ask time: {backend}, {size} configurations, {asks} asks")
            ft = FreezeThaw(
                space,
                max_steps=MAX_STEPS,
                surrogate=surrogate,
                storage=st["url"],
                study_name=st["name"],
                seed=size,
            )
            got = _measure(ft, asks)
            st["have"] = len(ft.study.get_trials(deepcopy=False))  # the asks added some
            st["per_ask"] = max(got["step"], got["cold"]) / size * 1000
            rows.append({"backend": backend, "trials": size, "fill": st["filled"], **got})
    return rows


# ---------------------------------------------------------------- report


def machine(backends: Backends) -> list[str]:
    import optuna
    import sqlalchemy
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        import subprocess

        commit = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %cs"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return [
        f"- pfnkit at commit {commit or '?'}",
        f"- machine: {os.cpu_count()} cores, {cpu}; load average at start {load} (1/5/15 min)",
        f"- Python {platform.python_version()}, optuna {optuna.__version__}, SQLAlchemy "
        f"{sqlalchemy.__version__}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"thread per process), PostgreSQL server {backends.pg_version}",
    ]


def report_throughput(rows: list[dict], workers: list[int], budget: int, names: list[str]) -> None:
    cores = os.cpu_count() or 1
    print("\n## 1. Steps per second with an instant objective\n")
    print(
        f"Budget {budget} steps, max_steps {MAX_STEPS}, step_size {STEP_SIZE}, bundled "
        "surrogate; first ask to last tell; the median over the repeats (a fresh study each).\n"
    )

    def med(backend: str, n: int, key: str) -> float:
        return statistics.median(
            r[key] for r in rows if r["backend"] == backend and r["workers"] == n
        )

    print("| workers | " + " | ".join(f"{b} steps/s" for b in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for n in workers:
        cells = []
        for b in names:
            sps = budget / med(b, n, "wall")
            base = budget / med(b, workers[0], "wall")
            cells.append(f"{sps:.1f} (x{sps / base:.2f})")
        over = " (oversubscribed)" if n > cores else ""
        print(f"| {n}{over} | " + " | ".join(cells) + " |")
    print(f"\n(x: against {workers[0]} worker(s) on the same backend)\n")
    print(
        "| backend | workers | repeat | wall s | steps/s | ms/step | steps in study | "
        "steps told | jobs | configurations | steps per worker |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ok = "" if r["steps"] == budget == r["worker_steps"] else " **MISMATCH**"
        print(
            f"| {r['backend']} | {r['workers']} | {r['rep']} | {r['wall']:.2f} | "
            f"{budget / r['wall']:.1f} | {1e3 * r['wall'] / budget:.1f} | {r['steps']}{ok} | "
            f"{r['worker_steps']} | {r['jobs']} | {r['configs']} | "
            f"{', '.join(map(str, r['split']))} |"
        )
    bad = [r for r in rows if not r["steps"] == budget == r["worker_steps"]]
    print(
        f"\nTotal steps == budget ({budget}) in every run: {'yes' if not bad else 'NO'} "
        f"({len(rows)} runs)."
    )


def report_ask(rows: list[dict], asks: int) -> None:
    print("\n## 2. One ask + tell against the study's size\n")
    print(
        f"The median of {asks - 1} ask + tell after a cold first one (a new FreezeThaw on the "
        f"filled study); max_steps {MAX_STEPS}; ask with a budget, as optimize calls it.\n"
    )
    print(
        "| configurations | backend | fill s | cold ask+tell ms | ask+tell ms | ask ms | "
        "of which surrogate (select) ms | of which trial reads ms | tell ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            why = f"skipped: needs ~{r['skipped']:.0f} s, past --minutes"
            print(f"| {r['trials']:,} | {r['backend']} | {why} | | | | | | |")
            continue
        print(
            f"| {r['trials']:,} | {r['backend']} | {r['fill']:.0f} | {1e3 * r['cold']:.0f} | "
            f"{1e3 * r['step']:.0f} | {1e3 * r['ask']:.0f} | {1e3 * r['select']:.0f} | "
            f"{1e3 * r['reads']:.0f} ({r['n_reads']:.0f} reads) | {1e3 * r['tell']:.0f} |"
        )
    by = {(r["backend"], r["trials"]): r for r in rows if "skipped" not in r}
    sizes = sorted({t for _, t in by})
    if len(sizes) > 1:
        print()
        for b in dict.fromkeys(b for b, _ in by):
            got = [by[(b, t)]["step"] for t in sizes if (b, t) in by]
            if len(got) > 1:
                steps = ", ".join(
                    f"x{by[(b, t)]['step'] / got[0]:.1f} at {t:,}"
                    for t in sizes[1:]
                    if (b, t) in by
                )
                print(f"- {b}: ask + tell time against {sizes[0]:,} configurations: {steps}")
    print("\n(fill s: cumulative seconds to create the configurations through the storage API)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="budget 40, 100/1,000 trials, 1 repeat")
    ap.add_argument("--budget", type=int, default=None, help="steps per throughput run (200)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=None, help="throughput runs per cell (3)")
    ap.add_argument("--trials", type=int, nargs="+", default=None, help="100 1000 5000")
    ap.add_argument("--asks", type=int, default=None, help="ask+tell per study size (11)")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--skip", choices=("throughput", "ask"), nargs="*", default=[])
    ap.add_argument(
        "--minutes",
        type=float,
        default=15.0,
        help="skip the study sizes that would end the run after this many minutes (15)",
    )
    args = ap.parse_args()
    budget = args.budget or (40 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = args.trials or ([100, 1000] if args.quick else [100, 1000, 5000])
    asks = args.asks or (5 if args.quick else 11)
    start = time.time()
    _quiet()
    with tempfile.TemporaryDirectory(prefix="pfnkit-hpo-scale-") as tmp:
        backends = Backends(args.backends, Path(tmp))
        try:
            print("# Freeze-thaw loop overhead (benchmarks/hpo_scale.py)\n")
            print(f"`{' '.join(['python', 'benchmarks/hpo_scale.py', *sys.argv[1:]])}`\n")
            for line in machine(backends):
                print(line)
            for note in backends.notes:
                print(f"- {note}")
            over = [n for n in args.workers if n > (os.cpu_count() or 1)]
            if over:
                print(
                    f"- {', '.join(map(str, over))} worker(s) on {os.cpu_count()} cores are "
                    "oversubscribed: the workers take turns on the cores."
                )
            sys.stdout.flush()
            if "throughput" not in args.skip:
                rows = throughput(backends, args.workers, budget, repeats)
                report_throughput(rows, args.workers, budget, backends.names)
                sys.stdout.flush()
            if "ask" not in args.skip:
                deadline = start + 60 * args.minutes
                report_ask(ask_time(backends, sizes, asks, deadline), asks)
            load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"\nTotal wall time {time.time() - start:.0f} s; load average at the end {load}.")
        finally:
            backends.stop()


if __name__ == "__main__":
    main()
