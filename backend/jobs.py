"""Background jobs: long work outside the scoring queue (the demo's model training; later an ingest), with its
progress, as DESIGN.md's Job ``{id, kind, status, done, total, unit, error, result}``.

A job row is written by whoever does the work (:class:`JobProgress` in a child process, or the plain functions
below) and read by the API (``GET /api/jobs``, ``GET /api/jobs/{id}``). ``POST /api/jobs/{id}/cancel`` only sets
the status: the worker finds out at its next progress write (every write is conditional on the job still being
active, so a cancelled job is never set running again) and stops with :class:`JobCancelled`.

Status: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A running job's worker writes at least
every :data:`BEAT_S` seconds (:meth:`JobProgress.heartbeat`); a running job silent for :data:`STALE_S` seconds lost
its process (a closed terminal, a killed demo) and is failed when jobs are next read (:func:`expire_stale`), so no
page waits for it forever.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from backend import local_jobs
from backend.datasets import NotFound
from backend.db import session_scope
from backend.job_schemas import JobOut
from backend.models import BackgroundJob, utcnow

ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled")
MAX_LIST = 200  # newest first: a list is for showing, not for archaeology
BEAT_S = 10.0  # a running job's worker writes at least this often
STALE_S = 120.0  # a running job silent this long lost its process


class JobConflict(ValueError):
    """The job is in a state that refuses the request (cancelling a finished job): HTTP 409."""


class JobCancelled(RuntimeError):
    """The job is no longer active (cancelled, or finished elsewhere): whoever works on it stops."""


# --- create, read ----------------------------------------------------------------------------------------------


def create_job(
    session: Session,
    kind: str,
    *,
    dataset_id: int | None = None,
    total: int = 0,
    unit: str = "",
    message: str | None = None,
) -> BackgroundJob:
    job = BackgroundJob(
        kind=kind, dataset_id=dataset_id, status="queued", done=0, total=total, unit=unit, message=message
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> BackgroundJob:
    job = session.get(BackgroundJob, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    *,
    dataset_id: int | None = None,
    active: bool | None = None,
    kind: str | None = None,
    limit: int = MAX_LIST,
) -> list[BackgroundJob]:
    """Jobs, newest first; only a dataset's, only active (or only finished) ones, only of a kind."""
    q = select(BackgroundJob)
    if dataset_id is not None:
        q = q.where(BackgroundJob.dataset_id == dataset_id)
    if active is not None:
        q = q.where(BackgroundJob.status.in_(ACTIVE) if active else BackgroundJob.status.in_(TERMINAL))
    if kind is not None:
        q = q.where(BackgroundJob.kind == kind)
    return list(session.scalars(q.order_by(BackgroundJob.id.desc()).limit(limit)))


