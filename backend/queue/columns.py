"""A finished run's score columns, written as files by the worker that finished it.

The API keeps each (run, metric) column as an Arrow file in the data directory (:mod:`backend.column_files`),
keyed by the run's *stamp*. Left to the API, the first request after a run ends (or after a restart, or in a
second API process without the file) reads every score's JSON for its metric: ~2 s per column per million
rows on SQLite, ~20 s at 10M. So the worker whose chunk makes a run ``done`` writes every metric's file in one
pass over the run's rows, after its commit; the API then finds them and reads no score row.

The stamp written is the one the API will compute (:func:`run_stamp`, which the space store calls too), read
before and after the rows: when they differ (the run was resumed or deleted meanwhile) nothing is written.
This is a cache filled early: any failure is logged and left to the API's own path (load from SQL, write).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.column_files import ColumnArrays, ColumnFiles, columns_root
from backend.db import raw_blocks
from backend.models import Run
from backend.scorer_specs import metrics_for

log = logging.getLogger(__name__)

RunStamp = tuple[Any, ...]


def run_stamp(session: Session, run_id: int) -> RunStamp | None:
    """What identifies a run's scores now (None: no such run). Writers of scores bump the run's progress and
    ``updated_at`` in the same transaction, so the stamp changes whenever its scores do."""
    row = session.execute(
        select(Run.status, Run.done, Run.errors, Run.updated_at).where(Run.id == run_id)
    ).one_or_none()
    if row is None:
        return None
    return (run_id, row[0], row[1], row[2], str(row[3]))


def run_columns(session: Session, run_id: int) -> dict[str, ColumnArrays]:
    """Every metric of the run's scored samples, as (sorted sample ids, values), in one pass over its rows.

    A sample without the metric (or with a non-finite value) is left out of that metric's column, as the API's
    own loader does. In blocks, so the Python objects of at most one block are alive at a time."""
    sql = (
        "SELECT sample_id, CAST(metrics AS TEXT) FROM scores "
        "WHERE run_id = {p} AND error IS NULL ORDER BY sample_id"
    )
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for rows in raw_blocks(session, sql, (run_id,)):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows))
        metrics = [orjson.loads(r[1]) if r[1] else {} for r in rows]
        for name in set().union(*metrics):
            values = np.fromiter((m.get(name, math.inf) for m in metrics), dtype=np.float64, count=len(rows))
            ok = np.isfinite(values)
            id_parts, value_parts = parts.setdefault(name, ([], []))
            whole = bool(ok.all())
            id_parts.append(ids if whole else ids[ok])
            value_parts.append(values if whole else values[ok])
    return {name: (np.concatenate(i), np.concatenate(v)) for name, (i, v) in parts.items()}


def keep_run_columns(factory: sessionmaker[Session], data_dir: Path, run_id: int) -> int:
    """Write the column file of every metric of a ``done`` run; returns how many were written (0: the run is not
    done, changed while read, or something failed, which is logged: the API then loads from SQL as before)."""
    t0 = time.perf_counter()
    try:
        with factory() as session:
            before = run_stamp(session, run_id)
            if before is None or before[1] != "done":
                return 0
            run = session.execute(select(Run.dataset_id, Run.kind, Run.params).where(Run.id == run_id)).one()
            dataset_id = run.dataset_id
            columns = run_columns(session, run_id)
            # A metric the scorer declares that no sample has (image_gain of a text-only set) is an empty
            # column to the API's axes, kept too, so that it is not read from SQL either.
            with contextlib.suppress(ValueError):  # a kind or params this version no longer knows
                for name in metrics_for(run.kind, run.params):
                    columns.setdefault(name, (np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)))
            after = run_stamp(session, run_id)
        if after != before or dataset_id is None:
            log.info("run %d changed while its columns were read; the API will load them", run_id)
            return 0
        files = ColumnFiles(columns_root(data_dir))
        for metric, (ids, values) in columns.items():
            files.put_column(dataset_id, run_id, metric, before, ids, values)
    except Exception:  # a cache written early must never fail the chunk that finished the run
        log.exception("run %d: could not write its column files; the API will load them from SQL", run_id)
        return 0
    rows = max((len(ids) for ids, _ in columns.values()), default=0)
    log.info("run %d: %d column file(s) of %d rows written in %.2f s", run_id, len(columns), rows,
             time.perf_counter() - t0)  # fmt: skip
    return len(columns)
