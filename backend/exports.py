"""Exports of a set of sample ids: LLaVA JSON, JSONL and Parquet with every metric, id lists, and
curriculum zips. Everything streams in batches, so memory stays bounded whatever the size.

LLaVA records are spliced from the stored JSON text rather than parsed and re-serialised: the
conversations go out exactly as they were ingested (roles normalised to human/gpt).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.models import Curriculum, Dataset, Run
from backend.selections import ids_from_bytes
from backend.space import Axis, SpaceStore, align, is_postgres, metric_names, raw_rows

BATCH = 5000
FORMATS = ("llava", "jsonl", "parquet", "ids")
MEDIA = {
    "llava": "application/json",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "ids": "text/plain",
}
SUFFIX = {"llava": "json", "jsonl": "jsonl", "parquet": "parquet", "ids": "txt"}
# An export of fewer ids than this fraction of its dataset reads its own score rows, not whole columns.
OWN_ROWS_FRACTION = 0.05

_SAMPLES_SQL = (
    "SELECT id, external_id, CAST(image AS TEXT), CAST(conversations AS TEXT), task_type, CAST(metadata AS TEXT) "
    "FROM samples WHERE {ids} ORDER BY id"
)


def _rows(session: Session, ids: list[int]) -> list[tuple[Any, ...]]:
    if is_postgres(session):
        return raw_rows(session, _SAMPLES_SQL.format(ids="id = ANY(%s)"), (ids,))
    return raw_rows(session, _SAMPLES_SQL.format(ids=f"id IN ({','.join('?' * len(ids))})"), ids)


@dataclass(frozen=True)
class MetricColumn:
    name: str
    run_id: int
    metric: str


@dataclass
class ExportColumns:
    metrics: list[MetricColumn]
    errors: dict[int, str]  # run id -> error column name
    runs: list[dict[str, Any]]


def export_columns(session: Session, dataset_id: int) -> ExportColumns:
    """One column per (run, metric): `kind.metric`, or `kind.metric.runN` when a kind has several runs."""
    runs = list(session.scalars(select(Run).where(Run.dataset_id == dataset_id).order_by(Run.id)))
    kinds = [r.kind for r in runs]
    metrics: list[MetricColumn] = []
    errors: dict[int, str] = {}
    for run in runs:
        suffix = "" if kinds.count(run.kind) == 1 else f".run{run.id}"
        for m in sorted(metric_names(session, run)):
            metrics.append(MetricColumn(f"{run.kind}.{m}{suffix}", run.id, m))
        errors[run.id] = f"{run.kind}.error{suffix}"
    info = [
        {"id": r.id, "kind": r.kind, "params": r.params, "scorer_key": r.scorer_key, "status": r.status} for r in runs
    ]
    return ExportColumns(metrics, errors, info)


def _batches(ids: np.ndarray) -> Iterator[list[int]]:
    for i in range(0, len(ids), BATCH):
        yield [int(v) for v in ids[i : i + BATCH]]


def _llava_record(row: Any) -> bytes:
    image = "" if row[2] is None or row[2] == "null" else f', "image": {row[2]}'
    return b'{"id": ' + orjson.dumps(row[1]) + image.encode() + b', "conversations": ' + row[3].encode() + b"}"


def iter_llava(factory: sessionmaker[Session], ids: np.ndarray) -> Iterator[bytes]:
    """A LLaVA training JSON list: exactly `id`, `image` (absent for text-only), `conversations`."""
    yield b"["
    first = True
    with factory() as session:
        for batch in _batches(ids):
            parts = [_llava_record(r) for r in _rows(session, batch)]
            if parts:
                yield (b"\n" if first else b",\n") + b",\n".join(parts)
                first = False
    yield b"\n]\n"


class _ScoreTable:
    """Metric values and error reasons for batches of ids: from the space store's cached columns for a big export,
    from the ids' own score rows for a small one (a 7,200-sample curriculum of a 10M dataset would otherwise load
    every metric's 10M-row column first: 100 s and 120 MB a column)."""

    def __init__(self, session: Session, store: SpaceStore, cols: ExportColumns, dataset_id: int, n_ids: int) -> None:
        self.session, self.cols = session, cols
        ds = session.get(Dataset, dataset_id)
        self.by_rows = ds is not None and n_ids < OWN_ROWS_FRACTION * ds.n_samples
        self.metrics = (
            []
            if self.by_rows
            else [(c, store.column(session, Axis(c.name, c.run_id, "", c.metric, ""))) for c in cols.metrics]
        )
        self.errors = (
            [] if self.by_rows else [(name, store.run_errors(session, rid)) for rid, name in cols.errors.items()]
        )

    def batch(self, ids: np.ndarray) -> dict[str, list[Any]]:
        if self.by_rows:
            return self._own_rows(ids)
        out: dict[str, list[Any]] = {}
        for c, col in self.metrics:
            vals = align(ids, col.ids, col.values, np.nan)
            out[c.name] = [None if v != v else float(v) for v in vals]  # NaN -> null
        for name, (eids, reasons) in self.errors:
            out[name] = list(align(ids, eids, reasons, None))
        return out

    def _own_rows(self, ids: np.ndarray) -> dict[str, list[Any]]:
        """The same columns from the batch's score rows: a value where the row has no error and the metric is a
        finite number (what a column holds), the reason where it has one."""
        where = {int(v): k for k, v in enumerate(ids.tolist())}
        out: dict[str, list[Any]] = {c.name: [None] * len(ids) for c in self.cols.metrics}
        out.update({name: [None] * len(ids) for name in self.cols.errors.values()})
        of_run: dict[int, list[MetricColumn]] = {}
        for c in self.cols.metrics:
            of_run.setdefault(c.run_id, []).append(c)
        runs, sids = list(self.cols.errors), list(where)
        if not runs or not sids:
            return out
        sql = "SELECT run_id, sample_id, CAST(metrics AS TEXT), error FROM scores WHERE "
        if is_postgres(self.session):
            rows = raw_rows(self.session, sql + "run_id = ANY(%s) AND sample_id = ANY(%s)", (runs, sids))
        else:
            marks = f"run_id IN ({','.join('?' * len(runs))}) AND sample_id IN ({','.join('?' * len(sids))})"
            rows = raw_rows(self.session, sql + marks, [*runs, *sids])
        for run_id, sid, metrics, error in rows:
            k = where[sid]
            if error is not None:
                out[self.cols.errors[run_id]][k] = error
                continue
            values = orjson.loads(metrics) if metrics else {}
            for c in of_run.get(run_id, ()):
                v = values.get(c.metric) if isinstance(values, dict) else None
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    out[c.name][k] = float(v)
        return out


