"""Scoring runs: create-or-resume, chunks of sample ids, progress and ETA, cancel, and the idempotent upsert.

A run is (dataset, scorer key). Its work is split into chunks of sample ids; each chunk is scored by a worker
and written by :func:`upsert_scores` in one transaction keyed by (run, sample) with ``ON CONFLICT DO
NOTHING``, so a redelivered chunk writes nothing twice and the run's counters grow only by the rows really
inserted. Posting the same scorer on the same dataset again resumes the run: only samples without a stored
result are enqueued.

Status: ``queued`` (enqueued, nothing started) -> ``running`` (a chunk started) -> ``done`` (every sample has
a result); ``cancelled`` (further chunks are skipped) and ``failed`` (a chunk failed for a reason other than a
bad sample) stop it; posting it again resumes it.

Throughput is an exponentially weighted rate over the last ``progress_window_s`` seconds (the time constant),
kept in the run row so that every worker of a run contributes to one figure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.datasets import NotFound, UnsafePath, get_dataset, resolve_inside
from backend.models import Dataset, Run, Sample, Score
from backend.run_schemas import RunErrorOut, RunErrorsPage, RunOut
from backend.scorer_specs import ScoreItem, ScoreResult, scorer_key, validate_params

ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled")
# Scorers that read the sample's images (clip needs one; mllm_loss uses them when the sample has any). The
# others see text only, so a missing image is no reason to fail them.
IMAGE_KINDS = frozenset({"clip", "mllm_loss"})
INSERT_BATCH = 500  # rows per INSERT statement (4 parameters each: far below SQLite's and PostgreSQL's limits)


class RunConflict(ValueError):
    """The run is in a state that refuses the request (e.g. cancelling a finished run): HTTP 409."""


class ChunkSink(Protocol):
    """Where chunks go: :class:`backend.queue.TaskQueue`, or a test double."""

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Iterable[Sequence[int]]) -> int: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    a, b = _aware(a), _aware(b)
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


# --- lookups -----------------------------------------------------------------------------------------


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def list_runs(session: Session, dataset_id: int) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.dataset_id == dataset_id).order_by(Run.id)))


def missing_sample_ids(session: Session, run: Run) -> list[int]:
    """Ids of the run's dataset's samples without a stored result, in dataset order."""
    scored = exists().where(Score.run_id == run.id, Score.sample_id == Sample.id)
    return list(
        session.scalars(
            select(Sample.id).where(Sample.dataset_id == run.dataset_id, ~scored).order_by(Sample.position, Sample.id)
        )
    )


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of at most `size` ids."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def recount(session: Session, run: Run) -> None:
    """Set total, done and errors from the tables (exact; used on resume and at completion)."""
    run.total = session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == run.dataset_id)) or 0
    done, errors = session.execute(
        select(func.count(), func.count(Score.error)).select_from(Score).where(Score.run_id == run.id)
    ).one()
    run.done, run.errors = int(done or 0), int(errors or 0)


# --- progress ------------------------------------------------------------------------------------------


def _weight(t: float, tau: float) -> float:
    """Mass of the exponential kernel over a history `t` seconds long (corrects the estimate's start)."""
    return -math.expm1(-max(t, 0.0) / tau)


def update_rate(
    prev_rate: float | None, elapsed_prev: float, gap: float, n: int, elapsed_now: float, tau: float
) -> float | None:
    """The exponentially weighted samples/s after `n` more samples arrived `gap` seconds after the last update.

    The decayed sum S = sum(n_i * exp(-(now - t_i) / tau)) / tau estimates the rate; dividing by the kernel's
    mass since the run started removes the bias of a young run (so the first chunk reads n / its duration).
    """
    if elapsed_now < 1e-3:
        return prev_rate
    s = (prev_rate or 0.0) * _weight(elapsed_prev, tau)
    s = s * math.exp(-max(gap, 0.0) / tau) + n / tau
    return s / _weight(elapsed_now, tau)


def progress(run: Run, now: datetime | None = None, tau: float = 30.0) -> tuple[float | None, float | None]:
    """(samples_per_s, eta_s) of `run` as of `now`.

    A running run that has reported nothing for longer than the window shows a decaying rate (so the ETA of a
    stalled run grows); a finished run keeps its last rate and an ETA of 0.
    """
    rate = run.samples_per_s
    if run.status == "done":
        return rate, 0.0
    if run.status != "running" or rate is None:
        return rate, None
    gap = _seconds(run.updated_at, now or utcnow()) or 0.0
    if gap > tau:
        rate *= math.exp(-(gap - tau) / tau)
    remaining = max(run.total - run.done, 0)
    eta = remaining / rate if rate > 1e-9 else None
    return rate, eta


def run_out(run: Run, now: datetime | None = None, tau: float = 30.0) -> RunOut:
    rate, eta = progress(run, now, tau)
    return RunOut(
        id=run.id,
        dataset_id=run.dataset_id,
        kind=run.kind,
        params=run.params or {},
        scorer_key=run.scorer_key,
        status=run.status,
        total=run.total,
        done=run.done,
        errors=run.errors,
        samples_per_s=None if rate is None else round(rate, 3),
        eta_s=None if eta is None else round(eta, 1),
        message=run.message,
        created_at=_aware(run.created_at) or utcnow(),
        started_at=_aware(run.started_at),
        finished_at=_aware(run.finished_at),
        updated_at=_aware(run.updated_at),
    )


# --- create or resume ----------------------------------------------------------------------------------


_SNAPSHOT = ("status", "message", "started_at", "finished_at", "samples_per_s", "total", "done", "errors")


@dataclass
class RunPlan:
    """What posting a run decided: the run (flushed, not committed) and the chunks still to enqueue."""

    run: Run
    chunks: list[list[int]]
    created: bool
    previous: dict[str, Any] | None = None  # the resumed run's state, restored if enqueueing fails

    @property
    def n_samples(self) -> int:
        return sum(len(c) for c in self.chunks)


def checked_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical params of `kind`; ValueError (never OSError) for anything wrong with them."""
    try:
        return validate_params(kind, params)
    except OSError as exc:  # a model "path" the file system refuses (too long, unreadable)
        raise ValueError(f"{kind}.model: {exc}") from None


def plan_run(
    session: Session,
    dataset: Dataset,
    kind: str,
    params: dict[str, Any] | None,
    chunk_size: int,
    stale_s: float = 900.0,
    now: datetime | None = None,
) -> RunPlan:
    """Create the run of (dataset, scorer key), or resume the existing one; ValueError for bad kind/params.

    - new: every sample, in chunks;
    - finished, failed or cancelled: the samples without a result (none left: it becomes ``done``);
    - queued or running: nothing, unless it made no progress for `stale_s` seconds (its chunks may be lost,
      e.g. a server-less broker whose worker was killed): then its missing samples are enqueued again.
    """
    now = now or utcnow()
    canonical = checked_params(kind, params)
    try:
        key = scorer_key(kind, canonical)
    except OSError as exc:
        raise ValueError(f"{kind}.model: cannot read the checkpoint ({exc})") from None

    def existing() -> Run | None:
        stmt = select(Run).where(Run.dataset_id == dataset.id, Run.scorer_key == key).with_for_update()
        return session.scalar(stmt)

    run = existing()
    if run is None:
        run = Run(
            dataset_id=dataset.id,
            kind=kind,
            params=canonical,
            scorer_key=key,
            status="queued",
            total=0,
            done=0,
            errors=0,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        session.flush()  # IntegrityError when the same run was created concurrently; submit_run retries
        ids = list(
            session.scalars(
                select(Sample.id).where(Sample.dataset_id == dataset.id).order_by(Sample.position, Sample.id)
            )
        )
        run.total = len(ids)
        if not ids:
            run.status, run.finished_at, run.message = "done", now, "the dataset has no samples"
        session.flush()
        return RunPlan(run, chunked(ids, chunk_size), created=True)

    if run.status in ACTIVE:
        idle = _seconds(run.updated_at, now)
        if idle is None or idle < stale_s:
            return RunPlan(run, [], created=False)
    previous = {name: getattr(run, name) for name in _SNAPSHOT}
    missing = missing_sample_ids(session, run)
    recount(session, run)
    if not missing:
        if run.status != "done":
            run.status, run.finished_at = "done", now
            run.message = f"{run.errors} sample(s) could not be scored" if run.errors else None
        session.flush()
        return RunPlan(run, [], created=False, previous=previous)
    if run.status in ACTIVE:  # stale: enqueue its missing samples again, keep its clock
        idle_s = _seconds(run.updated_at, now) or 0.0
        run.message = f"re-enqueued {len(missing)} sample(s) after {idle_s:.0f} s without progress"
    else:
        run.status, run.message = "queued", f"resumed: {len(missing)} sample(s) to score"
        run.started_at = run.finished_at = run.samples_per_s = None
    run.updated_at = now
    session.flush()
    return RunPlan(run, chunked(missing, chunk_size), created=False, previous=previous)


def abandon_plan(session: Session, plan: RunPlan, reason: str) -> None:
    """Undo a committed plan whose chunks could not be enqueued: a new run disappears, a resumed run gets its
    previous state back. Chunks already sent find no run (or a finished one) and are skipped."""
    run = session.get(Run, plan.run.id)
    if run is None:
        return
    if plan.created:
        session.execute(delete(Score).where(Score.run_id == run.id))
        session.delete(run)
    elif plan.previous is not None:
        for name, value in plan.previous.items():
            setattr(run, name, value)
        run.message = f"not resumed: {reason}"
    session.flush()


def submit_run(
    session: Session,
    sink: ChunkSink,
    dataset_ref: int | str,
    kind: str,
    params: dict[str, Any] | None,
    chunk_size: int,
    stale_s: float = 900.0,
    check: Callable[[], None] | None = None,
) -> Run:
    """Create or resume a run and enqueue its chunks, leaving nothing behind when the queue fails.

    Raises NotFound (no such dataset), ValueError (unknown kind, bad params) before anything is written, and
    the queue's exception (``check`` first, then while sending) after undoing what was written.
    """
    dataset = get_dataset(session, dataset_ref)
    checked_params(kind, params)  # 422 before touching the broker
    if check is not None:
        check()
    for attempt in (1, 2):
        try:
            plan = plan_run(session, dataset, kind, params, chunk_size, stale_s)
            session.commit()  # visible to workers before any chunk can reach them
            break
        except IntegrityError:  # created concurrently by another request: resume that one
            session.rollback()
            if attempt == 2:
                raise
        except BaseException:
            session.rollback()
            raise
    if plan.chunks:
        try:
            sink.send_chunks(plan.run.id, plan.run.scorer_key, plan.chunks)
        except Exception as exc:
            try:
                abandon_plan(session, plan, str(exc))
                session.commit()
            except BaseException:
                session.rollback()
                raise
            raise
    session.refresh(plan.run)
    return plan.run


def requeue_active_runs(session: Session, sink: ChunkSink, chunk_size: int) -> dict[int, int]:
    """Enqueue the missing samples of every queued or running run again; {run id: samples enqueued}.

    For a server-less broker, whose delivered-but-unacknowledged chunks die with the worker, when the server
    starts a fresh worker. Duplicates are harmless: a chunk skips samples that already have a result.
    """
    out: dict[int, int] = {}
    for run in session.scalars(select(Run).where(Run.status.in_(ACTIVE)).order_by(Run.id)):
        missing = missing_sample_ids(session, run)
        if missing:
            sink.send_chunks(run.id, run.scorer_key, chunked(missing, chunk_size))
            out[run.id] = len(missing)
    return out


# --- lifecycle ------------------------------------------------------------------------------------------


def cancel_run(session: Session, run: Run, now: datetime | None = None) -> Run:
    """Stop a queued or running run: its remaining chunks are skipped. Idempotent; 409 for a finished run."""
    if run.status == "cancelled":
        return run
    if run.status not in ACTIVE:
        raise RunConflict(f"run {run.id} is already {run.status}")
    run.status, run.finished_at, run.message = "cancelled", now or utcnow(), "cancelled"
    session.flush()
    return run


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
    started = _aware(run.started_at) or now
    last = _aware(run.updated_at) or started
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
    if run.status in ACTIVE and run.done >= run.total:
        recount(session, run)
        if run.done >= run.total:
            run.status, run.finished_at = "done", now
            run.message = f"{run.errors} sample(s) could not be scored" if run.errors else None
    session.flush()
    return UpsertReport(n, n_err, run.status)


# --- errors ------------------------------------------------------------------------------------------------


def error_reason(error: str) -> str:
    return error.split(":", 1)[0].strip() or error


def run_errors(session: Session, run: Run, offset: int = 0, limit: int = 100) -> RunErrorsPage:
    """The samples of `run` that could not be scored, with their reasons, and a count per reason."""
    where = (Score.run_id == run.id, Score.error.is_not(None))
    reasons = Counter(error_reason(e) for e in session.scalars(select(Score.error).where(*where)) if e)
    rows = session.execute(
        select(Score.sample_id, Sample.external_id, Score.error)
        .join(Sample, Sample.id == Score.sample_id)
        .where(*where)
        .order_by(Score.sample_id)
        .offset(offset)
        .limit(limit)
    )
    items = [RunErrorOut(sample_id=sid, external_id=ext, error=err or "") for sid, ext, err in rows]
    return RunErrorsPage(
        items=items, total=sum(reasons.values()), offset=offset, limit=limit, reasons=dict(reasons.most_common())
    )
