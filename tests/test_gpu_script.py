"""benchmarks/gpu.sh dry-run on the CPU (--tiny), and the trainer options it relies on:
data workers, --max-minutes and --fit-steps."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pfnkit.cli.app import app
from pfnkit.exceptions import InvalidConfigError
from pfnkit.model import PFNConfig
from pfnkit.priors import SCMPrior
from pfnkit.train import TrainConfig, Trainer
from pfnkit.train.checkpoint import load_pfn

ROOT = Path(__file__).resolve().parents[1]


def run_tiny(out, work, *options, timeout=120, **env):
    """benchmarks/gpu.sh --tiny --out OUT --work WORK OPTIONS..., one thread; it must pass."""
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--out", str(out)]
        + ["--work", str(work), *options],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr


def test_gpu_script_tiny_writes_a_copyable_output_folder(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    run_tiny(out, work)
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"summary.md", "tests.log", "train.log", "bench.md"} <= names
    assert {"tabular-clf-gpu-small.safetensors", "tabular-clf-gpu-small.md"} <= names
    # the copy-back limits: <= 8 files, each <= 16 MiB, <= 2 levels, plain names
    assert len(files) <= 8
    for p in out.rglob("*"):
        assert p.is_file() or p.is_dir()
        assert len(p.relative_to(out).parts) <= 3
        assert re.fullmatch(r"[A-Za-z0-9._-]+", p.name), p.name
        assert not p.is_file() or p.stat().st_size <= 16 * 2**20
    summary = (out / "summary.md").read_text()
    assert "train: exit 0" in summary and "held-out prior loss" in summary
    assert "attention benchmark: exit 0" in summary and "ffn benchmark: exit 0" in summary
    model, card = load_pfn(out / "tabular-clf-gpu-small.safetensors", expect="classifier")
    assert card.kind == "classifier" and model.config.n_features == 8
    assert (work / "run" / "checkpoint.pt").is_file()  # the run stays outside --out


def test_gpu_script_warm_start_scores_the_start_network_on_the_same_batches(tmp_path):
    out = tmp_path / "out"
    ckpt = ROOT / "pfnkit" / "checkpoints" / "treatment-effect.safetensors"
    recipe = "priors/treatment-effect-gpu-continue.toml"
    run_tiny(
        out, tmp_path / "work", "--recipe", recipe, "--init-from", str(ckpt), "--skip-tests",
        "--skip-bench", timeout=180, TINY_MINUTES="0.02",
    )  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert "train: exit 0" in summary, summary
    assert "trained: " in summary
    # the trained network and the one it began from, at the run's rows and the start's
    for rows in (64, 512):
        assert re.search(rf"NLL\) trained: [0-9.]+ on 16 tables of {rows} rows", summary)
        assert re.search(
            rf"NLL\) init \(treatment-effect.safetensors\): [0-9.]+ on 16 tables of {rows} rows",
            summary,
        )
    card = (out / "treatment-effect-gpu-continue.md").read_text()
    assert "initialised from: treatment-effect.safetensors (" in card


def test_gpu_script_refuses_bad_options(tmp_path):
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--out", str(tmp_path), "--minutes", "x"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--minutes must be a number > 0. Got 'x'" in r.stderr


def _tiny(**kw):
    base = dict(steps=6, batch_size=3, rows=24, lr=1e-3, device="cpu", precision="fp32")
    return TrainConfig(**{**base, **kw})


CFG = PFNConfig(task="classification", n_features=4, d_model=16, n_layers=1, n_heads=2)


def test_data_workers_train_on_the_same_batches_and_resume_exactly(tmp_path):
    prior = SCMPrior(max_classes=3)
    inline = Trainer(prior, CFG, _tiny(), tmp_path / "a")
    inline.run()
    fed = Trainer(prior, CFG, _tiny(data_workers=2), tmp_path / "b")
    fed.run(lambda info: fed.request_stop() if info.step == 3 else None)
    assert fed.step == 3
    resumed = Trainer.resume(tmp_path / "b")
    assert resumed.train_config.data_workers == 2
    resumed.run()
    for k, v in inline.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_data_workers_must_be_a_small_int():
    with pytest.raises(
        InvalidConfigError,
        match=r"'data_workers' training parameter must be an int in \[0, 256\].*Got -1",
    ):
        _tiny(data_workers=-1)


def test_fit_steps_sets_the_total_to_the_time_budget():
    trainer = Trainer(SCMPrior(max_classes=3), CFG, _tiny(steps=100000, warmup_steps=None))
    warmup = trainer.train_config.warmup
    result = trainer.run(max_seconds=1.0, fit_steps=True)
    steps = trainer.train_config.steps
    assert steps < 100000 and trainer.train_config.warmup_steps == warmup
    assert 0.5 * steps <= result["step"] <= steps
    with pytest.raises(InvalidConfigError, match="fit_steps needs max_seconds"):
        trainer.run(fit_steps=True)


def test_fit_steps_refits_when_the_speed_changes():
    """A run whose steps get 5x faster after 30 % of its budget (as when data workers get
    ahead) still ends its schedule near the end of the budget, not at a third of it."""
    import time

    trainer = Trainer(SCMPrior(max_classes=3), CFG, _tiny(steps=100000, warmup_steps=None))
    start = time.perf_counter()

    def step():  # no model work: only the speed matters here
        trainer.step += 1
        time.sleep(0.02 if time.perf_counter() - start < 0.9 else 0.004)
        return 1.0

    trainer.train_step = step
    budget = 3.0
    result = trainer.run(max_seconds=budget, fit_steps=True)
    took = time.perf_counter() - start
    steps = trainer.train_config.steps
    # one fit at a fifth (50 steps/s then) would have set ~150 steps, done in ~1 s
    assert took >= 0.75 * budget, (took, steps)
    assert steps > 300 and 0.85 * steps <= result["step"] <= steps


def test_cli_max_minutes_and_data_workers(tmp_path):
    runner = CliRunner()
    args = ["train-prior", "--prior", "scm", "--out", str(tmp_path / "r"), "--steps", "100000"]
    args += ["--rows", "24", "--batch-size", "2", "--features", "3", "--d-model", "16"]
    args += ["--n-layers", "1", "--device", "cpu", "--threads", "1", "--quiet"]
    r = runner.invoke(app, [*args, "--max-minutes", "0.01", "--data-workers", "1"])
    assert r.exit_code == 0, r.output
    assert "--max-minutes reached" in r.output
    bad = runner.invoke(app, [*args, "--max-minutes", "0", "--overwrite"])
    assert bad.exit_code == 1 and "'--max-minutes' option must be a number > 0" in bad.output
    bad = runner.invoke(app, [*args, "--fit-steps", "--overwrite"])
    assert bad.exit_code == 1 and "give --max-minutes too" in bad.output
