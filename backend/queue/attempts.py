"""Deliveries of a scoring chunk: a chunk that kills its worker on every delivery (a decoder segfault, an
out-of-memory kill on one giant image) is split until the one sample that does it is isolated, instead of being
redelivered forever.

Both brokers hand a chunk whose worker process died back to the queue (late acknowledgement and reject on worker
loss: Redis, and the server-less SQLite broker while the worker's main process lives), so the store keeps the
count. A delivery with samples to score records its start (who: host, pid and the pid's start time) in
``chunk_attempts`` before scoring, and its end in the transaction that writes the chunk's scores. A delivery that
finds a start without an end knows that the previous delivery's worker died, unless that start is its own
process's or another process's on this host that still runs (a retry after a database error, a concurrent copy).

Once a chunk's worker died ``chunk_max_deliveries`` times, its next delivery does not score it: it splits it in
halves, enqueued as new chunks whose rows say ``depth`` + 1; a half is split again after a single death (a sample
in it is known to kill its worker). A single sample whose worker died ``chunk_max_deliveries`` times gets an error
row, "worker died while scoring this sample: <how>", and the rest of the run finishes. For a 256-sample chunk and
the default of 3 that is 3 + 7 + 3 deaths. How a process ended ("signal 9 (SIGKILL)", "exitcode 3") is recorded by
the worker's main process, which sees its pool process die (workers/chunk_request.py); when the whole worker died,
nobody saw it.

The rows of a run are deleted when it is done (:func:`forget_run`).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend.models import ChunkAttempt
from backend.queue.progress import utcnow

SCORE, SPLIT, POISON = "score", "split", "poison"
POISON_REASON = "worker died while scoring this sample"


def chunk_key(sample_ids: Sequence[int]) -> str:
    """The chunk's identity: a redelivered message carries the same ids, hence the same key."""
    text = ",".join(str(i) for i in sorted({int(i) for i in sample_ids}))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


# --- who runs a delivery --------------------------------------------------------------------------------


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a live process from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int | None = None) -> str:
    """``host pid start`` of this (or another local) process."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()} {pid} {_start_ticks(pid) or '-'}"


def still_running(identity: str | None, me: str | None = None) -> bool:
    """Whether the process that `identity` names runs now: this process, or a live one on this host."""
    if not identity:
        return False
    me = me or process_identity()
    if identity == me:
        return True
    host, _, rest = identity.partition(" ")
    pid_text, _, start = rest.partition(" ")
    if host != me.split(" ", 1)[0] or not pid_text.isdigit():
        return False  # another machine: its worker cannot be asked, and a start without an end means it died
    pid = int(pid_text)
    if start and start != "-":
        return _start_ticks(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- one delivery --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a delivery of a chunk found and must do: ``score`` it, ``split`` it, or give its one sample the
    ``poison`` error row."""

    run_id: int
    key: str
    number: int  # deliveries of this chunk so far, this one included
    deaths: int  # of which died mid-chunk
    depth: int
    last_exit: str | None
    action: str
    worker: str

    def poison_error(self) -> str:
        how = self.last_exit or "worker died"
        return f"{POISON_REASON}: {how} (delivered {self.deaths} times)"


def _insert_ignoring_existing(session: Session, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(ChunkAttempt).values(rows).on_conflict_do_nothing(index_elements=["run_id", "chunk_key"]))


