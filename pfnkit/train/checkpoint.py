"""Checkpoints: plain dicts of tensors and primitives, written atomically.

A run directory holds ``checkpoint.pt`` (weights, configs, step, metrics and, for resume,
the optimizer state) and ``metrics.jsonl``. Files load with
``torch.load(path, weights_only=True)``; no module is ever pickled. Weights can also be
exported to safetensors with the configs as JSON metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pfnkit._version import __version__
from pfnkit.exceptions import CheckpointError

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
REQUIRED_KEYS = ("format_version", "model_config", "state_dict", "step")


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over.

    A crash at any moment leaves either the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically save a checkpoint dict (adds format and library versions)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / CHECKPOINT_NAME
    data = {"format_version": FORMAT_VERSION, "pfnkit_version": __version__, **payload}
    try:
        atomic_write(path, lambda f: torch.save(data, f))
    except (OSError, RuntimeError) as e:
        # torch's zip writer turns a full disk into "unexpected pos ..." (a RuntimeError)
        reason = " ".join(str(e).split()) or type(e).__name__
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free"
        except OSError:
            free = "free space unknown"
        raise CheckpointError(
            f"Could not write checkpoint '{path}': the write failed, most likely because the "
            f"disk is full ({free}; {reason[:120]}). The last good checkpoint there is "
            "untouched; free some space (or choose another --out) and continue with --resume."
        ) from None
    return path


def clean_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files a kill during a save left in a run directory.

    Only the names ``atomic_write`` gives its temporaries for this directory's checkpoint and
    metrics are touched; call it when no other process writes the run (at start or resume).
    """
    removed = []
    for name in (CHECKPOINT_NAME, METRICS_NAME):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def resolve_path(path: str | Path) -> Path:
    """A run directory, a .pt file or a .safetensors file -> the file to read."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(
            f"No checkpoint at '{path}': expected a run directory holding {CHECKPOINT_NAME}, "
            "a .pt file or a .safetensors file. Train one with `pfnkit train-prior`."
        )
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint dict (from .pt or .safetensors)."""
    p = resolve_path(path)
    if p.suffix == ".safetensors":
        return _read_safetensors(p)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any Python object but tensors and plain data (a class, a
        # function such as os.system): a safety refusal, not damage
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"Checkpoint '{p}' was refused for safety: it asks to load the Python object "
                f"'{found.group(1)}', and pfnkit loads checkpoints with "
                "torch.load(weights_only=True), which allows only tensors and plain data. "
                "Use a checkpoint written by pfnkit (or re-save a trusted file's weights as "
                "plain tensors)."
            ) from None
        raise _corrupt(p, e) from None
    except Exception as e:  # truncated zip, bad pickle, not a torch file...
        raise _corrupt(p, e) from None
    return _check(data, p)


def _corrupt(p: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint '{p}' is corrupt or truncated and cannot be read ({type(e).__name__}). "
        "Use an earlier copy or retrain."
    )


# optional fields and the type they must have when present
_MAPPINGS = (
    "model_config",
    "state_dict",
    "prior",
    "train_config",
    "metrics",
    "calibration",
    "init_from",
    "grown",
)


