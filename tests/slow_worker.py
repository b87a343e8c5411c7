"""The qspace worker app with test hooks, for `celery -A tests.slow_worker worker` in the queue tests.

It is the production app (``workers.celery_app``) and tasks, with the scorer wrapped so a test can see and time
what happens inside a chunk. Hooks, from the environment of the worker process:

- ``QSPACE_TEST_SAMPLE_DELAY``: seconds to sleep after each scored sample (makes "mid-chunk" last);
- ``QSPACE_TEST_LOG_DIR``: each pool process appends the ids it scored to ``scored-<pid>.log`` and holds a
  ``busy-<pid>`` file while it is scoring a chunk;
- ``QSPACE_TEST_COMMIT_DELAY``: seconds the score-writing transaction stays open before its commit (so a test
  can drop its database connection mid-transaction).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import workers.scorers.registry  # noqa: F401 - torch and the scorers load once, before the pool forks
import workers.tasks as tasks
from backend.scorer_specs import ScoreItem, ScoreResult
from workers.celery_app import app

__all__ = ["app"]

SAMPLE_DELAY = float(os.environ.get("QSPACE_TEST_SAMPLE_DELAY", "0") or 0)
COMMIT_DELAY = float(os.environ.get("QSPACE_TEST_COMMIT_DELAY", "0") or 0)
LOG_DIR = Path(os.environ["QSPACE_TEST_LOG_DIR"]) if os.environ.get("QSPACE_TEST_LOG_DIR") else None


class _Observed:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def score(self, items: Iterable[ScoreItem]) -> Iterator[ScoreResult]:
        busy = LOG_DIR / f"busy-{os.getpid()}" if LOG_DIR else None
        log = open(LOG_DIR / f"scored-{os.getpid()}.log", "a") if LOG_DIR else None  # noqa: SIM115
        try:
            if busy is not None:
                busy.touch()
            for result in self.inner.score(items):
                if SAMPLE_DELAY:
                    time.sleep(SAMPLE_DELAY)
                if log is not None:
                    log.write(f"{result.sample_id}\n")
                    log.flush()
                yield result
        finally:
            if log is not None:
                log.close()
            if busy is not None:
                busy.unlink(missing_ok=True)


_get_scorer = tasks.get_scorer
_upsert_scores = tasks.upsert_scores


def _observed_scorer(*args: Any, **kwargs: Any) -> Any:
    return _Observed(_get_scorer(*args, **kwargs))


def _slow_upsert(session: Any, *args: Any, **kwargs: Any) -> Any:
    report = _upsert_scores(session, *args, **kwargs)
    if COMMIT_DELAY:
        session.flush()
        time.sleep(COMMIT_DELAY)  # the transaction is open ("idle in transaction") until the commit
    return report


tasks.get_scorer = _observed_scorer
tasks.upsert_scores = _slow_upsert
