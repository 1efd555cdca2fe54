"""Offline access to the YAHPO Gym ``lcbench`` surrogate (v1.0.2) for the benchmarks.

The surrogate (ONNX model + metadata) lives outside the repo, in ``../shared/data/yahpo``
(YAHPO's ``data_path``: the folder that contains ``lcbench/``). It is referenced, never copied.

Benchmark venv (yahpo-gym pins ``numpy<2`` and ``ConfigSpace<=0.6.1``, so it gets its own venv;
the plain install resolves cleanly, pip downgrades numpy 2.x -> 1.26.4, torch/pfnkit work with it)::

    python3 -m venv benchmarks/.venv-yahpo
    benchmarks/.venv-yahpo/bin/pip install torch==2.13.0   # exact pin: CPU wheel, no CUDA
    benchmarks/.venv-yahpo/bin/pip install -e .
    benchmarks/.venv-yahpo/bin/pip install yahpo-gym onnxruntime emcee scipy matplotlib
    # -> yahpo-gym 1.0.2, ConfigSpace 0.6.1, onnxruntime 1.31.1, numpy 1.26.4, pandas 3.0.6

Smoke test: ``benchmarks/.venv-yahpo/bin/python benchmarks/_lcbench.py``.

YAHPO's config: ``yahpo_gym.local_config`` normally reads ``~/.config/yahpo_gym`` (a YAML file),
and its ``init_config``/``set_data_path`` write that file. We write nothing: the singleton's
cached settings are set in memory (``local_config._config``), which is all YAHPO reads.

Units: ``val_accuracy`` is in PERCENT (0..100) and is returned raw by :meth:`LCBench.curves`;
``val_balanced_accuracy``/``test_balanced_accuracy`` are fractions (0..1), cross-entropies are
nats, ``time`` is seconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

SCENARIO = "lcbench"
N_EPOCHS = 52
EPOCHS: NDArray[np.int64] = np.arange(1, N_EPOCHS + 1)
TARGETS: tuple[str, ...] = (
    "time",
    "val_accuracy",
    "val_cross_entropy",
    "val_balanced_accuracy",
    "test_cross_entropy",
    "test_balanced_accuracy",
)
# The 17 development tasks (OpenML task ids, as YAHPO names its instances).
DEV_TASKS: tuple[str, ...] = (
    "3945",
    "7593",
    "34539",
    "126025",
    "126026",
    "126029",
    "146212",
    "167104",
    "167149",
    "167152",
    "167161",
    "167168",
    "167181",
    "167184",
    "167185",
    "167190",
    "167200",
)


def data_path() -> Path:
    """YAHPO's ``data_path``: ``<repo>/../shared/data/yahpo`` (holds ``lcbench/``)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yahpo"