def _check(data: Any, p: Path) -> dict[str, Any]:
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
        raise CheckpointError(f"'{p}' is not a pfnkit checkpoint (missing {missing}).")
    fv = data["format_version"]
    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
        raise CheckpointError(
            f"Checkpoint '{p}' has a malformed format_version {fv!r} (a "
            f"{type(fv).__name__}); pfnkit writes a positive int (this one reads 1 to "
            f"{FORMAT_VERSION}). The file was damaged or edited; use an earlier copy or retrain."
        )
    if fv > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{p}' has format_version {fv} (written by pfnkit "
            f"{data.get('pfnkit_version', '?')}); this pfnkit {__version__} reads up to "
            f"format {FORMAT_VERSION}. Upgrade pfnkit to load it."
        )
    for key in _MAPPINGS:
        if key in data and not isinstance(data[key], dict):
            raise _malformed(p, key, "a mapping", data[key])
    step = data["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _malformed(p, "step", "an int >= 0", step)
    for name, value in data["state_dict"].items():
        if not isinstance(value, torch.Tensor):
            raise _malformed(p, "state_dict", "a mapping of names to tensors", {name: value})
    return data


def _malformed(p: Path, key: str, allowed: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(
        f"Checkpoint '{p}' is malformed: its '{key}' must be {allowed}. Got {shown} (a "
        f"{type(value).__name__}). The file was damaged or edited; use an earlier copy or retrain."
    )


def export_safetensors(path: str | Path, out: str | Path) -> Path:
    """Write a checkpoint's weights as safetensors with its configs as JSON metadata."""
    return write_safetensors(read_checkpoint(path), out)


def write_safetensors(data: dict[str, Any], out: str | Path) -> Path:
    """Write a checkpoint dict's weights as safetensors, configs as JSON metadata."""
    from safetensors.torch import save

    meta = {
        k: json.dumps(v)
        for k, v in data.items()
        if k not in ("state_dict", "optimizer", "rng_state")
    }
    tensors = {k: v.contiguous() for k, v in data["state_dict"].items()}
    out = Path(out)
    blob = save(tensors, metadata=meta)
    atomic_write(out, lambda f: f.write(blob))
    return out


def _read_safetensors(p: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = p.read_bytes()
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {})
        data: dict[str, Any] = {k: json.loads(v) for k, v in meta.items()}
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"Checkpoint '{p}' is corrupt or truncated and cannot be read ({type(e).__name__})."
        ) from None
    data["state_dict"] = tensors
    return _check(data, p)


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """Load a trained PFN (eval mode) from a run directory, .pt or .safetensors file.

    The returned model carries ``model.card``: prior recipe, train config, step, metrics.
    """
    data = read_checkpoint(path)
    model = model_from_data(data, path)
    model.card = card_of(data)
    return model.to(device).eval()


def model_from_data(data: dict[str, Any], path: str | Path) -> Any:
    """Build the PFN a checked checkpoint dict describes (the loader's one rule: ``pfnkit
    info`` uses it too, so the two agree on what loads)."""
    from pfnkit.exceptions import UnknownNameError
    from pfnkit.model import PFNConfig, build_model

    try:
        config = PFNConfig.from_dict(data["model_config"])
    except UnknownNameError as e:
        raise CheckpointError(
            f"Checkpoint '{path}' (pfnkit {data.get('pfnkit_version', '?')}) needs a component "
            f"this pfnkit {__version__} lacks: {e} Upgrade pfnkit, or install the package "
            "that registers it, to load it."
        ) from None
    except Exception as e:
        raise CheckpointError(f"Checkpoint '{path}' holds an invalid model config: {e}") from None
    state = data["state_dict"]
    try:
        model = build_model(config, borders=state.get("bar_distribution.borders"))
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"Checkpoint '{path}' weights do not match its model config: {str(e).splitlines()[0]}"
        ) from None
    return model


def card_of(data: dict[str, Any]) -> dict[str, Any]:
    """The human-facing summary of a checkpoint (no tensors)."""
    keys = (
        "format_version",
        "pfnkit_version",
        "step",
        "model_config",
        "prior",
        "train_config",
        "metrics",
        "world_size",
        "calibration",  # set after training by `pfnkit calibrate` (held-out prior data)
        "init_from",  # the checkpoint a warm-started run began from (`--init-from`)
        "grown",  # `pfnkit grow` made this network deeper (same outputs)
    )
    return {k: data[k] for k in keys if k in data}