def begin_delivery(
    session: Session,
    run_id: int,
    sample_ids: Sequence[int],
    todo: int,
    max_deaths: int,
    worker: str | None = None,
    now: datetime | None = None,
) -> Delivery:
    """Record that this process starts a delivery of the chunk (in the caller's transaction: commit it before
    scoring) and decide what it does; `todo` is how many of its samples still need scoring."""
    now = now or utcnow()
    worker = worker or process_identity()
    key = chunk_key(sample_ids)
    _insert_ignoring_existing(
        session,
        [{"run_id": run_id, "chunk_key": key, "size": len(set(sample_ids)), "depth": 0, "deliveries": 0, "deaths": 0}],
    )
    row = session.scalar(
        select(ChunkAttempt)
        .where(ChunkAttempt.run_id == run_id, ChunkAttempt.chunk_key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None  # inserted above, or already there (a row is deleted only with its run, once done)
    died = row.started_at is not None and row.finished_at is None and not still_running(row.worker, worker)
    if died:
        row.deaths += 1
    last_exit = row.last_exit if died else None  # how the previous delivery's process ended, if anyone saw it
    row.deliveries += 1
    limit = max_deaths if row.depth == 0 else 1
    if todo > 1 and row.deaths >= limit:
        action = SPLIT
    elif todo == 1 and row.deaths >= max_deaths:
        action = POISON
    else:
        action = SCORE
    row.worker, row.started_at, row.finished_at, row.outcome, row.last_exit = worker, now, None, None, None
    session.flush()
    return Delivery(run_id, key, row.deliveries, row.deaths, row.depth, last_exit, action, worker)


def finish_delivery(session: Session, delivery: Delivery, outcome: str, now: datetime | None = None) -> None:
    """Record the delivery's end (in the transaction that writes its scores); nothing if the row is gone (the run
    finished and its rows were deleted) or another delivery started since."""
    session.execute(
        update(ChunkAttempt)
        .where(
            ChunkAttempt.run_id == delivery.run_id,
            ChunkAttempt.chunk_key == delivery.key,
            ChunkAttempt.worker == delivery.worker,
            ChunkAttempt.finished_at.is_(None),
        )
        .values(finished_at=now or utcnow(), outcome=outcome[:16])
        .execution_options(synchronize_session=False)
    )


def end_quietly(session: Session, run_id: int, sample_ids: Sequence[int], outcome: str = "error") -> None:
    """This process's delivery of the chunk ended by an exception (it did not die): not a death."""
    session.execute(
        update(ChunkAttempt)
        .where(
            ChunkAttempt.run_id == run_id,
            ChunkAttempt.chunk_key == chunk_key(sample_ids),
            ChunkAttempt.worker == process_identity(),
            ChunkAttempt.finished_at.is_(None),
        )
        .values(finished_at=utcnow(), outcome=outcome[:16])
        .execution_options(synchronize_session=False)
    )


def split_chunk(session: Session, delivery: Delivery, sample_ids: Sequence[int]) -> list[list[int]]:
    """Halves of `sample_ids` (the chunk's samples still to score), registered one level deeper, and this
    delivery recorded as ended by the split; enqueue the halves after the commit."""
    ids = list(dict.fromkeys(int(i) for i in sample_ids))
    mid = len(ids) // 2
    halves = [h for h in (ids[:mid], ids[mid:]) if h]
    _insert_ignoring_existing(
        session,
        [
            {"run_id": delivery.run_id, "chunk_key": chunk_key(h), "size": len(h), "depth": delivery.depth + 1,
             "deliveries": 0, "deaths": 0}
            for h in halves
        ],
    )  # fmt: skip
    finish_delivery(session, delivery, SPLIT)
    return halves


def record_exit(session: Session, run_id: int, sample_ids: Sequence[int], how: str) -> int:
    """How the process of the chunk's unfinished delivery ended (seen by the worker's main process)."""
    result = session.execute(
        update(ChunkAttempt)
        .where(
            ChunkAttempt.run_id == run_id,
            ChunkAttempt.chunk_key == chunk_key(sample_ids),
            ChunkAttempt.finished_at.is_(None),
        )
        .values(last_exit=how[:500])
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def forget_run(session: Session, run_id: int) -> None:
    """Drop the run's delivery records (it is done: nothing of it is delivered for scoring again)."""
    session.execute(delete(ChunkAttempt).where(ChunkAttempt.run_id == run_id))
