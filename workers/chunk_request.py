"""How a worker process that died mid-chunk ended, as its worker's main process sees it.

A scoring chunk's pool process that dies (a segfault, an out-of-memory kill) cannot say so itself; the worker's
main process learns it from billiard ("Worker exited prematurely: signal 9 (SIGKILL)") before it hands the
message back to the broker. :class:`ChunkRequest` writes that into the chunk's delivery record
(``chunk_attempts.last_exit``), so the delivery that isolates a poison sample can name the signal or exit code
in its error row (backend/queue/attempts.py). Best effort: when the database does not answer at once, or the
whole worker died, the error row says "worker died" instead.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request
from sqlalchemy.pool import NullPool

from backend.db import make_engine, make_session_factory, session_scope
from backend.queue.attempts import record_exit
from backend.settings import get_settings

log = logging.getLogger("qspace.worker")

_HOW = re.compile(r"(signal \d+(?: \([A-Z0-9+]+\))?|exitcode -?\d+)")


def how_it_ended(exc: BaseException) -> str | None:
    """How a pool process ended ("signal 9 (SIGKILL)", "exitcode 3") from the exception it left behind."""
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return f"exitcode {code}"
    if isinstance(exc, WorkerLostError):
        found = _HOW.search(str(exc))
        return found.group(1) if found else str(exc)[:200] or "worker lost"
    return None


def record_lost_chunk(args: Any, how: str) -> None:
    """Write `how` into the delivery record of the chunk in `args` (run id, scorer key, sample ids)."""
    try:
        run_id, _key, sample_ids = args
        settings = get_settings()
        kwargs: dict[str, Any] = {"poolclass": NullPool}  # nothing kept open: the pool forks new processes from here
        if settings.sqlalchemy_url.startswith("postgresql"):
            kwargs["connect_args"] = {"application_name": "qspace-worker-main", "connect_timeout": 3}
        engine = make_engine(settings.sqlalchemy_url, **kwargs)
        try:
            with session_scope(make_session_factory(engine)) as session:
                record_exit(session, int(run_id), [int(i) for i in sample_ids], how)
        finally:
            engine.dispose()
    except Exception as exc:  # never let the bookkeeping stop the message from going back to the queue
        log.warning("could not record how a chunk's worker process ended (%s): %s", how, exc)


class ChunkRequest(Request):
    """The score_chunk task's request in the worker's main process."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # billiard wraps it in ExceptionWithTraceback
        how = how_it_ended(exc) if isinstance(exc, BaseException) else None
        if how is not None:
            log.warning("chunk %s: its worker process died (%s)", self.argsrepr or self.id, how)
            record_lost_chunk(self.args, how)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
