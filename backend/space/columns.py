"""Score, dataset and metadata columns, loaded once and cached per process (the space store).

Columns are cached in memory keyed by a *stamp* of the runs they come from (status, progress, score
count), read from the store on every request, so a cache entry dies the moment a worker (in any
process) writes scores for that run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from backend.column_files import ColumnFiles
from backend.datasets import NotFound
from backend.db import is_postgres, raw_blocks, raw_rows
from backend.models import Dataset, Run, Score
from backend.queue.columns import run_stamp
from backend.regions.arrays import unique_sorted
from backend.space import transforms
from backend.space.axes import Axis, AxisError
from backend.space.cache import LRU

MAX_TASK_TYPES = 127  # int8 codes; the 128th and later share the last code
METADATA_SCAN_ROWS = 2000  # samples read to find a dataset's metadata fields

IdArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DatasetColumns:
    ids: IdArray  # sorted sample ids
    task_codes: npt.NDArray[np.int8]
    task_types: list[str]


@dataclass(frozen=True)
class Column:
    ids: IdArray  # sorted sample ids that have a finite value
    values: FloatArray


@dataclass(frozen=True)
class Space:
    ids: IdArray
    x: FloatArray
    y: FloatArray
    task_codes: npt.NDArray[np.int8]
    task_types: list[str]
    key: tuple[Any, ...] = ()  # the cache key: stamps of the dataset and both runs


class SpaceStore:
    """Loads and caches dataset, metric and metadata columns for one process."""

    def __init__(
        self, engine: Engine, size: int = 64, files: ColumnFiles | None = None, max_bytes: int | None = None
    ) -> None:
        self.engine = engine
        self.cache = LRU(size, max_bytes)
        self.files = files  # column files in the data directory (None: SQL only)

    # -- stamps --------------------------------------------------------------------------------
    def dataset_stamp(self, session: Session, dataset_id: int) -> tuple[Any, ...]:
        """What identifies the dataset's current content (404 if it is gone)."""
        return self._dataset_stamp(session, dataset_id)

    def _dataset_stamp(self, session: Session, dataset_id: int) -> tuple[Any, ...]:
        ds = session.get(Dataset, dataset_id)
        if ds is None:
            raise NotFound(f"dataset {dataset_id} not found")
        return (dataset_id, ds.n_samples, str(ds.created_at))

    def _run_stamp(self, session: Session, run_id: int) -> tuple[Any, ...]:
        stamp = run_stamp(session, run_id)  # the queue keys the column files it writes by the same stamp
        if stamp is None:
            raise AxisError(f"run {run_id} no longer exists")
        return stamp

    # -- columns -------------------------------------------------------------------------------
    def dataset_columns(self, session: Session, dataset_id: int) -> DatasetColumns:
        stamp = self._dataset_stamp(session, dataset_id)
        return self.cache.get_or_make(("ds", stamp), lambda: self._stored_dataset(session, dataset_id, stamp))

    def _stored_dataset(self, session: Session, dataset_id: int, stamp: tuple[Any, ...]) -> DatasetColumns:
        """The dataset's columns from their file when it matches `stamp`, else from SQL (then kept as a file)."""
        if self.files is None:
            return self._load_dataset(session, dataset_id)

        def load() -> tuple[IdArray, npt.NDArray[np.int8], list[str]]:
            d = self._load_dataset(session, dataset_id)
            return d.ids, d.task_codes, d.task_types

        return DatasetColumns(*self.files.dataset(dataset_id, stamp, load))

    def _load_dataset(self, session: Session, dataset_id: int) -> DatasetColumns:
        # In blocks: at 10M samples a list of (id, task type) rows would hold ~1.5 GB of Python objects.
        id_parts: list[IdArray] = []
        code_parts: list[npt.NDArray[np.int32]] = []
        seen: dict[str, int] = {}  # task type -> code in order of first appearance
        sql = "SELECT id, task_type FROM samples WHERE dataset_id = {p} ORDER BY id"
        for rows in raw_blocks(session, sql, (dataset_id,)):
            id_parts.append(np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)))
            codes = (seen.setdefault(r[1], len(seen)) for r in rows)
            code_parts.append(np.fromiter(codes, dtype=np.int32, count=len(rows)))
        ids = np.concatenate(id_parts) if id_parts else np.empty(0, dtype=np.int32)
        first_seen = np.concatenate(code_parts) if code_parts else np.empty(0, dtype=np.int32)
        names = sorted(seen)
        if len(names) > MAX_TASK_TYPES:
            names = [*names[: MAX_TASK_TYPES - 1], "other"]
        code = {n: i for i, n in enumerate(names)}
        last = len(names) - 1
        remap = np.array([code.get(t, last) for t in seen], dtype=np.int8)  # first-seen code -> sorted code
        return DatasetColumns(ids, remap[first_seen] if len(seen) else first_seen.astype(np.int8), names)

    def column(self, session: Session, axis: Axis, stamp: tuple[Any, ...] | None = None) -> Column:
        """The axis's values (transformed when it names transforms), for the samples that have one."""
        stamp = stamp or self._run_stamp(session, axis.run_id)
        if not axis.transforms:
            key0 = ("col", stamp, axis.metric)
            return self.cache.get_or_make(key0, lambda: self._stored_column(session, axis, stamp))
        raw = self.column(session, axis.raw, stamp)
        if not transforms.needs_task_types(axis.transforms):
            key: tuple[Any, ...] = ("col", stamp, axis.metric, axis.transforms)
            return self.cache.get_or_make(key, lambda: _transformed(raw, axis.transforms, None))
        dataset_id = session.scalar(select(Run.dataset_id).where(Run.id == axis.run_id))
        if dataset_id is None:
            raise AxisError(f"run {axis.run_id} no longer exists")
        ds = self.dataset_columns(session, dataset_id)
        # The task types come with the dataset's stamp: a per-type column is made again when either changes.
        key = ("col", stamp, axis.metric, axis.transforms, self._dataset_stamp(session, dataset_id))
        return self.cache.get_or_make(key, lambda: _transformed(raw, axis.transforms, ds))

    def _stored_column(self, session: Session, axis: Axis, stamp: tuple[Any, ...]) -> Column:
        """The metric's column from its file when it matches `stamp`, else from SQL (then kept as a file)."""
        dataset_id = None if self.files is None else session.scalar(select(Run.dataset_id).where(Run.id == axis.run_id))
        if self.files is None or dataset_id is None:
            return self._load_column(session, axis)

        def load() -> tuple[IdArray, FloatArray]:
            c = self._load_column(session, axis)
            return c.ids, c.values

        return Column(*self.files.column(dataset_id, axis.run_id, axis.metric, stamp, load))

    def _load_column(self, session: Session, axis: Axis) -> Column:
        # Missing values come back as +inf (SQLite reads 1e999 as inf), so one float array holds all rows.
        if is_postgres(session):
            expr = "COALESCE((metrics ->> %s)::float8, 'Infinity'::float8)"
        else:
            expr = "COALESCE(json_extract(metrics, '$.' || ?), 1e999)"
        sql = f"SELECT sample_id, {expr} FROM scores WHERE run_id = {{p}} AND error IS NULL ORDER BY sample_id"
        id_parts: list[IdArray] = []
        value_parts: list[FloatArray] = []
        # In blocks: a list of 10M (id, value) rows would hold ~1 GB of Python objects at once.
        for rows in raw_blocks(session, sql, (_json_key(axis.metric), axis.run_id)):
            arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
            ok = np.isfinite(arr[:, 1])
            id_parts.append(arr[ok, 0].astype(np.int32))
            value_parts.append(arr[ok, 1].copy())
        if not id_parts:
            return Column(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64))
        return Column(np.concatenate(id_parts), np.concatenate(value_parts))

    def run_errors(self, session: Session, run_id: int) -> tuple[IdArray, list[str]]:
        """(sorted sample ids, reason) of the run's errored samples."""
        stamp = self._run_stamp(session, run_id)

        def load() -> tuple[IdArray, list[str]]:
            rows = raw_rows(
                session,
                "SELECT sample_id, error FROM scores WHERE run_id = {p} AND error IS NOT NULL ORDER BY sample_id",
                (run_id,),
            )
            return np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)), [r[1] for r in rows]

        return self.cache.get_or_make(("err", stamp), load)

    def error_ids(self, session: Session, dataset_id: int) -> IdArray:
        """Sample ids that carry an error in any run of the dataset."""
        rows = session.execute(
            select(Score.sample_id)
            .join(Run, Run.id == Score.run_id)
            .where(Run.dataset_id == dataset_id, Score.error.is_not(None))
            .distinct()
        ).all()
        return unique_sorted(np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows)))

    def metadata_column(self, session: Session, dataset_id: int, field: str) -> tuple[IdArray, list[Any]]:
        """(sorted ids, value per id) of one metadata field; values are JSON scalars or None."""
        stamp = self._dataset_stamp(session, dataset_id)
        return self.cache.get_or_make(("meta", stamp, field), lambda: self._load_meta(session, dataset_id, field))

    def _load_meta(self, session: Session, dataset_id: int, field: str) -> tuple[IdArray, list[Any]]:
        expr = "metadata ->> %s" if is_postgres(session) else "json_extract(metadata, '$.' || ?)"
        rows = raw_rows(
            session,
            f"SELECT id, {expr} FROM samples WHERE dataset_id = {{p}} ORDER BY id",
            (_json_key(field), dataset_id),
        )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows))
        return ids, [r[1] for r in rows]

    def metadata_fields(self, session: Session, dataset_id: int, max_values: int) -> dict[str, dict[str, int]]:
        """Low-cardinality metadata fields (at most `max_values` values) and the count of each value."""
        # One scan per field over every sample (0.75 s at 1M): cached until the dataset changes.
        stamp = self._dataset_stamp(session, dataset_id)

        def load() -> dict[str, dict[str, int]]:
            if self.files is None:
                return _metadata_fields(session, dataset_id, max_values)
            # Kept with the dataset's column files: a restarted server answers without scanning (~5 s at 10M).
            name = f"metadata_fields_{max_values}"
            return self.files.facts(dataset_id, name, stamp, lambda: _metadata_fields(session, dataset_id, max_values))

        return self.cache.get_or_make(("meta", stamp, "__fields__", max_values), load)

    # -- the plane -----------------------------------------------------------------------------
    def space(self, session: Session, dataset_id: int, x: Axis, y: Axis) -> Space:
        ds_stamp = self._dataset_stamp(session, dataset_id)
        sx, sy = self._run_stamp(session, x.run_id), self._run_stamp(session, y.run_id)

        key = ("space", ds_stamp, sx, x.metric, x.transforms, sy, y.metric, y.transforms)

        def make() -> Space:
            ds = self.cache.get_or_make(("ds", ds_stamp), lambda: self._stored_dataset(session, dataset_id, ds_stamp))
            return replace(_join(ds, self.column(session, x, sx), self.column(session, y, sy)), key=key)

        return self.cache.get_or_make(key, make)

    def drop_dataset(self, dataset_id: int) -> int:
        """Forget every cached array of a dataset (its runs' columns die with their stamps)."""
        return self.cache.drop(lambda k: isinstance(k, tuple) and len(k) > 1 and _mentions(k, dataset_id))


