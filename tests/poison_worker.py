"""The qspace worker app with a poison sample, for `celery -A tests.poison_worker worker` in the poison-chunk
tests: the production app and tasks (with the hooks of tests/slow_worker.py), whose scorer process dies hard
whenever it scores a sample that holds a marker text, on every delivery, as a decoder segfault or an
out-of-memory kill on one giant image would.

- ``QSPACE_TEST_POISON``: the marker; a sample whose conversation contains it kills the scoring process;
- ``QSPACE_TEST_POISON_EXIT``: die by ``os._exit(<this code>)``; unset: SIGKILL to itself.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
from typing import Any

import tests.slow_worker  # noqa: F401 - the production app and tasks with the slow worker's hooks
import workers.tasks as tasks
from backend.scorer_specs import ScoreItem, ScoreResult
from workers.celery_app import app

__all__ = ["app"]

POISON = os.environ.get("QSPACE_TEST_POISON", "")
POISON_EXIT = os.environ.get("QSPACE_TEST_POISON_EXIT", "")


def die() -> None:
    if POISON_EXIT:
        os._exit(int(POISON_EXIT))
    os.kill(os.getpid(), signal.SIGKILL)


class _Poisoned:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def score(self, items: Iterable[ScoreItem]) -> Iterator[ScoreResult]:
        items = list(items)
        poison = {
            item.sample_id
            for item in items
            if POISON and any(POISON in str(turn.get("value", "")) for turn in item.conversations)
        }
        for result in self.inner.score(items):
            if result.sample_id in poison:
                die()
            yield result


_get_scorer = tasks.get_scorer


def _poisoned_scorer(*args: Any, **kwargs: Any) -> Any:
    return _Poisoned(_get_scorer(*args, **kwargs))


tasks.get_scorer = _poisoned_scorer
