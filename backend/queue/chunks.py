"""The worker side of a scoring run: start it, fail it, prepare a chunk and write its results.

A run's work is split into chunks of sample ids (:mod:`backend.runs` plans and enqueues them); each chunk is
scored by a worker (``workers/tasks.py``) and written by :func:`upsert_scores` in one transaction keyed by
(run, sample) with ``ON CONFLICT DO NOTHING``, so a redelivered chunk writes nothing twice and the run's
counters grow only by the rows really inserted.

Status: ``queued`` (enqueued, nothing started) -> ``running`` (a chunk started) -> ``done`` (every sample has
a result); ``cancelled`` (further chunks are skipped) and ``failed`` (a chunk failed for a reason other than a
bad sample) stop it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.datasets import UnsafePath, resolve_inside
from backend.models import Dataset, Run, Sample, Score
from backend.queue.attempts import forget_run
from backend.queue.progress import ACTIVE, aware, recount, update_rate, utcnow
from backend.scorer_specs import ScoreItem, ScoreResult

# Scorers that read the sample's images (clip needs one; mllm_loss uses them when the sample has any). The
# others see text only, so a missing image is no reason to fail them.
IMAGE_KINDS = frozenset({"clip", "mllm_loss"})
INSERT_BATCH = 500  # rows per INSERT statement (4 parameters each: far below SQLite's and PostgreSQL's limits)


# --- lifecycle ------------------------------------------------------------------------------------------


def mark_running(session: Session, run_id: int, now: datetime | None = None) -> None:
    """queued -> running (the first chunk started); no-op otherwise."""
    now = now or utcnow()
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="running", started_at=func.coalesce(Run.started_at, now), updated_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_failed(session: Session, run_id: int, message: str, now: datetime | None = None) -> None:
    """An active run -> failed with `message`; a finished or cancelled run is left alone."""
    now = now or utcnow()
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE))
        .values(status="failed", message=message[:2000], finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def run_status(session: Session, run_id: int) -> str | None:
    return session.scalar(select(Run.status).where(Run.id == run_id))


# --- the work of one chunk ----------------------------------------------------------------------------


def score_items(
    dataset: Dataset, samples: Iterable[Sample], uses_images: bool
) -> tuple[list[ScoreItem], list[ScoreResult]]:
    """ScoreItems of `samples` with image paths resolved under the dataset's image root, and a ScoreResult
    error for each sample whose image escapes the root or is missing (when the scorer reads images)."""
    root = Path(dataset.image_root) if dataset.image_root else None
    items: list[ScoreItem] = []
    failed: list[ScoreResult] = []
    for s in samples:
        paths: list[str] = []
        error: str | None = None
        if uses_images:
            for rel in s.images:
                if root is None:
                    error = f"image unavailable: {rel} (the dataset has no image root)"
                    break
                try:
                    path = resolve_inside(root, rel)
                except UnsafePath as exc:
                    error = f"image refused: {exc}"
                    break
                if not path.is_file():
                    error = f"image missing: {rel}"
                    break
                paths.append(str(path))
        if error is not None:
            failed.append(ScoreResult(s.id, None, error))
        else:
            items.append(ScoreItem(s.id, [dict(t) for t in s.conversations], paths))
    return items, failed


@dataclass
class ChunkWork:
    """A chunk ready to score: the run's scorer and the items still without a result."""

    run_id: int
    kind: str
    params: dict[str, Any]
    scorer_key: str
    items: list[ScoreItem]
    failed: list[ScoreResult]  # samples that cannot be scored (image missing or refused)
    already_done: int = 0
    skip_reason: str | None = None
    sample_ids: list[int] = field(default_factory=list)


def prepare_chunk(session: Session, run_id: int, key: str, sample_ids: Sequence[int]) -> ChunkWork:
    """What is left to do of a chunk. ``skip_reason`` is set when nothing should be done: the run is gone,
    belongs to another scorer (a stale message), or was cancelled or failed."""
    run = session.get(Run, run_id)
    if run is None:
        return ChunkWork(run_id, "", {}, key, [], [], skip_reason=f"run {run_id} does not exist")
    if run.scorer_key != key:
        return ChunkWork(run_id, run.kind, {}, key, [], [], skip_reason=f"run {run_id} has another scorer key")
    if run.status in ("cancelled", "failed"):
        return ChunkWork(run_id, run.kind, run.params, key, [], [], skip_reason=f"run {run_id} is {run.status}")
    ids = list(dict.fromkeys(int(i) for i in sample_ids))
    # The BETWEEN keeps this an index range scan even when the planner's statistics still describe an
    # empty scores table (PostgreSQL before autoanalyze): otherwise every row of the run is tested against
    # the whole IN list, and chunks slowed from 1 s to 16 s half-way through a 665k-sample run.
    done = set(
        session.scalars(
            select(Score.sample_id).where(
                Score.run_id == run_id, Score.sample_id.between(min(ids), max(ids)), Score.sample_id.in_(ids)
            )
        )
        if ids
        else []
    )
    todo = [i for i in ids if i not in done]
    samples: list[Sample] = []
    if todo:
        by_id = {
            s.id: s
            for s in session.scalars(select(Sample).where(Sample.id.in_(todo), Sample.dataset_id == run.dataset_id))
        }
        samples = [by_id[i] for i in todo if i in by_id]
    dataset = session.get(Dataset, run.dataset_id)
    if dataset is None:
        return ChunkWork(run_id, run.kind, run.params, key, [], [], skip_reason="the dataset is gone")
    items, failed = score_items(dataset, samples, run.kind in IMAGE_KINDS)
    return ChunkWork(
        run_id, run.kind, dict(run.params or {}), key, items, failed, already_done=len(done), sample_ids=ids
    )