def _mentions(key: tuple[Any, ...], dataset_id: int) -> bool:
    stamp = key[1]
    if key[0] in ("arrow", "summary"):  # (kind, space key, ...)
        return _mentions(key[1], dataset_id)
    return key[0] in ("ds", "meta", "space", "seltypes") and isinstance(stamp, tuple) and stamp[0] == dataset_id


def _json_key(name: str) -> str:
    # SQLite's JSON path needs quoting for keys that are not plain identifiers.
    if name.replace("_", "").isalnum():
        return name
    return '"' + name.replace('"', '\\"') + '"'


def _transformed(col: Column, names: tuple[str, ...], ds: DatasetColumns | None) -> Column:
    """``col`` through the transforms; per-type ones take each sample's task type from ``ds`` (a sample the
    dataset no longer has is dropped)."""
    ids, values, codes = col.ids, col.values, None
    if ds is not None:
        pos = np.clip(np.searchsorted(ds.ids, ids), 0, max(len(ds.ids) - 1, 0))
        known = (ds.ids[pos] == ids) if len(ds.ids) else np.zeros(len(ids), dtype=bool)
        ids, values, codes = ids[known], values[known], ds.task_codes[pos[known]]
    keep, out = transforms.apply(names, values, codes)
    return Column(ids[keep], out)


