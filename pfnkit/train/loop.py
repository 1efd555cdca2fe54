"""The training loop: sample a batch from the prior, step AdamW, log, checkpoint, resume."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pfnkit.exceptions import CheckpointError, InvalidConfigError, TrainingDivergedError
from pfnkit.model import PFNConfig, borders_from_targets, build_model
from pfnkit.priors import BatchShape, build_prior, prior_to_dict, step_generator, step_seed
from pfnkit.train.checkpoint import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    atomic_write,
    clean_stale_temporaries,
    read_checkpoint,
    save_checkpoint,
)
from pfnkit.train.config import MAX_SKIPPED_IN_A_ROW, TrainConfig
from pfnkit.train.data import BatchFeeder, sample_indexed
from pfnkit.train.distributed import (
    DistInfo,
    any_across_ranks,
    barrier,
    init_distributed,
    mean_across_ranks,
)
from pfnkit.train.schedule import lr_at

log = logging.getLogger(__name__)

BORDER_STREAM = 1 << 20  # a "rank" no worker uses: border batches never collide with training


@dataclass
class StepInfo:
    """What a progress callback sees after each step."""

    step: int
    steps: int
    loss: float
    lr: float
    elapsed: float
    datasets_per_s: float


# --fit-steps: shares of the time budget at which the step count is (re-)fitted to the speed
# measured since the last point (the first from a tenth of the budget), and the change below
# which a re-fit keeps the count. On a lent GPU the speed rose ~5x over a run as the data
# workers got ahead, and one fit at a fifth left a quarter of the budget unused (docs/gpu.md).
FIT_POINTS = (0.2, 0.4, 0.6, 0.8)
REFIT_TOLERANCE = 0.03


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InvalidConfigError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {name!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidConfigError(
            f"device {name!r} was requested but CUDA is not available here; use --device cpu."
        )
    return dev


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return False


def model_config_for(prior: Any, config: PFNConfig) -> PFNConfig:
    """Check a model config against the prior (task, classes) and fill what follows
    (the task, and the width of the per-row inputs a prior such as 'causal' carries)."""
    task = prior.task
    if config.task != task:
        config = dataclasses.replace(config, task=task)
    row_inputs = int(getattr(prior, "n_row_inputs", 0))
    if config.n_row_inputs != row_inputs:
        config = dataclasses.replace(config, n_row_inputs=row_inputs)
    if task == "classification":
        need = int(getattr(prior, "max_classes", config.n_classes))
        if config.n_classes < need:
            raise InvalidConfigError(
                f"The prior draws up to {need} classes but the model has n_classes="
                f"{config.n_classes}; raise n_classes to at least {need}."
            )
    return config


def _check_init_config(path: Any, state: dict[str, Any], config: PFNConfig) -> PFNConfig:
    """The checkpoint's model config, after checking that ``config`` (the run's, filled in
    for its prior) asks for the same network: a warm start cannot change its shape."""
    saved = PFNConfig.from_dict(state["model_config"])
    for field in dataclasses.fields(PFNConfig):
        mine, theirs = getattr(config, field.name), getattr(saved, field.name)
        if mine != theirs:
            raise InvalidConfigError(
                f"init_from '{path}' holds a network with {field.name}={theirs!r}, but this "
                f"run asks for {field.name}={mine!r} (from its model options or what its prior "
                "needs). A warm start keeps the network's shape: use the checkpoint's model "
                "config and a prior of the same kind, or train from scratch."
            )
    return saved


def _source_to_dict(source: Any) -> dict[str, Any]:
    to_dict = getattr(source, "to_dict", None)
    if callable(to_dict):  # a real table describes itself (never its rows)
        return dict(to_dict())
    return prior_to_dict(source)


class Trainer:
    """The one training loop: pretraining on a prior, prompt tuning, fine-tuning.

    Args:
        prior: the data source: any object with ``sample(shape, *, generator) -> Batch``
            and a ``task`` (a prior, or ``pfnkit.tuning.TableSource`` over one real table).
        model_config: the architecture of a fresh PFN (its ``task`` follows the source), or
            a built model to train (a PFN, or a module wrapping one that has the PFN's
            ``inputs_of`` / ``loss_from_logits`` / ``aux_loss``).
        train_config: optimisation and bookkeeping.
        out_dir: run directory for checkpoints and metrics (None: keep in memory).
        parameters: what to optimise (default: every parameter of the model that requires
            grad): the prefix only for prompt tuning, some layers, or all of them.
        overwrite: allow ``out_dir`` to hold another run (it is replaced).
    """

    def __init__(
        self,
        prior: Any,
        model_config: PFNConfig | nn.Module,
        train_config: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        parameters: Any = None,
        overwrite: bool = False,
        init_from: str | Path | None = None,
        _state: dict[str, Any] | None = None,
    ) -> None:
        self.prior = prior
        self.train_config = train_config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise InvalidConfigError(
                f"The run directory (--out) '{self.out_dir}' is a file, not a directory; "
                "give a directory path (it is created if missing)."
            )
        if self.out_dir is not None and _state is None and not overwrite:
            ckpt = self.out_dir / CHECKPOINT_NAME
            if ckpt.exists():
                raise CheckpointError(
                    f"'{self.out_dir}' already holds a run ({ckpt.name}). Continue it with "
                    f"--resume {self.out_dir}, choose another --out, or pass --overwrite."
                )
        self.device = resolve_device(train_config.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.bf16 = use_bf16(train_config.precision, self.device)

        torch.manual_seed(train_config.seed)
        init_state = None
        if init_from is not None:
            if _state is not None or isinstance(model_config, nn.Module):
                raise InvalidConfigError(
                    "init_from starts a new run from a checkpoint's weights; it cannot be "
                    "combined with resuming or with a built model. Drop one of them."
                )
            init_state = read_checkpoint(init_from)
            model_config = _check_init_config(
                init_from, init_state, model_config_for(prior, model_config)
            )
        if isinstance(model_config, nn.Module):
            self.model: Any = model_config.to(self.device)
            config = getattr(model_config, "config", None)
            self.model_config = config if isinstance(config, PFNConfig) else None
            if self.model_config is not None and self.model_config.task != prior.task:
                raise InvalidConfigError(
                    f"The model is a {self.model_config.task} PFN but the data source is a "
                    f"{prior.task} one; give a model of the source's task."
                )
        else:
            self.model_config = model_config_for(prior, model_config)
            borders = None
            if self.model_config.task == "regression":
                source = _state if _state is not None else init_state
                borders = (
                    source["state_dict"]["bar_distribution.borders"]
                    if source is not None
                    else self._prior_borders()
                )
            self.model = build_model(self.model_config, borders).to(self.device)
        chosen = self.model.parameters() if parameters is None else parameters
        self.parameters = [p for p in chosen if p.requires_grad]
        if not self.parameters:
            raise InvalidConfigError(
                "The Trainer was given no parameter that requires grad; pass the parameters "
                "to optimise (e.g. a prefix) or unfreeze some with requires_grad_(True)."
            )
        self.optimizer = torch.optim.AdamW(
            self.parameters,
            lr=train_config.lr,
            weight_decay=train_config.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.step = 0
        self.elapsed = 0.0  # training wall time over all sessions of the run
        self.last_loss = math.nan
        self.skipped_steps = 0  # steps skipped for a non-finite loss/gradient (on_nonfinite="skip")
        self._skipped_in_a_row = 0
        self.saved_step: int | None = None  # step of the last checkpoint on disk
        self._stop = False
        self._feeder: BatchFeeder | None = None
        self._data_seconds = 0.0  # time spent getting batches (sampling or waiting for workers)
        # where the weights came from when the run began from another checkpoint (the card
        # says so; the run's own step and datasets_seen count from 0)
        self.init_from: dict[str, Any] | None = None
        if init_state is not None:
            try:
                self.model.load_state_dict(init_state["state_dict"])
            except (RuntimeError, ValueError) as e:
                raise CheckpointError(
                    f"init_from '{init_from}': its weights do not match its model config "
                    f"({str(e).splitlines()[0]}). Use a checkpoint written by pfnkit."
                ) from None
            metrics = init_state.get("metrics", {})
            self.init_from = {
                "checkpoint": Path(str(init_from)).name,
                "step": int(init_state["step"]),
                "datasets_seen": int(metrics.get("datasets_seen", 0)),
                "prior": init_state.get("prior", {}).get("name"),
                "init_from": init_state.get("init_from"),  # a chain of warm starts
                "grown": init_state.get("grown"),  # `pfnkit grow` made it deeper
            }
        if _state is not None:
            self.model.load_state_dict(_state["state_dict"])
            self.optimizer.load_state_dict(_state["optimizer"])
            self.step = int(_state["step"])
            self.elapsed = float(_state.get("metrics", {}).get("wall_time", 0.0))
            self.last_loss = float(_state.get("metrics", {}).get("loss", math.nan))
            self.skipped_steps = int(_state.get("metrics", {}).get("skipped_steps", 0))
            self.saved_step = self.step
            self.init_from = _state.get("init_from")
        self._ddp: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)

    @property
    def source(self) -> Any:
        """The data source (a prior or a real table); ``prior`` is the historical name."""
        return self.prior

    def request_stop(self) -> None:
        """Stop after the current step (a callback's way to end a run early)."""
        self._stop = True

    # ------------------------------------------------------------------ sampling

    def _prior_borders(self) -> torch.Tensor:
        tc = self.train_config
        # big batches: per-call overhead dominates small priors at small training batches
        batch = max(tc.batch_size, math.ceil(8192 / tc.rows))
        assert self.model_config is not None
        shape = BatchShape(batch, tc.rows, self.model_config.n_features, max(1, tc.rows // 2))
        per_batch = shape.batch_size * shape.n_rows
        n_batches = max(1, math.ceil(tc.border_samples / per_batch))
        targets = [
            self.prior.sample(shape, generator=step_generator(tc.seed, i, BORDER_STREAM)).target_y
            for i in range(n_batches)
        ]
        return borders_from_targets(
            torch.cat([t.flatten() for t in targets]), self.model_config.n_bars
        )

    def batch_shape(self, single_eval_pos: int) -> BatchShape:
        tc = self.train_config
        n_features = self.model_config.n_features if self.model_config is not None else 1
        return BatchShape(tc.batch_size, tc.rows, n_features, single_eval_pos)

    def sample_batch(self, step: int, micro: int = 0) -> Any:
        """The batch of (step, micro-batch) for this rank: a pure function of the seed."""
        tc = self.train_config
        k = step * tc.accumulate + micro
        t0 = time.perf_counter()
        if self._feeder is not None and self._feeder.next == k:
            batch = self._feeder.get(k).to(self.device)  # drawn ahead by a data worker
        else:
            n_features = self.model_config.n_features if self.model_config is not None else 1
            batch = sample_indexed(self.prior, tc, n_features, self.dist.rank, k).to(self.device)
        self._data_seconds += time.perf_counter() - t0
        return batch

    # ------------------------------------------------------------------ training

    def train_step(self) -> float:
        """One optimizer step (with gradient accumulation); returns the mean loss."""
        tc = self.train_config
        self.model.train()
        lr = lr_at(
            self.step, lr=tc.lr, steps=tc.steps, warmup=tc.warmup, min_lr_ratio=tc.min_lr_ratio
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.model_config is None or self.model_config.dropout > 0:
            # dropout masks become a function of (seed, step, rank): resume stays exact
            torch.manual_seed(step_seed(tc.seed, self.step, self.dist.rank) ^ 0x5EED)
        total = 0.0
        for micro in range(tc.accumulate):
            batch = self.sample_batch(self.step, micro)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self._loss(batch)
            (loss / tc.accumulate).backward()
            total += float(loss.detach())
        loss_value = total / tc.accumulate
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, tc.grad_clip)
        else:
            grads = [p.grad for p in self.parameters if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
        bad = not math.isfinite(loss_value) or not bool(torch.isfinite(norm))
        # every rank takes the same decision (the losses differ per rank)
        if any_across_ranks(bad, self.dist, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            if tc.on_nonfinite == "skip" and self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW - 1:
                self._skipped_in_a_row += 1
                self.skipped_steps += 1
                log.warning("step %d: non-finite %s; update skipped", self.step, what)
                self.step += 1
                return self.last_loss
            in_a_row = (
                f" ({MAX_SKIPPED_IN_A_ROW} steps in a row)" if tc.on_nonfinite == "skip" else ""
            )
            raise self._diverged(f"the {what} became non-finite at step {self.step}{in_a_row}")
        self.optimizer.step()
        self.step += 1
        self._skipped_in_a_row = 0
        if not self._weights_finite(self.parameters):  # only what the update changed
            raise self._diverged(f"the update of step {self.step} made the weights non-finite")
        self.last_loss = loss_value
        return self.last_loss

    def _weights_finite(self, params: Any = None) -> bool:
        """Whether ``params`` (default: every model weight) are finite: one fused norm and
        one device sync (a norm that overflows also means the weights have diverged)."""
        tensors = [p.detach() for p in (self.model.parameters() if params is None else params)]
        if not tensors:
            return True
        return bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors)))

    def _diverged(self, what: str) -> TrainingDivergedError:
        lr = self.train_config.lr
        lower = lr / 10 if lr <= 1e-2 else TrainConfig.lr  # a large lr: suggest the default
        if self.out_dir is None:
            kept = "nothing was saved"
        elif self.saved_step is None:
            kept = f"no checkpoint was saved in '{self.out_dir}' yet"
        else:
            kept = (
                f"the last good checkpoint (step {self.saved_step}) in '{self.out_dir}' is kept; "
                f"continue with `pfnkit train-prior --resume {self.out_dir} --lr {lower:g}`"
            )
        skip = (
            ""
            if self.train_config.on_nonfinite == "skip"
            else ", or skip rare bad steps with --on-nonfinite skip"
        )
        return TrainingDivergedError(
            f"Training diverged: {what} (lr {lr:g}). Nothing non-finite was saved: {kept}. "
            f"Lower --lr (or lengthen the warm-up){skip}."
        )

    def _loss(self, batch: Any) -> torch.Tensor:
        # forward through the DDP wrapper (when there is one) so gradients are all-reduced
        logits = self._ddp(**self.model.inputs_of(batch))
        loss = self.model.loss_from_logits(logits, batch)
        aux = self.model.aux_loss()
        return loss if aux is None else loss + aux

    def run(
        self,
        callback: Callable[[StepInfo], None] | None = None,
        *,
        max_seconds: float | None = None,
        fit_steps: bool = False,
    ) -> dict[str, Any]:
        """Train up to ``train_config.steps``; checkpoint every N steps and at the end.

        Ctrl-C stops after the current step and saves a checkpoint (a second Ctrl-C aborts).
        ``max_seconds`` ends this session after that much wall time (a time budget);
        a callback can end it with ``request_stop()``. With ``fit_steps`` (and
        ``max_seconds``), the speed measured over the second tenth of the budget sets
        ``steps`` at a fifth of it to what the budget allows, and the speed over each later
        fifth re-fits it (at 2/5, 3/5 and 4/5, when it moved by more than 3 %): the
        learning-rate schedule then ends on time even when the speed changes, e.g. as data
        workers get ahead (the warm-up keeps its length; the new total is saved).
        """
        if fit_steps and max_seconds is None:
            raise InvalidConfigError("fit_steps needs max_seconds (a time budget to fit).")
        tc = self.train_config
        if tc.data_workers > 0:
            self._feeder = BatchFeeder(
                self.prior,
                tc,
                self.model_config.n_features if self.model_config is not None else 1,
                self.dist.rank,
                self.step * tc.accumulate,
                tc.data_workers,
            )
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for tmp in clean_stale_temporaries(self.out_dir):
                log.info("removed %s, left by a save that was killed", tmp)
            self._trim_metrics()
        restore = self._install_sigint()
        session_start = time.perf_counter()
        base_elapsed = self.elapsed
        window: list[float] = []
        data_window: list[float] = []
        mark: tuple[int, float] | None = None  # (step, time) where the speed is measured from
        fits = 0  # how many of FIT_POINTS have set the step count
        try:
            while self.step < tc.steps:
                if any_across_ranks(self._stop, self.dist, self.device):
                    self._stop = True  # every rank stops at the same step
                    break
                t0 = time.perf_counter()
                data0 = self._data_seconds
                loss = self.train_step()
                dt = time.perf_counter() - t0
                data_window.append(self._data_seconds - data0)
                data_window = data_window[-50:]
                self.elapsed = base_elapsed + time.perf_counter() - session_start
                window.append(dt)
                window = window[-50:]
                rate = (
                    tc.batch_size * tc.accumulate * self.dist.world_size * len(window) / sum(window)
                )
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    loss = mean_across_ranks(loss, self.dist, self.device)
                    self._log_metrics(loss, rate, sum(data_window) / sum(window))
                if callback is not None:
                    lr = self.optimizer.param_groups[0]["lr"]
                    callback(StepInfo(self.step, tc.steps, loss, lr, self.elapsed, rate))
                if self.step % tc.checkpoint_every == 0 and self.step < tc.steps:
                    self.save()
                spent = time.perf_counter() - session_start
                if max_seconds is not None and spent >= max_seconds:
                    break
                if fit_steps and max_seconds is not None:
                    if mark is None and spent >= 0.1 * max_seconds:
                        mark = (self.step, spent)
                    elif (
                        mark is not None
                        and fits < len(FIT_POINTS)
                        and spent >= FIT_POINTS[fits] * max_seconds
                    ):
                        # the speed since the last mark: the latest, not the start-up's
                        rate = (self.step - mark[0]) / max(spent - mark[1], 1e-9)
                        fitted = max(self.step + 1, self.step + int(rate * (max_seconds - spent)))
                        if fits == 0 or abs(fitted - tc.steps) > REFIT_TOLERANCE * tc.steps:
                            tc = dataclasses.replace(tc, steps=fitted, warmup_steps=tc.warmup)
                            self.train_config = tc
                            log.info("steps fitted to the time budget: %d", fitted)
                        mark, fits = (self.step, spent), fits + 1
        finally:
            restore()
            if self._feeder is not None:
                self._feeder.close()
                self._feeder = None
        self.save()
        return {"step": self.step, "loss": self.last_loss, "wall_time": self.elapsed}

    # ------------------------------------------------------------------ persistence

    def state(self, *, with_optimizer: bool = True) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model_config": self.model_config.to_dict() if self.model_config else {},
            "prior": _source_to_dict(self.prior),
            "train_config": self.train_config.to_dict(),
            "step": self.step,
            "world_size": self.dist.world_size,
            "metrics": {
                "loss": self.last_loss,
                "wall_time": self.elapsed,
                "datasets_seen": self.step
                * self.train_config.batch_size
                * self.train_config.accumulate
                * self.dist.world_size,
                "skipped_steps": self.skipped_steps,
            },
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        if self.init_from is not None:
            payload["init_from"] = self.init_from
        if with_optimizer:
            payload["optimizer"] = self.optimizer.state_dict()
        return payload

    def save(self) -> Path | None:
        """Write the checkpoint atomically (main rank only); returns its path."""
        path = None
        if self.out_dir is not None and not self._weights_finite():
            raise self._diverged(
                f"the weights at step {self.step} are non-finite and were not saved"
            )
        if self.out_dir is not None and self.dist.is_main:
            path = save_checkpoint(self.out_dir, self.state())
            self.saved_step = self.step
            log.info("saved %s at step %d", path, self.step)
        barrier(self.dist)
        return path

    def _log_metrics(self, loss: float, rate: float, data_share: float) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        line = {
            "step": self.step,
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "wall_time": round(self.elapsed, 3),
            "datasets_per_s": round(rate, 2),
            # share of step time spent getting batches (sampling, or waiting for workers):
            # near 1, the prior's sampling bounds training, not the network
            "data_share": round(data_share, 3),
        }
        try:
            with open(self.out_dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as e:  # a full disk: the next save says so clearly; keep training
            log.warning("could not append to %s: %s", METRICS_NAME, e)

    def _trim_metrics(self) -> None:
        """Drop metric lines past the checkpoint's step (written before a crash)."""
        assert self.out_dir is not None
        path = self.out_dir / METRICS_NAME
        if not path.exists():
            return
        keep = []
        for raw in path.read_text().splitlines():
            try:
                if json.loads(raw)["step"] <= self.step:
                    keep.append(raw)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
        text = "".join(k + "\n" for k in keep)
        atomic_write(path, lambda f: f.write(text.encode()))

    def _install_sigint(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
            log.warning("interrupted: stopping after this step and saving a checkpoint")

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)

        return restore

    @property
    def interrupted(self) -> bool:
        return self._stop

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        steps: int | None = None,
        model_overrides: dict[str, Any] | None = None,
        train_overrides: dict[str, Any] | None = None,
    ) -> Trainer:
        """Continue the run in ``run_dir``, optionally to a new total of ``steps``.

        The model shape and prior cannot change; training options such as ``steps``,
        ``lr`` or ``checkpoint_every`` can. With the same options, a resumed run reaches
        the same parameters as one that was never interrupted.
        """
        run_dir = Path(run_dir)
        if run_dir.is_file():  # RUN/checkpoint.pt names its run
            if run_dir.name != CHECKPOINT_NAME:
                raise CheckpointError(
                    f"--resume takes a run directory (or its {CHECKPOINT_NAME}); '{run_dir}' is "
                    f"another file. Copy it to RUN/{CHECKPOINT_NAME} and pass --resume RUN."
                )
            run_dir = run_dir.parent
        state = read_checkpoint(run_dir)
        if "optimizer" not in state:
            raise CheckpointError(
                f"'{run_dir}' holds weights only (no optimizer state) and cannot be resumed."
            )
        saved_model = PFNConfig.from_dict(state["model_config"])
        for key, value in (model_overrides or {}).items():
            if getattr(saved_model, key) != value:
                raise InvalidConfigError(
                    f"Cannot change the model's {key} when resuming (checkpoint has "
                    f"{getattr(saved_model, key)!r}, given {value!r}). Drop the option, or "
                    "start a new run with another --out."
                )
        train = TrainConfig.from_dict(state["train_config"])
        changes = dict(train_overrides or {})
        if steps is not None:
            changes["steps"] = steps
        protected = (
            "rows",
            "batch_size",
            "seed",
            "accumulate",
            "min_context",
            "max_context",
            "small_share",
            "small_rows",
            "small_features",
        )
        for key in protected:
            if key in changes and changes[key] != getattr(train, key):
                raise InvalidConfigError(
                    f"Cannot change {key} when resuming (checkpoint has {getattr(train, key)!r}, "
                    f"given {changes[key]!r}); it would change the data the run trains on. "
                    "Start a new run with another --out instead."
                )
        train = dataclasses.replace(train, **changes)
        if train.steps < int(state["step"]):
            raise InvalidConfigError(
                f"--steps {train.steps} is below the {state['step']} steps the run already "
                "made; give the new total number of steps."
            )
        prior = build_prior(state["prior"])
        return cls(prior, saved_model, train, run_dir, _state=state)
