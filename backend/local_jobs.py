"""Jobs that a thread of this very process works on (an ingest started by the API): their live progress and a
cancel flag, kept in memory.

Why memory and not only the job row: on SQLite an ingest holds the store's one write lock for its whole
transaction (nothing is kept unless everything is), so neither its progress writes nor a cancel's write could
land until it ends. The API reads the live progress from here (:func:`backend.jobs.job_out`), and a cancel sets
the flag here first, which the ingest checks between batches, rolls back, and so frees the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class LocalJob:
    done: int = 0
    total: int = 0
    unit: str = ""
    message: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


_LOCK = threading.Lock()
_JOBS: dict[int, LocalJob] = {}


def register(job_id: int, total: int = 0, unit: str = "") -> LocalJob:
    with _LOCK:
        job = _JOBS[job_id] = LocalJob(total=total, unit=unit)
        return job


def forget(job_id: int) -> None:
    with _LOCK:
        _JOBS.pop(job_id, None)


def live(job_id: int) -> LocalJob | None:
    """The in-memory state of a job a thread of this process is working on now, or None."""
    with _LOCK:
        return _JOBS.get(job_id)


def live_ids() -> list[int]:
    with _LOCK:
        return list(_JOBS)


def request_cancel(job_id: int) -> bool:
    """Tell the thread working on the job to stop at its next check; False when no thread here works on it."""
    job = live(job_id)
    if job is None:
        return False
    job.cancel.set()
    return True