def iter_jsonl(factory: sessionmaker[Session], store: SpaceStore, dataset_id: int, ids: np.ndarray) -> Iterator[bytes]:
    """One JSON object per line: the LLaVA keys plus task type, metadata and every metric."""
    with factory() as session:
        cols = export_columns(session, dataset_id)
        table = _ScoreTable(session, store, cols, dataset_id, len(ids))
        names = [c.name for c in cols.metrics]
        err_names = list(cols.errors.values())
        for batch in _batches(ids):
            rows = _rows(session, batch)
            scores = table.batch(np.asarray([r[0] for r in rows], dtype=np.int32))
            lines = []
            for k, row in enumerate(rows):
                metrics = {n: scores[n][k] for n in names}
                errs = {n: scores[n][k] for n in err_names if scores[n][k]}
                rec = b'{"id": ' + orjson.dumps(row[1])
                if row[2] is not None and row[2] != "null":
                    rec += b', "image": ' + row[2].encode()
                rec += b', "conversations": ' + row[3].encode()
                rec += b', "sample_id": ' + orjson.dumps(row[0]) + b', "task_type": ' + orjson.dumps(row[4])
                rec += b', "metadata": ' + (row[5] or "{}").encode()
                rec += b', "metrics": ' + orjson.dumps(metrics) + b', "errors": ' + orjson.dumps(errs) + b"}"
                lines.append(rec)
            if lines:
                yield b"\n".join(lines) + b"\n"


def iter_ids(factory: sessionmaker[Session], ids: np.ndarray) -> Iterator[bytes]:
    """The samples' dataset ids (`id` of the source records), one per line."""
    with factory() as session:
        for batch in _batches(ids):
            rows = _rows(session, batch)
            if rows:
                yield ("\n".join(r[1] for r in rows) + "\n").encode()


