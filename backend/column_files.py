"""Score and dataset columns kept as Arrow IPC files in the data directory, so a restarted server (or a second
API process) serves the plane without reading every score's JSON again (~2 s per column at 1M on SQLite). The
queue writes a run's files once the run is done (:mod:`backend.queue.columns`); a reader that finds none (a
run still scoring, a file lost) loads the column from SQL and writes it.

SQL stays the source of truth; a file is a cache of one column at one *stamp* (the space store's: a run's
status, progress and updated_at; a dataset's size and creation time). A file is served only when everything
it says about itself matches what is asked for: format version, kind, run or dataset id, metric, stamp, row
count and a CRC-32 of its buffers. Anything else (a missing, stale, truncated, foreign or garbled file) reads
as "no file": the caller loads the column from SQL and writes the file again, atomically (a temporary file in
the same folder, then ``os.replace``), so a reader never sees half a file.

Layout under the root (``DATA_DIR/columns``), one folder per dataset so deleting a dataset is one rmtree:

    <dataset id>/dataset.arrow                     sorted sample ids (int32), task-type codes (int8)
    <dataset id>/runs/<run id>/<metric hash>.arrow  sorted sample ids (int32), values (float64)

Files are read into memory rather than memory-mapped: a mapping of a file that something truncates in place
(a copy, an editor, a test) kills the process with SIGBUS when a cached array is touched, and reading 12 MB
from the page cache costs a few milliseconds. The arrays are views of that one read buffer, not copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

FORMAT = 1
META_KEY = b"qspace"  # the schema metadata key carrying the file's description

log = logging.getLogger(__name__)

IdArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int8]
ColumnArrays = tuple[IdArray, FloatArray]
DatasetArrays = tuple[IdArray, CodeArray, list[str]]


class ColumnFiles:
    """The column files under ``root``; every method is safe to call from several threads and processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.reads = 0  # files served, and columns loaded through `load` (tests and benchmarks count them)
        self.loads = 0

    # -- paths ---------------------------------------------------------------------------------
    def dataset_dir(self, dataset_id: int) -> Path:
        return self.root / str(int(dataset_id))

    def dataset_path(self, dataset_id: int) -> Path:
        return self.dataset_dir(dataset_id) / "dataset.arrow"

    def run_dir(self, dataset_id: int, run_id: int) -> Path:
        return self.dataset_dir(dataset_id) / "runs" / str(int(run_id))

    def column_path(self, dataset_id: int, run_id: int, metric: str) -> Path:
        # Metric names are free text (a JSON key): the file name is a digest, the name itself is checked inside.
        digest = hashlib.sha1(metric.encode()).hexdigest()[:16]
        return self.run_dir(dataset_id, run_id) / f"{digest}.arrow"

    # -- columns -------------------------------------------------------------------------------
    def column(
        self, dataset_id: int, run_id: int, metric: str, stamp: Sequence[Any], load: Callable[[], ColumnArrays]
    ) -> ColumnArrays:
        """The run's metric column at `stamp`: from its file when that matches, else `load()` (then written)."""
        path = self.column_path(dataset_id, run_id, metric)
        want = {"kind": "column", "dataset_id": int(dataset_id), "run_id": int(run_id), "metric": metric}
        got = _read(path, want, _stamp(stamp), (pa.int32(), pa.float64()))
        if got is not None:
            self.reads += 1
            ids, values = got[0]
            return ids, values
        self.loads += 1
        ids, values = load()
        self.put_column(dataset_id, run_id, metric, stamp, ids, values)
        return ids, values

    def put_column(
        self, dataset_id: int, run_id: int, metric: str, stamp: Sequence[Any], ids: IdArray, values: FloatArray
    ) -> None:
        """Keep the run's metric column at `stamp` (the queue's writer does, once a run is done)."""
        want = {"kind": "column", "dataset_id": int(dataset_id), "run_id": int(run_id), "metric": metric}
        cols: dict[str, np.ndarray] = {"id": ids.astype(np.int32, copy=False)}
        cols["value"] = values.astype(np.float64, copy=False)
        _write(self.column_path(dataset_id, run_id, metric), want, _stamp(stamp), cols)

    def dataset(self, dataset_id: int, stamp: Sequence[Any], load: Callable[[], DatasetArrays]) -> DatasetArrays:
        """The dataset's sample ids, task-type codes and names at `stamp`: from the file, else `load()`."""
        path = self.dataset_path(dataset_id)
        want: dict[str, Any] = {"kind": "dataset", "dataset_id": int(dataset_id)}
        got = _read(path, want, _stamp(stamp), (pa.int32(), pa.int8()))
        if got is not None and isinstance(got[1].get("task_types"), list):
            self.reads += 1
            (ids, codes), meta = got
            return ids, codes, [str(t) for t in meta["task_types"]]
        self.loads += 1
        ids, codes, names = load()
        cols: dict[str, np.ndarray] = {"id": ids.astype(np.int32), "task_code": codes.astype(np.int8)}
        _write(path, {**want, "task_types": list(names)}, _stamp(stamp), cols)
        return ids, codes, names

    def facts(self, dataset_id: int, name: str, stamp: Sequence[Any], load: Callable[[], Any]) -> Any:
        """A small JSON value computed over the whole dataset (its metadata fields and their counts: a scan of
        every sample's JSON, ~5 s at 10M), kept as ``<dataset id>/<name>.json`` at `stamp`; else `load()`."""
        path = self.dataset_dir(dataset_id) / f"{_safe(name)}.json"
        want = {"kind": "facts", "dataset_id": int(dataset_id), "name": name, "format": FORMAT, "stamp": _stamp(stamp)}
        try:
            kept = orjson.loads(path.read_bytes())
            if isinstance(kept, dict) and all(kept.get(k) == v for k, v in want.items()) and "value" in kept:
                digest = hashlib.sha1(orjson.dumps(kept["value"], option=orjson.OPT_SORT_KEYS)).hexdigest()
                if kept.get("sha1") == digest:
                    self.reads += 1
                    return kept["value"]
        except (OSError, orjson.JSONDecodeError):
            pass  # missing or garbled: made again below
        self.loads += 1
        value = load()
        digest = hashlib.sha1(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
        _write_bytes(path, orjson.dumps({**want, "value": value, "sha1": digest}))
        return value

    # -- deletion ------------------------------------------------------------------------------
    def delete_run(self, dataset_id: int, run_id: int) -> None:
        shutil.rmtree(self.run_dir(dataset_id, run_id), ignore_errors=True)

    def delete_dataset(self, dataset_id: int) -> None:
        shutil.rmtree(self.dataset_dir(dataset_id), ignore_errors=True)


def columns_root(data_dir: Path) -> Path:
    return Path(data_dir) / "columns"


def delete_run_columns(data_dir: Path, dataset_id: int, run_id: int) -> None:
    """Remove a deleted run's column files (whether or not this process persists columns)."""
    ColumnFiles(columns_root(data_dir)).delete_run(dataset_id, run_id)


def delete_dataset_columns(data_dir: Path, dataset_id: int) -> None:
    """Remove a deleted dataset's column files, its runs' included."""
    ColumnFiles(columns_root(data_dir)).delete_dataset(dataset_id)


# ----------------------------------------------------------------------------------------------
# The file format: an Arrow IPC file (uncompressed, so memory-mappable by other readers) whose schema
# metadata describes it; the CRC covers the value buffers, the metadata the rest.
# ----------------------------------------------------------------------------------------------


def _stamp(stamp: Sequence[Any]) -> str:
    return orjson.dumps(list(stamp), default=str).decode()


def _crc(arrays: Sequence[np.ndarray]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).data.cast("B"), crc)
    return crc


