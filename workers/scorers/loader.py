"""The loader: samples prepared (images decoded, preprocessed) ahead of the model in kept worker processes.

The workers are forked once per loader, on first use, and kept for every later window and call, so a
scorer that runs window after window (a queue worker scoring chunk after chunk) pays the fork once. A
batch is cut into pieces so that every worker works on the first batch; pieces come back in order.

A worker that dies (killed, out of memory) loses nothing: its pieces are prepared again one sample per
job in fresh workers, and a sample that kills a worker alone gets an error row.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

R = TypeVar("R")
P = TypeVar("P")

WORKER_DIED = "the loader process preparing this sample died (killed, or out of memory)"


@dataclass
class Failed:
    """A sample whose preparation failed (travels through the loader like a prepared sample)."""

    sample_id: int
    error: str


def sample_id_of(rec: Any) -> int:
    return int(rec.sample_id if hasattr(rec, "sample_id") else rec.item.sample_id)


def preprocess_error(e: Exception) -> str:
    """The error row's reason for an unexpected exception while preparing a sample."""
    return f"preprocess failed: {type(e).__name__}: {e}"[:300]


def safe_piece(prepare_piece: Callable[[list[R]], list[Any]], piece: list[R]) -> list[Any]:
    """``prepare_piece(piece)``, or a :class:`Failed` per record if it raises."""
    try:
        out = prepare_piece(piece)
    except Exception as e:  # a bug on one piece must not fail the window
        reason = preprocess_error(e)
        return [Failed(sample_id_of(r), reason) for r in piece]
    if len(out) != len(piece):
        raise RuntimeError(f"prepare returned {len(out)} results for {len(piece)} samples")
    return out


# --- packing a piece for the trip back --------------------------------------------------------------

BIG_TENSOR = 1 << 16  # bytes: from here a tensor rides in the piece's shared-memory arena


@dataclass
class Packed:
    """A prepared piece on its way out of a worker: the pickle of the piece, in which small tensors are
    numpy arrays (by value) and large ones name a slice of ``arena``, one shared-memory block per piece.

    multiprocessing's own pickler (with torch's reductions) moves each tensor through its own shared-memory
    segment and file descriptor, ~0.5 ms a tensor in the receiving process: more than decoding a small image.
    By value, a large tensor costs several copies through the pipe (a 336 px float32 image is 1.4 MB), so
    large ones share one segment per piece instead.
    """

    data: bytes
    arena: torch.Tensor | None  # uint8, in shared memory (it travels as one file descriptor)
    slots: list[tuple[int, int, torch.dtype, tuple[int, ...]]]  # offset, bytes, dtype, shape


class _PiecePickler(pickle.Pickler):
    def __init__(self, buf: io.BytesIO) -> None:
        super().__init__(buf, protocol=pickle.HIGHEST_PROTOCOL)
        self.big: list[torch.Tensor] = []

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is torch.Tensor and obj.device.type == "cpu" and obj.nbytes >= BIG_TENSOR:
            self.big.append(obj)
            return len(self.big) - 1
        return None

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is torch.Tensor and obj.device.type == "cpu" and obj.dtype in _NUMPY_DTYPES:
            return torch.from_numpy, (obj.detach().numpy(),)
        return NotImplemented


class _PieceUnpickler(pickle.Unpickler):
    def __init__(self, packed: Packed) -> None:
        super().__init__(io.BytesIO(packed.data))
        self.packed = packed

    def persistent_load(self, pid: Any) -> torch.Tensor:
        offset, nbytes, dtype, shape = self.packed.slots[int(pid)]
        assert self.packed.arena is not None
        return self.packed.arena[offset : offset + nbytes].view(dtype).view(shape)


_NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.uint8, torch.int8, torch.int16,
                           torch.int32, torch.int64, torch.bool})


def pack(obj: Any) -> Packed:
    buf = io.BytesIO()
    pickler = _PiecePickler(buf)
    pickler.dump(obj)
    slots: list[tuple[int, int, torch.dtype, tuple[int, ...]]] = []
    end = 0
    for t in pickler.big:
        slots.append((end, t.nbytes, t.dtype, tuple(t.shape)))
        end += -(-t.nbytes // 64) * 64  # aligned for any dtype's view
    arena = None
    if pickler.big:
        # allocated in shared memory (share_memory_() on a new tensor would copy it there once more)
        arena = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(end))
        for (offset, nbytes, _, _), t in zip(slots, pickler.big, strict=True):
            arena[offset : offset + nbytes].copy_(t.detach().contiguous().reshape(-1).view(torch.uint8))
    return Packed(buf.getvalue(), arena, slots)


def unpack(packed: Packed) -> Any:
    return _PieceUnpickler(packed).load()


# --- in the worker processes ------------------------------------------------------------------------

_WORKER_PREPARE: Callable[[list[Any]], list[Any]] | None = None


def _worker_init(prepare_piece: Callable[[list[Any]], list[Any]], parent: int,
                 inherited: list[tuple[int, int, int]]) -> None:
    """Runs first in each forked worker: the inherited descriptors let go, one torch thread (the model
    owns the cores), the prepare function inherited through the fork (never pickled: it belongs to a
    model-holding scorer), and a watchdog that ends the worker when its parent is gone."""
    global _WORKER_PREPARE
    release_fds(inherited)
    _WORKER_PREPARE = prepare_piece
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is always there in the workers
        pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="qspace-loader-watchdog", daemon=True).start()