def job_out(job: BackgroundJob) -> JobOut:
    # A job a thread of this process works on reports its progress in memory (backend/local_jobs.py).
    live = local_jobs.live(job.id) if job.status in ACTIVE else None
    if live is not None and not live.total:
        live = None  # registered, nothing reported yet: the row says it all
    return JobOut(
        id=job.id,
        kind=job.kind,
        status="running" if live is not None else job.status,
        done=live.done if live is not None else job.done,
        total=live.total if live is not None else job.total,
        unit=live.unit if live is not None and live.unit else job.unit,
        error=job.error,
        result=job.result,
        dataset_id=job.dataset_id,
        message=live.message if live is not None and live.message else job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


# --- progress and ends (conditional: a job that is no longer active is never touched again) ---------------------


def advance(
    session: Session,
    job_id: int,
    *,
    done: int | None = None,
    total: int | None = None,
    unit: str | None = None,
    message: str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """Mark the job running with this progress; False (nothing written) when it is no longer active."""
    values: dict[str, Any] = {"status": "running", "updated_at": utcnow()}
    for name, value in (("done", done), ("total", total), ("unit", unit), ("message", message), ("result", result)):
        if value is not None:
            values[name] = value
    return _update_active(session, job_id, values)


def finish(
    session: Session,
    job_id: int,
    status: str = "done",
    *,
    error: str | None = None,
    message: str | None = None,
    result: dict[str, Any] | None = None,
) -> bool:
    """End an active job as done, failed or cancelled; False when it had ended already (e.g. cancelled)."""
    if status not in TERMINAL:
        raise ValueError(f"a job ends as one of {TERMINAL}, not {status!r}")
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if error is not None:
        values["error"] = error
    if message is not None:
        values["message"] = message
    if result is not None:
        values["result"] = result
    if status == "done":  # a finished job shows a full bar
        row = session.get(BackgroundJob, job_id)
        if row is not None and row.total:
            values["done"] = row.total
    return _update_active(session, job_id, values)


def abandon(session: Session, *, kind: str, dataset_id: int | None, reason: str) -> int:
    """Fail the active jobs of (kind, dataset) whose process is gone (a new one is about to start); returns how
    many."""
    q = update(BackgroundJob).where(BackgroundJob.kind == kind, BackgroundJob.status.in_(ACTIVE))
    q = q.where(BackgroundJob.dataset_id.is_(None) if dataset_id is None else BackgroundJob.dataset_id == dataset_id)
    done = session.execute(
        q.values(status="failed", error=reason, updated_at=utcnow()).execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def expire_stale(session: Session, stale_s: float = STALE_S, now: datetime | None = None) -> int:
    """Fail the running jobs whose worker has been silent for `stale_s` seconds; returns how many. Reads first
    and writes only when there is something to fail (the pages poll the job list every second or two)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stale_s)
    # A job a thread of this process works on is alive whatever its row says (an ingest on SQLite cannot write).
    alive = set(local_jobs.live_ids())
    stale = [
        i
        for i in session.scalars(
            select(BackgroundJob.id).where(BackgroundJob.status == "running", BackgroundJob.updated_at < cutoff)
        )
        if i not in alive
    ]
    if not stale:
        return 0
    error = f"no sign of life for over {stale_s:.0f} s: the process that ran it is gone"
    done = session.execute(
        update(BackgroundJob)
        .where(BackgroundJob.id.in_(stale), BackgroundJob.status == "running", BackgroundJob.updated_at < cutoff)
        .values(status="failed", error=error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def cancel_job(session: Session, job: BackgroundJob) -> BackgroundJob:
    """Cancel a queued or running job (its worker stops at its next progress write). Idempotent; 409 for a job
    that is done or failed."""
    if job.status == "cancelled":
        return job
    if job.status not in ACTIVE:
        raise JobConflict(f"job {job.id} is already {job.status}")
    # A thread of this process working on it stops (and, on SQLite, frees the write lock) before the write below.
    local_jobs.request_cancel(job.id)
    # Conditional, like every other write: a job that ended meanwhile (an ingest committing) stays as it ended.
    if not _update_active(session, job.id, {"status": "cancelled", "message": "cancelled", "updated_at": utcnow()}):
        session.refresh(job)
        if job.status != "cancelled":
            raise JobConflict(f"job {job.id} is already {job.status}")
        return job
    session.refresh(job)
    return job


def _update_active(session: Session, job_id: int, values: dict[str, Any]) -> bool:
    done = session.execute(
        update(BackgroundJob)
        .where(BackgroundJob.id == job_id, BackgroundJob.status.in_(ACTIVE))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


# --- the worker's side -------------------------------------------------------------------------------------------


class JobProgress:
    """Writes one job's progress from the process that does the work, each write in its own transaction.

    Steps are written at most every `every_s` seconds (a step counter may tick hundreds of times a second);
    messages at once. Every write raises :class:`JobCancelled` when the job is no longer active.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        job_id: int,
        every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.job_id = job_id
        self.every_s = every_s
        self.clock = clock
        self.done = 0
        self.total = 0
        self._written_at: float | None = None

    def step(self, done: int, total: int) -> None:
        """`done` of `total` units; written when due (or when the work is complete)."""
        self.done, self.total = done, total
        now = self.clock()
        if self._written_at is None or now - self._written_at >= self.every_s or done >= total:
            self._write(done=done, total=total)

    def say(self, message: str, result: dict[str, Any] | None = None) -> None:
        """What the work is doing now, in words (written at once; given one, with what it has produced)."""
        self._write(message=message[:2000], result=result)

    def beat(self) -> None:
        """A sign of life, nothing else (the job stays running, or this raises :class:`JobCancelled`)."""
        self._write()

    @contextlib.contextmanager
    def heartbeat(self, every_s: float = BEAT_S) -> Iterator[None]:
        """A sign of life every `every_s` seconds from a thread while the block runs, also through long steps
        that report nothing (rendering a corpus, loading a model). The thread stops with the block, or when the
        job is no longer active (the next progress write tells the work itself)."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every_s):
                try:
                    self.beat()
                except Exception:  # cancelled, or the store unreachable for a moment: the work's writes tell
                    return

        thread = threading.Thread(target=run, name=f"job-{self.job_id}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def finish(self, status: str = "done", **kw: Any) -> bool:
        with session_scope(self.factory) as session:
            return finish(session, self.job_id, status, **kw)

    def _write(self, **values: Any) -> None:
        with session_scope(self.factory) as session:
            alive = advance(session, self.job_id, **values)
        self._written_at = self.clock()
        if not alive:
            raise JobCancelled(f"job {self.job_id} is no longer active")
