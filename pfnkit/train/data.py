"""Training batches: the one sampling rule, and worker processes that draw batches ahead.

Micro-batch ``k`` (``step * accumulate + micro``) is a pure function of (seed, k, rank),
whichever process draws it: a run with data workers trains on exactly the batches of a run
without them, and resumes exactly. Worker ``w`` of ``W`` draws k = start + w, start + w + W,
... and sends each batch down its own pipe: a small pickled header, then the arrays' raw bytes,
read straight into fresh arrays (not torch's shared-memory tensors: containers often cap
/dev/shm at 64 MB). The loop reads the pipes in turn. Workers are forked, like torch's
DataLoader on Linux, and never touch CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import multiprocessing as mp
import os
import pickle
import signal
import traceback
from typing import Any

import numpy as np
import torch

from pfnkit.exceptions import PfnkitError
from pfnkit.priors import BatchShape, step_generator
from pfnkit.train.config import TrainConfig


def sample_indexed(prior: Any, tc: TrainConfig, n_features: int, rank: int, k: int) -> Any:
    """Micro-batch ``k`` of ``rank``: its shape, context size and data drawn from one
    generator. With ``tc.small_share`` > 0 it is a small table (``tc.small_table_rows`` rows, at
    most ``tc.small_features`` features, zero-padded to ``n_features``) at that rate."""
    gen = step_generator(tc.seed, k, rank)
    rows, (lo, hi), width = tc.rows, tc.context_range, n_features
    # no draw when small tables are off: runs without them keep their exact data stream
    if tc.small_share > 0 and float(torch.rand((), generator=gen)) < tc.small_share:
        rows, (lo, hi) = tc.small_table_rows, tc.small_context_range
        width = min(n_features, tc.small_features or n_features)
    sep = int(torch.randint(lo, hi + 1, (1,), generator=gen))
    batch = prior.sample(BatchShape(tc.batch_size, rows, width, sep), generator=gen)
    return pad_features(batch, n_features) if width < n_features else batch


def pad_features(batch: Any, n_features: int) -> Any:
    """A batch of f < n_features features, zero-padded to n_features (the padding is unused:
    ``batch.n_features`` stays <= f), with its ``categorical`` mask (B, f) padded to match."""
    b, _, f = batch.x.shape
    batch.x = torch.nn.functional.pad(batch.x, (0, n_features - f))
    if batch.n_features is None:
        batch.n_features = torch.full((b,), f, dtype=torch.int64)
    mask = batch.extras.get("categorical")
    if mask is not None and mask.shape == (b, f):
        batch.extras["categorical"] = torch.nn.functional.pad(mask, (0, n_features - f))
    return batch


def _pack(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, torch.Tensor):
        a = np.ascontiguousarray(value.numpy())
        arrays.append(a)
        return ("array", a.dtype.str, a.shape)
    if isinstance(value, dict):
        return ("dict", {k: _pack(v, arrays) for k, v in value.items()})
    return ("raw", value)


def _unpack(meta: Any, read: Any) -> Any:
    kind = meta[0]
    if kind == "array":
        a = np.empty(meta[2], dtype=np.dtype(meta[1]))
        read(a.data.cast("B"))
        return torch.from_numpy(a)
    if kind == "dict":
        return {k: _unpack(v, read) for k, v in meta[1].items()}
    return meta[1]


def write_batch(fd: int, batch: Any) -> None:
    """Send a batch down a pipe: a pickled header (class, fields, array shapes), then the
    arrays' raw bytes (no pickle copy of the data)."""
    arrays: list[np.ndarray] = []
    meta = (
        type(batch),
        {f.name: _pack(getattr(batch, f.name), arrays) for f in dataclasses.fields(batch)},
    )
    _write_frame(fd, ("ok", meta))
    for a in arrays:
        _write_all(fd, a.data.cast("B"))


def _write_frame(fd: int, obj: Any) -> None:
    head = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, memoryview(len(head).to_bytes(8, "little") + head))


def _write_all(fd: int, view: memoryview) -> None:
    while view.nbytes:
        view = view[os.write(fd, view) :]


class _Reader:
    def __init__(self, fd: int) -> None:
        self.file = io.FileIO(fd, "rb", closefd=True)

    def read_into(self, view: memoryview) -> None:
        while view.nbytes:
            n = self.file.readinto(view)
            if not n:
                raise EOFError
            view = view[n:]

    def read_frame(self) -> Any:
        size = bytearray(8)
        self.read_into(memoryview(size))
        head = bytearray(int.from_bytes(size, "little"))
        self.read_into(memoryview(head))
        return pickle.loads(head)

    def read_batch(self) -> tuple[str, Any]:
        status, meta = self.read_frame()
        if status != "ok":
            return status, meta
        cls, fields = meta
        return status, cls(**{k: _unpack(v, self.read_into) for k, v in fields.items()})


def _worker(
    prior: Any, tc: TrainConfig, n_features: int, rank: int, start: int, stride: int, fd: int
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the loop handles Ctrl-C and stops us
    torch.set_num_threads(1)
    try:  # one BLAS thread per worker: the workers are the parallelism
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    k = start
    try:
        while True:
            write_batch(fd, sample_indexed(prior, tc, n_features, rank, k))
            k += stride
    except BrokenPipeError:  # the loop closed its end: done
        return
    except Exception:
        _write_frame(fd, ("error", f"batch {k}:\n{traceback.format_exc()}"))


class BatchFeeder:
    """``workers`` processes drawing micro-batches start, start + 1, ... in order.

    Args:
        prior: the data source (its ``sample`` runs in the workers).
        tc: the training config (batch shape, seed, context range).
        n_features: the model's feature count.
        rank: the DDP rank (part of every batch's seed).
        start: the first micro-batch index to deliver.
        workers: number of worker processes (>= 1).
    """

    def __init__(
        self, prior: Any, tc: TrainConfig, n_features: int, rank: int, start: int, workers: int
    ) -> None:
        ctx = mp.get_context("fork")
        self.start, self.workers, self.next = start, workers, start
        self.readers: list[_Reader] = []
        self.procs: list[Any] = []
        for w in range(workers):
            r, wr = os.pipe()
            with contextlib.suppress(OSError):  # a larger pipe: fewer switches per batch
                fcntl.fcntl(wr, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
            proc = ctx.Process(
                target=_worker,
                args=(prior, tc, n_features, rank, start + w, workers, wr),
                daemon=True,
                name=f"pfnkit-data-{w}",
            )
            proc.start()
            os.close(wr)  # the worker holds the write end: its exit is our end of file
            self.readers.append(_Reader(r))
            self.procs.append(proc)

    def get(self, k: int) -> Any:
        """Micro-batch ``k`` (the indices must be asked for in order)."""
        if k != self.next:
            raise RuntimeError(f"BatchFeeder delivers batch {self.next} next, not {k}")
        w = (k - self.start) % self.workers
        try:
            status, payload = self.readers[w].read_batch()
        except EOFError:
            proc = self.procs[w]
            proc.join(timeout=5.0)
            raise PfnkitError(
                f"Data worker {w} died (exit code {proc.exitcode}) before sending batch {k}, "
                "perhaps killed for memory; lower data_workers (--data-workers) or batch_size."
            ) from None
        if status == "error":
            raise PfnkitError(f"Data worker {w} failed sampling {payload}")
        self.next += 1
        return payload

    def close(self) -> None:
        for reader in self.readers:
            reader.file.close()  # a worker blocked on writing gets a broken pipe
        for p in self.procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
        self.readers, self.procs = [], []