def open_fds() -> list[tuple[int, int, int]]:
    """(descriptor, device, inode) of what this process has open ([] where there is no /proc)."""
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            st = os.fstat(fd)
        except OSError:  # the one listdir itself had open
            continue
        out.append((fd, st.st_dev, st.st_ino))
    return out


def release_fds(fds: list[tuple[int, int, int]]) -> None:
    """Point each (descriptor, device, inode) of ``fds`` at /dev/null if the descriptor is still that
    file: a number closed since and reused (a process sentinel made at the fork) is left alone. Re-pointed
    rather than closed, so that no number is reused under an inherited Python object that may close it."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd, dev, ino in fds:
        if fd <= 2 or fd == null:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)


def _worker_run(piece: list[Any]) -> Packed:
    assert _WORKER_PREPARE is not None
    return pack(safe_piece(_WORKER_PREPARE, piece))


# --- in the scoring process -------------------------------------------------------------------------


class Loader(Generic[R, P]):
    """``prepare_piece`` over pieces of batches, in ``num_workers`` kept processes (0: in this process).

    ``prepare_piece`` takes a list of records and returns one prepared value or :class:`Failed` per record,
    in order. Workers are forked where the platform can, so it needs no pickling; they never touch a GPU.
    """

    def __init__(self, prepare_piece: Callable[[list[R]], list[P | Failed]], num_workers: int,
                 piece: int = 32, prefetch: int = 4) -> None:
        self.prepare_piece = prepare_piece
        self.num_workers = max(0, num_workers)
        self.piece = piece
        self.prefetch = prefetch  # pieces in flight per worker: hides decoding, bounds memory
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.restarts = 0

    # -- the pool
    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            # What the workers let go of: every descriptor open here before they fork (at the first submit),
            # but the two pipes they read calls from and write results to. A kept worker would otherwise
            # hold, for its whole life, the write end of a pipe whose reader then never sees end-of-file (a
            # subprocess's stdin: Playwright's driver never exited), a listening socket, a database file.
            # Descriptors made at the fork itself (the process sentinels) are not in the list.
            inherited: list[tuple[int, int, int]] = []
            self._pool = ProcessPoolExecutor(
                self.num_workers, mp_context=ctx, initializer=_worker_init,
                initargs=(self.prepare_piece, os.getpid(), inherited),
            )
            try:
                needed = {self._pool._call_queue._reader.fileno(),  # type: ignore[attr-defined]
                          self._pool._result_queue._writer.fileno()}  # type: ignore[attr-defined]
                inherited += [f for f in open_fds() if f[0] > 2 and f[0] not in needed]
            except AttributeError:  # another Python's executor: let go of nothing rather than of those
                pass
            self._finalizer = weakref.finalize(self, _shutdown, self._pool)
        return self._pool

    def _restart(self) -> None:
        self.close()
        self.restarts += 1

    def close(self) -> None:
        """Stop the worker processes (a later batch starts new ones)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool, self._finalizer = None, None

    # -- batches
    def batches(self, records: Sequence[R], batches: Sequence[Sequence[int]]) -> Iterator[list[P | Failed]]:
        """``prepare_piece([records[i] for i in batch])`` for each batch, computed ahead in the workers."""
        if self.num_workers <= 0 or not batches:
            for b in batches:
                yield safe_piece(self.prepare_piece, [records[i] for i in b])
            return
        size = max(1, min(self.piece, -(-max(len(b) for b in batches) // self.num_workers)))
        pieces: deque[tuple[int, list[R]]] = deque()
        for k, b in enumerate(batches):
            for i in range(0, len(b), size):
                pieces.append((k, [records[j] for j in b[i : i + size]]))
        flight: deque[tuple[int, list[R], Future[Packed]]] = deque()
        current: list[P | Failed] = []
        k_now = 0
        while pieces or flight:
            while pieces and len(flight) < self.num_workers * self.prefetch:
                k, piece = pieces.popleft()
                flight.append((k, piece, self._submit(piece)))
            k, piece, future = flight.popleft()
            try:
                part = unpack(future.result())
            except BrokenProcessPool:
                # Every piece in flight is lost with the pool: redo them one sample per job.
                redo = [(k, piece)] + [(k2, p2) for k2, p2, _ in flight]
                flight.clear()
                self._restart()
                done = [(k2, self._isolated(p2)) for k2, p2 in redo]
                for k2, part2 in done:
                    if k2 != k_now:
                        yield current
                        current, k_now = [], k2
                    current += part2
                continue
            if k != k_now:
                yield current
                current, k_now = [], k
            current += part
        yield current

    def _submit(self, piece: list[R]) -> Future[Packed]:
        try:
            return self._executor().submit(_worker_run, piece)
        except BrokenProcessPool:  # broke between pieces: start again
            self._restart()
            return self._executor().submit(_worker_run, piece)

    def _isolated(self, piece: list[R]) -> list[Any]:
        """Each record of ``piece`` alone in the workers; one whose job kills its worker gets an error row."""
        futures = [(r, self._submit([r])) for r in piece]
        out: list[Any] = []
        for r, f in futures:
            try:
                out += unpack(f.result())
                continue
            except BrokenProcessPool:
                self._restart()
            try:  # alone in a fresh pool: if it breaks again, this sample is the cause
                out += unpack(self._submit([r]).result())
            except BrokenProcessPool:
                self._restart()
                out.append(Failed(sample_id_of(r), WORKER_DIED))
        return out


def _shutdown(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