def write_parquet(
    factory: sessionmaker[Session], store: SpaceStore, dataset_id: int, ids: np.ndarray, out: Path | IO[bytes]
) -> int:
    """A Parquet file with the LLaVA fields (JSON text), task type, metadata and one column per metric."""
    with factory() as session:
        cols = export_columns(session, dataset_id)
        table = _ScoreTable(session, store, cols, dataset_id, len(ids))
        fields = [
            pa.field("sample_id", pa.int32()),
            pa.field("id", pa.string()),
            pa.field("image", pa.string()),
            pa.field("conversations", pa.string()),
            pa.field("task_type", pa.string()),
            pa.field("metadata", pa.string()),
            *(pa.field(c.name, pa.float64()) for c in cols.metrics),
            *(pa.field(name, pa.string()) for name in cols.errors.values()),
        ]
        meta = {b"qspace.runs": orjson.dumps(cols.runs)}
        schema = pa.schema(fields, metadata=meta)
        n = 0
        # Dictionary encoding only where values repeat: trying it on unique conversation text costs time.
        with pq.ParquetWriter(
            out, schema, compression="snappy", use_dictionary=["task_type"], write_statistics=["sample_id"]
        ) as writer:
            for batch in _batches(ids):
                rows = _rows(session, batch)
                data: dict[str, list[Any]] = {
                    "sample_id": [r[0] for r in rows],
                    "id": [r[1] for r in rows],
                    "image": [None if r[2] in (None, "null") else r[2] for r in rows],
                    "conversations": [r[3] for r in rows],
                    "task_type": [r[4] for r in rows],
                    "metadata": [r[5] for r in rows],
                }
                data.update(table.batch(np.asarray(data["sample_id"], dtype=np.int32)))
                writer.write_table(pa.table(data, schema=schema))
                n += len(rows)
    return n


def write_selection(
    factory: sessionmaker[Session], store: SpaceStore, dataset_id: int, ids: np.ndarray, fmt: str, out: IO[bytes]
) -> None:
    """Write one export format of `ids` to a binary stream."""
    if fmt == "parquet":
        write_parquet(factory, store, dataset_id, ids, out)
        return
    chunks = {
        "llava": lambda: iter_llava(factory, ids),
        "jsonl": lambda: iter_jsonl(factory, store, dataset_id, ids),
        "ids": lambda: iter_ids(factory, ids),
    }[fmt]()
    for chunk in chunks:
        out.write(chunk)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.lower()).strip("_") or "stage"


def write_curriculum_zip(
    factory: sessionmaker[Session], store: SpaceStore, curriculum_id: int, out: IO[bytes]
) -> dict[str, Any]:
    """The curriculum as a zip: per stage LLaVA JSON, JSONL, Parquet and ids, plus manifest.json."""
    with factory() as session:
        cur = session.get(Curriculum, curriculum_id)
        if cur is None:
            from backend.datasets import NotFound

            raise NotFound(f"curriculum {curriculum_id} not found")
        dataset_id = cur.dataset_id
        stages = [(st.position, st.name, st.recipe, st.count, ids_from_bytes(st.sample_ids)) for st in cur.stages]
        runs = export_columns(session, dataset_id).runs
        manifest: dict[str, Any] = {
            "qspace_version": __import__("backend").__version__,
            "curriculum_id": cur.id,
            "name": cur.name,
            "dataset_id": dataset_id,
            "recipe": cur.recipe,
            "created_at": cur.created_at.isoformat(),
            "exported_at": datetime.now(UTC).isoformat(),
            "runs": runs,
            "scorer_keys": sorted({r["scorer_key"] for r in runs}),
            "stages": [],
        }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for pos, name, recipe, count, ids in stages:
            stem = f"stage{pos + 1}_{_slug(name)}"
            files = {}
            for fmt in ("llava", "jsonl", "parquet", "ids"):
                arc = f"{stem}.{SUFFIX[fmt]}" if fmt == "llava" else f"{fmt}/{stem}.{SUFFIX[fmt]}"
                with zf.open(arc, "w", force_zip64=True) as fh:
                    write_selection(factory, store, dataset_id, ids, fmt, fh)
                files[fmt] = arc
            manifest["stages"].append(
                {
                    "position": pos,
                    "name": name,
                    "count": count,
                    "recipe": recipe,
                    "files": files,
                    "seed": recipe.get("seed"),
                }
            )
        zf.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest
