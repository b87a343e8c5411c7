"""An ingest as a background job of the API process (``POST /api/datasets`` answers 202 with it at once).

Ingest is file reading and SQL, so it runs in a thread of the API process, no worker needed. It keeps
backend/ingest.py's one transaction: the dataset and the job's end (``done``, ``result.dataset_id``) commit
together, and a failure or a cancel rolls everything back, so nothing of it is ever seen half-written.

Progress counts bytes of the input files (known before the first record, so the bar is true from the start); the
samples read so far are in the message. It lives in memory (backend/local_jobs.py) because on SQLite the
ingest's transaction holds the only write lock; on PostgreSQL it is also written to the job row, so another API
process sees it (and a cancel there reaches this one). A server that stops mid-ingest loses the transaction
with it; its next start fails the job (:func:`fail_interrupted`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from backend import jobs, local_jobs
from backend.db import session_scope
from backend.ingest import IngestError, IngestOptions, IngestProgress, IngestReport, ingest
from backend.models import BackgroundJob, utcnow

KIND = "ingest"
UNIT = "byte"
MAX_INT = 2_147_483_647  # done/total are int32 columns: inputs beyond 2 GiB count in MiB
INTERRUPTED = "interrupted: the server stopped"
# One ingest at a time per process: on SQLite a second would wait on the first's write lock and give up after the
# busy timeout (30 s); queued behind it, it waits as long as it takes.
_ONE_AT_A_TIME = threading.Lock()
log = logging.getLogger(__name__)


def create_ingest_job(session: Session, opts: IngestOptions) -> int:
    """The queued job of an ingest of `opts` (committed by the caller, before :func:`start`)."""
    total = sum(p.stat().st_size for p in opts.paths if p.is_file())
    scale, unit = _scale(total)
    job = jobs.create_job(session, KIND, total=total // scale, unit=unit, message=f"ingest {opts.name!r}: queued")
    return job.id


def start(factory: sessionmaker[Session], job_id: int, opts: IngestOptions, created_by: str | None) -> None:
    """Run the ingest of the job in a daemon thread (registered first, so a cancel right away reaches it)."""
    local_jobs.register(job_id)
    thread = threading.Thread(
        target=run, args=(factory, job_id, opts, created_by), name=f"ingest-job-{job_id}", daemon=True
    )
    thread.start()


def run(factory: sessionmaker[Session], job_id: int, opts: IngestOptions, created_by: str | None) -> None:
    """The job's work: ingest in one transaction, end the job with it (done, failed or cancelled)."""
    live = local_jobs.live(job_id) or local_jobs.register(job_id)
    try:
        with _ONE_AT_A_TIME:  # queued meanwhile: a cancel ends it before it starts
            if not live.cancel.is_set():
                _run(factory, job_id, opts, created_by, live)
    except Exception as exc:  # never a silent thread: the job says what went wrong
        log.exception("ingest job %s", job_id)
        _end(factory, job_id, "failed", error=f"{type(exc).__name__}: {exc}"[:4000])
    finally:
        local_jobs.forget(job_id)


def _run(
    factory: sessionmaker[Session], job_id: int, opts: IngestOptions, created_by: str | None, live: Any
) -> None:
    with session_scope(factory) as session:
        if not jobs.advance(session, job_id, message=f"ingest {opts.name!r}: reading"):
            return  # cancelled before it started
    writer = jobs.JobProgress(factory, job_id)
    shared_rows = factory.kw["bind"].dialect.name != "sqlite"  # SQLite: the ingest holds the write lock

    def progress(p: IngestProgress) -> None:
        scale, unit = _scale(p.bytes_total)
        live.done, live.total, live.unit = p.bytes_done // scale, p.bytes_total // scale, unit
        live.message = f"ingest {opts.name!r}: {p.samples:,} samples read"
        if live.cancel.is_set():
            raise jobs.JobCancelled(f"job {job_id} was cancelled")
        if shared_rows:
            writer.step(live.done, live.total)  # raises JobCancelled when cancelled from another process

    session = factory()
    session.info["created_by"] = created_by  # the dataset records who asked for it (backend/tokens.py)
    try:
        report = ingest(session, opts, progress)
        if live.cancel.is_set():
            raise jobs.JobCancelled(f"job {job_id} was cancelled")
        # The job ends in the ingest's own transaction: a dataset exists exactly when its job is done.
        if not jobs.finish(session, job_id, "done", message=_summary(opts, report), result=_result(report)):
            raise jobs.JobCancelled(f"job {job_id} is no longer active")
        session.commit()
    except IngestError as exc:
        session.rollback()
        _end(factory, job_id, "failed", error=str(exc), message=f"ingest {opts.name!r}: nothing was ingested")
    except jobs.JobCancelled:
        session.rollback()
        _end(factory, job_id, "cancelled", message=f"ingest {opts.name!r}: cancelled, nothing was ingested")
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _end(factory: sessionmaker[Session], job_id: int, status: str, **kw: Any) -> None:
    live = local_jobs.live(job_id)
    with session_scope(factory) as session:
        if live is not None and live.total:  # how far it got, kept (also after a cancel that ended the row)
            session.execute(
                update(BackgroundJob)
                .where(BackgroundJob.id == job_id)
                .values(done=live.done, total=live.total, unit=live.unit)
                .execution_options(synchronize_session=False)
            )
        jobs.finish(session, job_id, status, **kw)  # a no-op when a cancel already ended it


def fail_interrupted(session: Session) -> int:
    """Fail the ingest jobs a stopped server left queued or running (their transaction died with it); returns
    how many. Called when the API starts."""
    q = update(BackgroundJob).where(BackgroundJob.kind == KIND, BackgroundJob.status.in_(jobs.ACTIVE))
    alive = local_jobs.live_ids()  # (an app built again in a process whose thread still ingests: a test)
    if alive:
        q = q.where(BackgroundJob.id.not_in(alive))
    done = session.execute(
        q.values(status="failed", error=INTERRUPTED, updated_at=utcnow()).execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def _scale(total: int) -> tuple[int, str]:
    return (1, UNIT) if total <= MAX_INT else (1 << 20, "MiB")


def _result(report: IngestReport) -> dict[str, Any]:
    return {
        "dataset_id": report.dataset_id,
        "n_samples": report.n_samples,
        "task_types": report.task_types,
        "duplicates_dropped": report.duplicates_dropped,
        "seconds": round(report.seconds, 3),
    }


def _summary(opts: IngestOptions, report: IngestReport) -> str:
    dropped = f"; {report.duplicates_dropped} duplicate ids dropped" if report.duplicates_dropped else ""
    return f"dataset {report.dataset_id} {opts.name!r}: {report.n_samples:,} samples in {report.seconds:.1f} s{dropped}"