def card_markdown(data: dict[str, Any], *, title: str, extra: str = "") -> str:
    """A human-readable card: recipe, seed, steps, wall time, machine and final loss."""
    import platform

    import torch

    card = card_of(data)
    train = card.get("train_config", {})
    metrics = card.get("metrics", {})
    recipe = {"prior": card.get("prior"), "model": card.get("model_config"), "train": train}
    lines = [
        f"# {title}",
        "",
        f"- pfnkit {card.get('pfnkit_version')}, checkpoint format {card.get('format_version')}",
        f"- steps: {card.get('step')} of {train.get('steps')} (batch {train.get('batch_size')}, "
        f"rows {train.get('rows')}, seed {train.get('seed')}, "
        f"world size {card.get('world_size', 1)})",
        f"- datasets seen: {metrics.get('datasets_seen', 0):,}",
        f"- training wall time: {metrics.get('wall_time', 0.0) / 60:.1f} min",
        f"- final training loss: {metrics.get('loss', float('nan')):.4f}",
        *(f"- initialised from: {source}" for source in init_chain(card.get("init_from"))),
        *(
            [f"- {grown} (`pfnkit grow`), the same outputs; not trained since"]
            if (grown := growth(card.get("grown")))
            else []
        ),
        f"- exported on: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(recipe, indent=2),
        "```",
    ]
    if extra:
        lines += ["", extra.strip()]
    return "\n".join(lines) + "\n"


def growth(grown: Any) -> str:
    """'grown from A to B layers' for a ``grown`` record (``pfnkit grow``), else ''."""
    if not isinstance(grown, dict):
        return ""
    return f"grown from {grown.get('from_layers')} to {grown.get('to_layers')} layers"


def init_chain(init: Any) -> list[str]:
    """What a warm-started run began from, newest first: "NAME (S steps, D datasets of
    prior 'P'[, grown from A to B layers])" for each ``init_from`` record in the chain (a
    hand-edited one is skipped)."""
    lines = []
    while isinstance(init, dict):
        seen = init.get("datasets_seen", 0)
        seen_s = f"{seen:,}" if isinstance(seen, int) else "?"
        grown = growth(init.get("grown"))
        lines.append(
            f"{init.get('checkpoint')} ({init.get('step')} steps, {seen_s} datasets of prior "
            f"{init.get('prior')!r}{', ' + grown if grown else ''})"
        )
        init = init.get("init_from")
    return lines


def bundled_checkpoint_path(filename: str, what: str) -> Path:
    """Path of a checkpoint shipped inside the package (``pfnkit/checkpoints/``)."""
    from importlib import resources

    path = Path(str(resources.files("pfnkit") / "checkpoints" / filename))
    if not path.is_file():
        raise CheckpointError(
            f"The bundled {what} checkpoint ({path.name}) is missing from this installation; "
            "reinstall pfnkit or pass checkpoint='path/to/run_or_file'."
        )
    return path