def _join(ds: DatasetColumns, cx: Column, cy: Column) -> Space:
    # The points are the ids both columns and the dataset have; the join is most of a cold plane's cost
    # once the columns come from files, hence positions (below) rather than np.intersect1d's sort (5x slower).
    if np.array_equal(cx.ids, cy.ids) and np.array_equal(cx.ids, ds.ids):
        # Every sample scored by both runs (the usual finished plane): no gathers, ~0.5 s saved at 10M.
        return Space(ids=cx.ids.astype(np.int32, copy=False), x=cx.values, y=cy.values,
                     task_codes=ds.task_codes, task_types=ds.task_types)  # fmt: skip
    iy = positions(cx.ids, cy.ids)
    ix = np.flatnonzero(iy >= 0)
    ids = cx.ids[ix]
    pos = positions(ids, ds.ids)
    keep = pos >= 0
    return Space(
        ids=ids[keep].astype(np.int32),
        x=cx.values[ix[keep]],
        y=cy.values[iy[ix[keep]]],
        task_codes=ds.task_codes[pos[keep]],
        task_types=ds.task_types,
    )


def positions(ids: IdArray, within: IdArray) -> npt.NDArray[np.int64]:
    """Where each of `ids` is in `within` (both sorted and unique), -1 where it is not."""
    if len(ids) == 0 or len(within) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    if len(ids) == len(within) and np.array_equal(ids, within):
        return np.arange(len(ids), dtype=np.int64)
    lo, hi = int(min(ids[0], within[0])), int(max(ids[-1], within[-1]))
    if hi - lo < 4 * (len(ids) + len(within)):
        # Sample ids of a dataset are dense: a lookup table over their range beats a binary search 2-3x.
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[within.astype(np.int64) - lo] = np.arange(len(within))
        return table[ids.astype(np.int64) - lo]
    pos = np.minimum(np.searchsorted(within, ids), len(within) - 1)
    return np.where(within[pos] == ids, pos, -1)


def _metadata_fields(session: Session, dataset_id: int, max_values: int) -> dict[str, dict[str, int]]:
    # Field names come from the first samples' scalar values; a field with too many values is no category.
    rows = session.execute(
        text("SELECT CAST(metadata AS TEXT) FROM samples WHERE dataset_id = :ds ORDER BY id LIMIT :n"),
        {"ds": dataset_id, "n": METADATA_SCAN_ROWS},
    ).all()
    keys: set[str] = set()
    for (raw,) in rows:
        meta = orjson.loads(raw) if raw else {}
        keys.update(k for k, v in meta.items() if isinstance(v, str | int | bool) or v is None)
    expr = "metadata ->> :k" if is_postgres(session) else "json_extract(metadata, '$.' || :k)"
    out: dict[str, dict[str, int]] = {}
    for key in sorted(keys):
        vals = session.execute(
            text(f"SELECT {expr} AS v, COUNT(*) FROM samples WHERE dataset_id = :ds GROUP BY v LIMIT :lim"),
            {"ds": dataset_id, "k": _json_key(key), "lim": max_values + 1},
        ).all()
        if len(vals) <= max_values:
            out[key] = {("(none)" if v is None else str(v)): int(n) for v, n in vals}
    return out
