"""The stall sweeper: the API notices runs and experiment jobs that stopped moving because their work left the
queue (a broker restart lost the queued chunks, a server-less broker's worker was killed) and enqueues exactly
what is missing again, without anyone posting them again.

Every ``sweep_interval_s`` seconds a thread of the API process (started in the app's lifespan) sweeps, if it
holds the ``sweeper`` lease (a row of ``leases``: several API processes may run, one sweeps at a time; a holder
that died hands over when its lease expires):

- a queued or running run whose progress (``updated_at``: every written chunk moves it) is older than
  ``run_stale_s`` gets its missing samples enqueued again, as posting it again would do
  (:func:`backend.runs.resume_plan`): its ``updated_at`` moves on, so it is swept again only after another
  ``run_stale_s`` without progress;
- a queued experiment job idle for ``run_stale_s``, and a running one whose heartbeat is older than
  ``job_lease_s``, is sent again (a job is claimed once: a duplicate is skipped, a taken-over one resumes from
  its checkpoint).

Only when no message waits in the gpu queue: a stalled run behind a long queue is waiting, not lost. Duplicates
are harmless anyway (a chunk skips samples that have a result, a job is claimed once).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from backend.models import ExperimentJob, Lease, Run
from backend.queue.progress import ACTIVE, seconds_between, utcnow
from backend.runs import enqueue_plan, resume_plan
from backend.settings import Settings

log = logging.getLogger("qspace.sweeper")

LEASE_NAME = "sweeper"


class SweepSink(Protocol):
    """:class:`backend.queue.TaskQueue`, or a test double."""

    def waiting(self) -> int: ...

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Any) -> int: ...

    def send_train_jobs(self, job_ids: Any) -> int: ...


# --- the lease -------------------------------------------------------------------------------------------


def take_lease(session: Session, name: str, holder: str, ttl_s: float, now: datetime | None = None) -> bool:
    """Take or renew the lease `name` for `ttl_s` seconds (in the caller's transaction: commit it); False while
    another holder's lease runs."""
    from sqlalchemy.dialects import postgresql, sqlite

    now = now or utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(Lease)
        .values(name=name, holder=holder, expires_at=now - timedelta(seconds=1))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(taken, "rowcount", 0))


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=utcnow() - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )


# --- one sweep -------------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    leased: bool = True
    stale_runs: list[int] = field(default_factory=list)
    stale_jobs: list[int] = field(default_factory=list)
    waiting: int | None = None  # messages in the gpu queue (None: not asked)
    runs: dict[int, int] = field(default_factory=dict)  # run id -> samples enqueued again
    jobs: list[int] = field(default_factory=list)  # experiment jobs sent again


def _stale_jobs(session: Session, settings: Settings, now: datetime) -> list[int]:
    idle = now - timedelta(seconds=settings.run_stale_s)
    lost = now - timedelta(seconds=settings.job_lease_s)
    return list(
        session.scalars(
            select(ExperimentJob.id)
            .where(
                or_(
                    and_(ExperimentJob.status == "queued", ExperimentJob.updated_at < idle),
                    and_(
                        ExperimentJob.status == "running",
                        or_(ExperimentJob.heartbeat_at.is_(None), ExperimentJob.heartbeat_at < lost),
                        ExperimentJob.updated_at < lost,  # not sent again by the previous sweep
                    ),
                )
            )
            .order_by(ExperimentJob.id)
        )
    )


def sweep(factory: sessionmaker[Session], sink: SweepSink, settings: Settings, holder: str,
          now: datetime | None = None) -> SweepReport:  # fmt: skip
    """One sweep (see the module's docstring); the queue's exception when it refuses the work."""
    now = now or utcnow()
    ttl = max(3 * settings.sweep_interval_s, 30.0)
    with factory() as session:
        if not take_lease(session, LEASE_NAME, holder, ttl, now):
            session.commit()
            return SweepReport(leased=False)
        session.commit()
        cutoff = now - timedelta(seconds=settings.run_stale_s)
        stale_runs = list(
            session.scalars(select(Run.id).where(Run.status.in_(ACTIVE), Run.updated_at < cutoff).order_by(Run.id))
        )
        stale_jobs = _stale_jobs(session, settings, now)
    report = SweepReport(stale_runs=stale_runs, stale_jobs=stale_jobs)
    if not stale_runs and not stale_jobs:
        return report
    report.waiting = sink.waiting()
    if report.waiting:
        log.info("stalled: runs %s, jobs %s; %d message(s) still wait in the queue", stale_runs, stale_jobs,
                 report.waiting)  # fmt: skip
        return report
    for run_id in stale_runs:
        with factory() as session:
            run = session.scalar(select(Run).where(Run.id == run_id).with_for_update())
            idle = seconds_between(run.updated_at, now) if run is not None else None
            if run is None or run.status not in ACTIVE or idle is None or idle < settings.run_stale_s:
                continue  # it moved, finished or was swept by another process meanwhile
            plan = resume_plan(session, run, settings.chunk_size, now)
            session.commit()
            enqueue_plan(session, sink, plan)
            if plan.chunks:
                report.runs[run_id] = plan.n_samples
                log.warning("run %d: no progress for %.0f s and nothing queued: %d missing sample(s) enqueued again",
                            run_id, idle, plan.n_samples)  # fmt: skip
    if stale_jobs:
        with factory() as session:
            session.execute(
                update(ExperimentJob)
                .where(ExperimentJob.id.in_(stale_jobs), ExperimentJob.status.in_(ACTIVE))
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        sink.send_train_jobs(stale_jobs)
        report.jobs = stale_jobs
        log.warning("experiment jobs %s: stalled and nothing queued: sent again", stale_jobs)
    return report


# --- the thread -------------------------------------------------------------------------------------------


class Sweeper:
    """Sweeps every ``settings.sweep_interval_s`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], sink_factory: Callable[[], Any]) -> None:
        self.settings = settings
        self.factory = factory
        self.sink_factory = sink_factory
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="qspace-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sink = self.sink_factory()
        try:
            while not self._stop.wait(self.settings.sweep_interval_s):
                try:
                    sweep(self.factory, sink, self.settings, self.holder)
                except Exception as exc:  # the database or the broker is away: try again next time
                    log.warning("sweep failed: %s", str(exc).splitlines()[0][:300] if str(exc) else exc)
                self.sweeps += 1
        finally:
            close = getattr(sink, "close", None)
            if close is not None:
                close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            with self.factory() as session:
                release_lease(session, LEASE_NAME, self.holder)  # another process may take over at once
                session.commit()
        except Exception as exc:
            log.debug("could not release the sweeper lease: %s", exc)


@asynccontextmanager
async def sweeper_lifespan(app: Any) -> AsyncIterator[None]:
    """The FastAPI lifespan that runs a :class:`Sweeper` (unless ``sweep_interval_s`` is 0)."""
    from backend.queue import TaskQueue

    settings: Settings = app.state.settings
    sweeper: Sweeper | None = None
    if settings.sweep_interval_s > 0:
        sweeper = Sweeper(settings, app.state.session_factory, lambda: TaskQueue(settings))
        sweeper.start()
        app.state.sweeper = sweeper
    try:
        yield
    finally:
        if sweeper is not None:
            sweeper.stop()