def arrow_array(values: np.ndarray) -> pa.Array:
    """A numeric numpy array as an Arrow array, zero-copy: pa.array() imports pandas (0.4 s on a cold start)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _numpy(array: pa.Array, data: bytearray, base: int) -> np.ndarray:
    """A null-free fixed-width column as a writable array over `data`, the file's bytes (at address `base`): no
    copy, which at 10M points saves ~0.2 s per column of fresh pages. Straight from the data buffer:
    Array.to_numpy imports pandas."""
    if array.null_count:
        raise ValueError("a column file holds nulls")
    dtype = np.dtype(array.type.to_pandas_dtype())
    buf = array.buffers()[1]
    offset = buf.address - base + array.offset * dtype.itemsize
    if offset < 0 or offset + len(array) * dtype.itemsize > len(data):
        raise ValueError("a column's buffer lies outside the file")
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=offset)


def _read_file(path: Path) -> bytearray:
    """The file's bytes in a writable buffer the arrays can share (read_bytes' would be read-only)."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        data = bytearray(size)
        view = memoryview(data)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break  # truncated while read: the row count or the CRC below rejects it
            got += n
    return data if got == size else data[:got]


def _read(
    path: Path, want: dict[str, Any], stamp: str, types: tuple[pa.DataType, ...]
) -> tuple[list[np.ndarray], dict[str, Any]] | None:
    """The file's columns and description when it is intact and is what `want` and `stamp` describe; else None."""
    try:
        data = _read_file(path)
    except OSError:
        return None
    try:
        whole = pa.py_buffer(data)
        reader = pa.ipc.open_file(whole)
        meta = orjson.loads((reader.schema.metadata or {})[META_KEY])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("stamp") != stamp:
            return None
        if any(meta.get(k) != v for k, v in want.items()):
            return None
        if [f.type for f in reader.schema] != list(types) or reader.num_record_batches != 1:
            return None
        batch = reader.get_batch(0)
        if batch.num_rows != meta.get("rows"):
            return None
        arrays = [_numpy(c, data, whole.address) for c in batch.columns]
        if _crc(arrays) != meta.get("crc32"):
            return None
        return arrays, meta
    except Exception as exc:  # a garbled file can raise anything from the Arrow reader: it is no file
        log.info("column file %s is unreadable (%s); reloading from the database", path, exc)
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_bytes(path: Path, data: bytes) -> None:
    """`data` to `path` atomically; a failure is logged (the caller has its value either way)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _write(path: Path, describe: dict[str, Any], stamp: str, cols: dict[str, np.ndarray]) -> None:
    """Write the file atomically; a failure (read-only or full disk) is logged, the database still serves."""
    arrays = list(cols.values())
    rows = len(arrays[0]) if arrays else 0
    meta = {**describe, "format": FORMAT, "stamp": stamp, "rows": rows, "crc32": _crc(arrays)}
    table = pa.table({k: arrow_array(v) for k, v in cols.items()})
    table = table.replace_schema_metadata({META_KEY: orjson.dumps(meta)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(len(table), 1))
        os.replace(tmp, path)
    except Exception as exc:  # a cache that cannot be written must never fail the request that reads it
        log.warning("could not write column file %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