def unavailable_reason() -> str | None:
    """Why the surrogate cannot be used here, or None when it can."""
    model = data_path() / SCENARIO / "model.onnx"
    if not model.is_file():
        return f"YAHPO lcbench surrogate not found at {model}"
    missing = [m for m in ("yahpo_gym", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"missing package(s) {', '.join(missing)}: use benchmarks/.venv-yahpo "
            "(install commands at the top of benchmarks/_lcbench.py)"
        )
    return None


def available() -> bool:
    """True when the shared data folder and yahpo_gym (+ onnxruntime) are both there."""
    return unavailable_reason() is None


def skip_if_unavailable() -> None:
    """For benchmark scripts: print why and exit 0 when the surrogate is unavailable."""
    reason = unavailable_reason()
    if reason is not None:
        print(f"SKIP: {reason}")
        raise SystemExit(0)


def _point_yahpo_at_shared_data() -> None:
    """Set YAHPO's data_path in memory only (no ~/.config/yahpo_gym is read or written)."""
    from yahpo_gym import local_config

    local_config._config = {"data_path": str(data_path())}
    if local_config.data_path != data_path():
        raise RuntimeError(f"could not point yahpo_gym at {data_path()}")


class LCBench:
    """One lcbench task (instance) of the YAHPO surrogate, single-threaded ONNX inference."""

    def __init__(self, task: str) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise FileNotFoundError(reason)
        _point_yahpo_at_shared_data()
        from yahpo_gym import BenchmarkSet

        self.task = str(task)
        with contextlib.redirect_stdout(io.StringIO()):  # BenchmarkSet prints a citation
            self.bench = BenchmarkSet(SCENARIO, instance=self.task, multithread=False)
        self._space = self.bench.get_opt_space(drop_fidelity_params=True)
        cfg = self.bench.config
        self._cont_names: list[str] = list(cfg.cont_names)  # "epoch" first, then the 7 HPs
        self._hp_names: list[str] = [n for n in self._cont_names if n not in cfg.fidelity_params]
        self._y_names: list[str] = list(cfg.y_names)
        self._task_code = int(self.bench.encoding[cfg.instance_names][self.task])
        inputs = self.bench.session.get_inputs()
        self._in_cat, self._in_cont = inputs[0].name, inputs[1].name  # YAHPO's order
        self._out = self.bench.session.get_outputs()[0].name

    def space(self) -> Any:
        """The ConfigSpace ``ConfigurationSpace`` to optimise: 7 HPs, task id as a Constant,
        fidelity ``epoch`` dropped (``curves`` evaluates every epoch)."""
        return self.bench.get_opt_space(drop_fidelity_params=True)

    def sample_configs(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` uniformly random configurations (log-scale where the space says so),
        reproducible by ``seed``; each dict includes ``OpenML_task_id``, no ``epoch``."""
        if n <= 0:
            return []
        cs = self.bench.get_opt_space(drop_fidelity_params=True, seed=seed)
        sampled = cs.sample_configuration(n)
        if not isinstance(sampled, list):  # ConfigSpace returns a bare Configuration for n=1
            sampled = [sampled]
        return [
            {
                k: (v.item() if isinstance(v, np.generic) else v)
                for k, v in c.get_dictionary().items()
            }
            for c in sampled
        ]

    def curves(
        self, configs: list[dict[str, Any]], metric: str = "val_accuracy", check: bool = True
    ) -> NDArray[np.float64]:
        """``metric`` at epochs 1..52 for each config: array (len(configs), 52).

        Raw surrogate units (``val_accuracy`` in percent). All configs x epochs go through ONE
        ONNX ``session.run`` (the same inputs YAHPO's ``objective_function`` builds, without its
        per-row Python loop). ``epoch`` and ``OpenML_task_id`` in a config are ignored; ``check``
        validates each config against :meth:`space` first.
        """
        if metric not in self._y_names:
            raise ValueError(f"unknown metric {metric!r}; one of {self._y_names}")
        n = len(configs)
        if n == 0:
            return np.zeros((0, N_EPOCHS))
        if check:
            from ConfigSpace import Configuration

            for c in configs:
                values = {k: c[k] for k in self._hp_names}
                values["OpenML_task_id"] = self.task
                self._space.check_configuration(Configuration(self._space, values=values))
        hp = np.array([[float(c[k]) for k in self._hp_names] for c in configs], dtype=np.float32)
        x3 = np.empty((n, N_EPOCHS, len(self._cont_names)), dtype=np.float32)
        for j, name in enumerate(self._cont_names):
            if name == "epoch":
                x3[:, :, j] = EPOCHS[None, :]
            else:
                x3[:, :, j] = hp[:, self._hp_names.index(name), None]
        x_cont = x3.reshape(n * N_EPOCHS, -1)
        x_cat = np.full((n * N_EPOCHS, 1), self._task_code, dtype=np.int32)
        out = self.bench.session.run([self._out], {self._in_cat: x_cat, self._in_cont: x_cont})[0]
        col = self._y_names.index(metric)
        return np.asarray(out[:, col], dtype=np.float64).reshape(n, N_EPOCHS)

    def curves_via_objective(
        self, configs: list[dict[str, Any]], metric: str = "val_accuracy"
    ) -> NDArray[np.float64]:
        """Same as :meth:`curves` through YAHPO's own (slower) batched ``objective_function``;
        kept to cross-check the fast path."""
        rows = [dict(c, epoch=int(e)) for c in configs for e in EPOCHS]
        res = self.bench.objective_function(rows)
        return np.array([r[metric] for r in res], dtype=np.float64).reshape(len(configs), -1)


def _main() -> None:
    skip_if_unavailable()
    np.set_printoptions(precision=2, suppress=True, linewidth=110)
    print(f"data_path={data_path()}")
    print(f"{'task':>7} {'shape':>8} {'min':>6} {'median':>6} {'max':>6}  (final val_acc %)   time")
    for task in DEV_TASKS:
        t0 = time.perf_counter()
        lc = LCBench(task)
        y = lc.curves(lc.sample_configs(8, seed=0))
        dt = time.perf_counter() - t0
        fin = y[:, -1]
        print(
            f"{task:>7} {str(y.shape):>8} {fin.min():6.2f} {np.median(fin):6.2f} {fin.max():6.2f}"
            f"{'':20} {dt * 1e3:6.1f} ms (init+sample+curves)"
        )

    lc = LCBench(DEV_TASKS[0])
    cfgs = lc.sample_configs(100, seed=1)
    assert cfgs == lc.sample_configs(100, seed=1), "sampling not reproducible"
    for check in (True, False):
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            y = lc.curves(cfgs, check=check)
            ts.append(time.perf_counter() - t0)
        print(f"curves(100 configs, check={check}): median {np.median(ts) * 1e3:.1f} ms")
    t0 = time.perf_counter()
    y_ref = lc.curves_via_objective(cfgs)
    print(f"via objective_function: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    print(f"max |fast - objective_function| = {np.abs(y - y_ref).max():.2e}")

    d = np.diff(y, axis=1)
    print(
        f"task {lc.task}, 100 curves: mean fraction of epoch steps that increase "
        f"{(d > 0).mean():.2f}; mean total drop from running max "
        f"{(np.maximum.accumulate(y, axis=1) - y).mean():.2f} pts; "
        f"median gain epoch1->52 {np.median(y[:, -1] - y[:, 0]):.2f} pts"
    )
    print("example curve (val_accuracy %, epochs 1..52):")
    print(y[int(np.argsort(y[:, -1])[50])])


if __name__ == "__main__":
    _main()
