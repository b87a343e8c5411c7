"""Scoring runs, the API side: create-or-resume, chunks of sample ids to enqueue, cancel, listing and errors.

A run is (dataset, scorer key). Its work is split into chunks of sample ids, enqueued here and scored by the
workers, which write their results through :mod:`backend.queue.chunks` (the worker side: an idempotent upsert
keyed by (run, sample)). Posting the same scorer on the same dataset again resumes the run: only samples
without a stored result are enqueued.

Status: ``queued`` (enqueued, nothing started) -> ``running`` (a chunk started) -> ``done`` (every sample has
a result); ``cancelled`` (further chunks are skipped) and ``failed`` (a chunk failed for a reason other than a
bad sample) stop it; posting it again resumes it. Progress and ETA: :mod:`backend.queue.progress`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from backend.datasets import NotFound, get_dataset
from backend.db import commit_create_or_resume
from backend.derived_specs import is_derived
from backend.models import Dataset, Run, Sample, Score
from backend.queue.progress import ACTIVE, aware, progress, recount, seconds_between, utcnow
from backend.queue.progress import TERMINAL as TERMINAL  # for callers that follow a run to its end
from backend.run_schemas import RunErrorOut, RunErrorsPage, RunOut
from backend.scorer_specs import scorer_key, validate_params


class RunConflict(ValueError):
    """The run is in a state that refuses the request (e.g. cancelling a finished run): HTTP 409."""


class ChunkSink(Protocol):
    """Where chunks go: :class:`backend.queue.TaskQueue`, or a test double."""

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Iterable[Sequence[int]]) -> int: ...


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


# --- what the API shows ----------------------------------------------------------------------------------


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
        created_at=aware(run.created_at) or utcnow(),
        started_at=aware(run.started_at),
        finished_at=aware(run.finished_at),
        updated_at=aware(run.updated_at),
        created_by=run.created_by,
    )


# --- create or resume ----------------------------------------------------------------------------------


_SNAPSHOT = (
    "status", "message", "started_at", "finished_at", "samples_per_s", "total", "done", "errors",
    "updated_at",  # a plan that could not be enqueued did not move the run: it stays stale, swept again
)  # fmt: skip


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
        idle = seconds_between(run.updated_at, now)
        if idle is None or idle < stale_s:
            return RunPlan(run, [], created=False)
    return resume_plan(session, run, chunk_size, now)


def resume_plan(session: Session, run: Run, chunk_size: int, now: datetime | None = None) -> RunPlan:
    """The missing samples of an existing run, in chunks to enqueue (none left: it becomes ``done``): a finished,
    failed or cancelled run is queued again; an active one (stale: the caller decided) keeps its clock."""
    now = now or utcnow()
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
        idle_s = seconds_between(run.updated_at, now) or 0.0
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
    plan = commit_create_or_resume(session, lambda: plan_run(session, dataset, kind, params, chunk_size, stale_s))
    enqueue_plan(session, sink, plan)
    session.refresh(plan.run)
    return plan.run


def enqueue_plan(session: Session, sink: ChunkSink, plan: RunPlan) -> None:
    """Send a committed plan's chunks; when the queue fails, undo the plan (:func:`abandon_plan`) and re-raise."""
    if not plan.chunks:
        return
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


def requeue_active_runs(session: Session, sink: ChunkSink, chunk_size: int) -> dict[int, int]:
    """Enqueue the missing samples of every queued or running run again; {run id: samples enqueued}.

    For a server-less broker, whose delivered-but-unacknowledged chunks die with the worker, when the server
    starts a fresh worker. Duplicates are harmless: a chunk skips samples that already have a result.
    """
    out: dict[int, int] = {}
    for run in session.scalars(select(Run).where(Run.status.in_(ACTIVE)).order_by(Run.id)):
        if is_derived(run.kind):  # one whole-run task, not chunks; its claim takes over a dead worker's lease
            send = getattr(sink, "send_derived", None)
            if send is not None:
                send(run.id, run.scorer_key)
                out[run.id] = run.total
            continue
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