@dataclass
class UpsertReport:
    inserted: int  # rows written now (0 for a chunk that was already written)
    errors: int  # of which carry an error reason
    status: str | None  # the run's status afterwards (None: the run is gone)
    finished: bool = False  # this write made the run ``done`` (its columns can be written once committed)


def _clean(result: ScoreResult) -> dict[str, Any]:
    metrics, error = result.metrics, result.error
    if error is None and metrics is None:
        error = "no result"
    if metrics is not None:
        bad = {k: v for k, v in metrics.items() if not isinstance(v, int | float) or not math.isfinite(v)}
        if bad:
            listed = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            metrics, error = None, f"non-finite metric(s): {listed}"[:500]
        else:
            metrics = {k: float(v) for k, v in metrics.items()}
    if error is not None:
        metrics = None
    return {"sample_id": int(result.sample_id), "metrics": metrics, "error": error}


def _insert_ignoring_existing(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str | None]]:
    """INSERT .. ON CONFLICT (run_id, sample_id) DO NOTHING RETURNING: the rows really inserted."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - qspace supports SQLite and PostgreSQL
        raise RuntimeError(f"unsupported database {dialect!r}")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    out: list[tuple[int, str | None]] = []
    for i in range(0, len(rows), INSERT_BATCH):
        stmt = (
            insert(Score)
            .values(rows[i : i + INSERT_BATCH])
            .on_conflict_do_nothing(index_elements=["run_id", "sample_id"])
            .returning(Score.sample_id, Score.error)
        )
        out.extend((int(sid), err) for sid, err in session.execute(stmt))
    return out


def upsert_scores(
    session: Session,
    run_id: int,
    results: Iterable[ScoreResult],
    now: datetime | None = None,
    window_s: float = 30.0,
) -> UpsertReport:
    """Write results of `run_id` keyed by (run, sample) and advance the run's progress, in the caller's
    transaction (commit it; one chunk = one transaction).

    A (run, sample) already stored is left as it is, so a redelivered or repeated chunk writes nothing twice
    and adds nothing to ``done``/``errors``. When every sample has a result the run becomes ``done`` (a
    cancelled run stays cancelled).
    """
    now = now or utcnow()
    unique: dict[int, dict[str, Any]] = {}
    for r in results:
        row = _clean(r)
        unique.setdefault(row["sample_id"], {"run_id": run_id, **row})
    rows = list(unique.values())
    # Lock the run row first, with a write: on PostgreSQL it is a FOR NO KEY UPDATE row lock (compatible with
    # the KEY SHARE locks that the scores' foreign key takes), so concurrent chunks of one run queue up here
    # and never deadlock; on SQLite it takes the database write lock before anything is read, so the
    # transaction never works from a stale snapshot. A redelivered chunk waits here until the first
    # delivery commits, then inserts nothing.
    locked = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(done=Run.done, updated_at=Run.updated_at)  # a no-op write (keeps updated_at: no onupdate)
        .execution_options(synchronize_session=False)
    )
    if getattr(locked, "rowcount", 1) == 0:
        return UpsertReport(0, 0, None)
    run = session.scalar(select(Run).where(Run.id == run_id).execution_options(populate_existing=True))
    inserted = _insert_ignoring_existing(session, rows) if rows else []
    n = len(inserted)
    n_err = sum(1 for _, err in inserted if err is not None)
    if run is None:
        return UpsertReport(0, 0, None)
    if n == 0 and run.status not in ACTIVE:
        return UpsertReport(0, 0, run.status)
    started = aware(run.started_at) or now
    last = aware(run.updated_at) or started
    run.samples_per_s = update_rate(
        run.samples_per_s,
        elapsed_prev=(last - started).total_seconds(),
        gap=(now - last).total_seconds(),
        n=n,
        elapsed_now=(now - started).total_seconds(),
        tau=window_s,
    )
    run.done += n
    run.errors += n_err
    if run.status == "queued":
        run.status = "running"
    if run.started_at is None:
        run.started_at = started
    run.updated_at = now
    finished = False
    if run.status in ACTIVE and run.done >= run.total:
        recount(session, run)
        if run.done >= run.total:
            run.status, run.finished_at = "done", now
            run.message = f"{run.errors} sample(s) could not be scored" if run.errors else None
            forget_run(session, run_id)  # its chunks' delivery records (poison chunks) are of no more use
            finished = True
    session.flush()
    return UpsertReport(n, n_err, run.status, finished)