def load_frozen(path: str | Path, device: str = "cpu") -> Any:
    """A PFN for inference (no gradients), cached per file, modification time and device:
    a retrained run is reloaded, repeated estimators share one copy."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"The 'checkpoint' parameter points to '{path}', which does not exist. "
            "Pass 'default', a run directory, or a .pt / .safetensors file."
        )
    return _load_frozen(str(p.resolve()), resolve_path(p).stat().st_mtime, device)


@functools.lru_cache(maxsize=8)
def _load_frozen(path: str, mtime: float, device: str) -> Any:
    model = load_checkpoint(path, device=device)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


# ---------------------------------------------------------------- typed loading

KINDS = ("classifier", "regressor", "learning-curves", "freeze-thaw", "treatment-effect")
_PRIOR_KINDS = {
    "learning_curve": "learning-curves",
    "freeze_thaw": "freeze-thaw",
    "causal": "treatment-effect",
}
_KIND_USE = {
    "classifier": "PFNClassifier",
    "regressor": "PFNRegressor",
    "learning-curves": "pfnkit.curves.CurveExtrapolator",
    "freeze-thaw": "pfnkit.hpo.FreezeThaw / FreezeThawSurrogate",
    "treatment-effect": "PFNTreatmentEffect",
}


@dataclasses.dataclass(frozen=True)
class PFNCard:
    """What a consumer needs to know about a checkpoint, typed.

    Attributes:
        kind: one of ``KINDS``: what the network was trained to do; None for a model built
            in memory without a prior recipe (then only its head's task is checked).
        task: "classification" or "regression" (the head).
        prior: the prior recipe (a dict; empty for a model built in memory).
        train: the training config (a dict; empty for a model built in memory).
        context_limit: the most context rows the network saw in training (None: unknown).
        calibration: what ``pfnkit calibrate`` stored (empty when never calibrated):
            ``softmax_temperature`` for classifiers, interval scales for treatment effects.
    """

    kind: str | None
    task: str
    prior: dict[str, Any]
    train: dict[str, Any]
    context_limit: int | None
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, model: Any) -> PFNCard:
        """The typed card of a PFN (from its ``card`` when it was loaded from a file)."""
        raw = getattr(model, "card", None)
        raw = raw if isinstance(raw, dict) else {}
        prior: dict[str, Any] = raw["prior"] if isinstance(raw.get("prior"), dict) else {}
        train: dict[str, Any] = (
            raw["train_config"] if isinstance(raw.get("train_config"), dict) else {}
        )
        task = str(model.config.task)
        cal = raw.get("calibration")
        return cls(
            kind=kind_of(prior, task) if prior else None,
            task=task,
            prior=dict(prior),
            train=dict(train),
            context_limit=context_limit(train) if train else None,
            calibration=dict(cal) if isinstance(cal, dict) else {},
        )


def kind_of(prior: dict[str, Any], task: str) -> str:
    """A checkpoint's kind from its prior recipe and head."""
    name = str(prior.get("name", ""))
    if name in _PRIOR_KINDS:
        return _PRIOR_KINDS[name]
    return "classifier" if task == "classification" else "regressor"


def context_limit(train: dict[str, Any]) -> int:
    """The most context rows a network was trained on: the one formula (TrainConfig's)."""
    from pfnkit.train.config import TrainConfig, default_max_context

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig.from_dict({k: v for k, v in train.items() if k in known}).context_range[
            1
        ]
    except Exception:  # an old or hand-edited card: fall back to the default rule
        rows = int(train.get("rows", 256))
        return int(train.get("max_context") or default_max_context(rows))


def load_pfn(
    checkpoint: Any, *, expect: str | tuple[str, ...], device: str = "cpu", what: str = ""
) -> tuple[Any, PFNCard]:
    """The one loader for consumers: a frozen PFN of the expected kind and its typed card.

    Args:
        checkpoint: a path (run directory, .pt or .safetensors) or an already built PFN.
        expect: the kind(s) the consumer can use (see ``KINDS``).
        device: where to put the model.
        what: the consumer's name, for the error message.

    Raises:
        CheckpointError: the checkpoint is of another kind, naming both and the consumer
            that fits it.
    """
    from pfnkit.model import PFN

    kinds = (expect,) if isinstance(expect, str) else tuple(expect)
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"expect must be among {KINDS}. Got {k!r}.")
    if isinstance(checkpoint, PFN):
        model = checkpoint.to(device).eval()
    else:
        model = load_frozen(Path(os.fspath(checkpoint)), device)
    card = PFNCard.of(model)
    tasks = {"classification" if k == "classifier" else "regression" for k in kinds}
    if card.kind is None and card.task not in tasks:
        raise CheckpointError(
            f"The checkpoint is a {card.task} PFN; {what or _KIND_USE[kinds[0]]} needs a "
            f"{' or '.join(sorted(tasks))} one."
        )
    if card.kind is not None and card.kind not in kinds:
        user = what or _KIND_USE[kinds[0]]
        raise CheckpointError(
            f"The checkpoint is a {card.kind} checkpoint (prior {card.prior.get('name', '?')!r}, "
            f"a {card.task} PFN); {user} needs a {' or '.join(kinds)} one. Use it with "
            f"{_KIND_USE[card.kind]}, or pass a checkpoint of the right kind."
        )
    return model, card
