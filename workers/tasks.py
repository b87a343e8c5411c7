"""Thin Celery tasks: sample ids in, fetch, score with a pure scorer, upsert, advance progress.

A chunk is idempotent: it skips samples that already have a result, and its results are written by
:func:`backend.queue.chunks.upsert_scores` keyed by (run, sample), so a redelivered chunk (its worker died
before the late acknowledgement) writes nothing twice. Database errors (a dropped connection, a restarting
server) are retried in place, then by re-sending the task; anything else fails the run with its message.
Models are loaded once per worker process (the scorer registry's cache, plus one scorer object per scorer here).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from celery.signals import worker_process_init
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from backend.db import make_engine, make_session_factory, session_scope
from backend.queue import GPU_QUEUE, PING_TASK, PUBLISH_RETRY_POLICY, SCORE_CHUNK_TASK
from backend.queue.attempts import POISON, SPLIT, Delivery, begin_delivery, end_quietly, finish_delivery, split_chunk
from backend.queue.chunks import ChunkWork, mark_failed, mark_running, prepare_chunk, run_status, upsert_scores
from backend.queue.embeddings import embeddings_dir
from backend.queue.finished import after_run_done
from backend.scorer_specs import ScoreResult
from backend.settings import Settings, get_settings
from workers.celery_app import app

log = logging.getLogger("qspace.worker")

T = TypeVar("T")

# Errors that say "the database is away for now", not "this chunk is bad".
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
CANCEL_POLL_S = 2.0  # while scoring, look at the run's status at most this often


class ScorerMismatch(RuntimeError):
    """The model on this worker hashes to another scorer key than the run's (changed since the run began)."""


class SplitNotSent(RuntimeError):
    """The halves of a chunk that kills its worker could not be enqueued (the broker refused them)."""


ChunkSender = Callable[[int, str, list[list[int]]], object]  # (run id, scorer key, chunks) -> enqueued


# --- per-process state ----------------------------------------------------------------------------------

_store: tuple[int, Settings, sessionmaker[Session]] | None = None
_scorers: dict[tuple[str, str, str | None], Any] = {}


@worker_process_init.connect
def _allow_loader_processes(**_: Any) -> None:
    """Prefork pool processes are daemonic, and a daemonic process may not start children; the scorers decode
    images in kept loader processes (workers/scorers/loader.py). Those exit with the pool process: each
    watches its parent."""
    import multiprocessing

    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]


def store() -> tuple[Settings, sessionmaker[Session]]:
    """Settings and a session factory of this process (engines are never shared across a fork)."""
    global _store
    if _store is None or _store[0] != os.getpid():
        settings = get_settings()
        kwargs: dict[str, Any] = {}
        if settings.sqlalchemy_url.startswith("postgresql"):
            kwargs["connect_args"] = {"application_name": "qspace-worker", "connect_timeout": 10}
        engine = make_engine(settings.sqlalchemy_url, **kwargs)
        _store = (os.getpid(), settings, make_session_factory(engine))
    return _store[1], _store[2]


def worker_device(settings: Settings) -> str | None:
    """The torch device of this worker process: settings (``--device``), else, when the machine has several
    GPUs, the pool process's index modulo the GPU count (``--concurrency N`` = one process per GPU), else the
    scorer's default (CUDA when present)."""
    if settings.worker_device:
        return settings.worker_device
    try:
        from billiard.process import current_process

        index = getattr(current_process(), "index", None)
    except ImportError:  # pragma: no cover - billiard comes with celery
        index = None
    if index is None:
        return None
    import torch

    n = torch.cuda.device_count()
    return f"cuda:{int(index) % n}" if n > 1 else None


def get_scorer(kind: str, params: dict[str, Any], key: str, device: str | None) -> Any:
    """The scorer of (kind, params) on `device`, built (and its key checked) once per process."""
    cache_key = (kind, json.dumps(params, sort_keys=True), device)
    scorer = _scorers.get(cache_key)
    if scorer is None:
        from backend.scorer_specs import scorer_key
        from workers.scorers.registry import build_scorer

        actual = scorer_key(kind, params)
        if actual != key:
            raise ScorerMismatch(
                f"the {kind} model on this worker gives scorer key {actual[:12]}, the run's is {key[:12]}: "
                "the checkpoint changed since the run was created (post the run again to score it as a new run)"
            )
        scorer = build_scorer(kind, params, device=device)
        _scorers[cache_key] = scorer
    return scorer


# --- one chunk ----------------------------------------------------------------------------------------------


def with_db_retry(fn: Callable[[], T], what: str, attempts: int = 10, delay: float = 0.5) -> T:
    """`fn()` again after a transient database error (about a minute in all), so that a dropped connection or
    a restarting server costs a reconnect, not the chunk's scoring work."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TRANSIENT_DB_ERRORS as exc:
            if attempt == attempts:
                raise
            log.warning("%s: database error, retry %d/%d in %.1f s: %s", what, attempt, attempts - 1, delay,
                        str(exc).splitlines()[0][:300])
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class ChunkReport:
    run_id: int
    received: int  # sample ids in the message
    already_done: int  # of which had a result before this delivery
    scored: int  # results computed now (including per-sample errors)
    inserted: int  # rows this delivery wrote (0 for a duplicate delivery)
    errors: int  # of the inserted rows, how many carry an error reason
    status: str | None  # the run's status afterwards
    skipped: str | None = None  # why nothing was done
    stopped: bool = False  # the run was cancelled while this chunk was being scored
    seconds: float = 0.0


def process_chunk(
    factory: sessionmaker[Session],
    settings: Settings,
    run_id: int,
    key: str,
    sample_ids: Sequence[int],
    device: str | None = None,
    send: ChunkSender | None = None,
) -> ChunkReport:
    """Score the samples of one chunk that have no result yet and write their results.

    With `send` (the queue's workers), deliveries are counted (backend/queue/attempts.py): a chunk whose worker
    died too often is split into halves enqueued through `send`, and a single sample that kills its worker gets
    an error row. Without it (scoring in-process) a death kills the caller and nothing redelivers.
    """
    t0 = time.perf_counter()
    what = f"run {run_id} chunk [{sample_ids[0] if sample_ids else '-'}..]"

    def prepare() -> Any:
        with session_scope(factory) as session:
            mark_running(session, run_id)  # a write first: on SQLite it takes the lock before any read
            work = prepare_chunk(session, run_id, key, sample_ids)
            delivery = None
            if send is not None and work.items and work.skip_reason is None:
                delivery = begin_delivery(session, run_id, sample_ids, len(work.items), settings.chunk_max_deliveries)
            return work, delivery

    work, delivery = with_db_retry(prepare, what)
    if work.skip_reason is not None:
        log.info("%s: skipped: %s", what, work.skip_reason)
        return ChunkReport(run_id, len(sample_ids), 0, 0, 0, 0, None, skipped=work.skip_reason)
    if delivery is not None and delivery.action == SPLIT and send is not None:
        return split_and_send(factory, send, work, delivery, what, t0)

    results: list[ScoreResult] = list(work.failed)
    stopped = False
    if delivery is not None and delivery.action == POISON:
        log.warning("%s: its worker died %d times: %s", what, delivery.deaths, delivery.poison_error())
        results.extend(ScoreResult(item.sample_id, None, delivery.poison_error()) for item in work.items)
    elif work.items:
        scorer = get_scorer(work.kind, work.params, key, device)
        polled = time.monotonic()
        for result in scorer.score(work.items):
            results.append(result)
            if time.monotonic() - polled > CANCEL_POLL_S:
                polled = time.monotonic()
                try:
                    with session_scope(factory) as session:
                        status = run_status(session, run_id)
                except TRANSIENT_DB_ERRORS:
                    status = "running"  # cannot tell now; the write below retries
                if status not in ("queued", "running"):
                    stopped = True
                    log.info("%s: run is %s; stopping after %d result(s)", what, status, len(results))
                    break
        if not stopped:
            seen = {r.sample_id for r in results}
            results.extend(
                ScoreResult(item.sample_id, None, "no result from the scorer")
                for item in work.items
                if item.sample_id not in seen
            )
        if work.params.get("keep_embeddings"):  # clip: the embeddings are on disk before the scores
            from workers.scorers.embeddings import write_kept

            folder = embeddings_dir(settings.data_dir, run_id, key)
            write_kept(scorer.kept, folder, {r.sample_id for r in results if r.error is None})
            scorer.kept.clear()

    def write() -> Any:
        with session_scope(factory) as session:
            report = upsert_scores(session, run_id, results, window_s=settings.progress_window_s)
            if delivery is not None:
                finish_delivery(session, delivery, POISON if delivery.action == POISON else "scored")
            return report

    written = with_db_retry(write, what)
    if written.finished:  # statistics for the planner, column files for the plane (backend/queue/finished.py)
        after_run_done(factory, settings.data_dir, run_id, keep_columns=settings.persist_columns)
    seconds = time.perf_counter() - t0
    log.info(
        "%s: %d scored, %d written (%d errors), %d already done, %.2f s, run %s",
        what, len(results), written.inserted, written.errors, work.already_done, seconds, written.status,
    )
    return ChunkReport(
        run_id,
        len(sample_ids),
        work.already_done,
        len(results),
        written.inserted,
        written.errors,
        written.status,
        stopped=stopped,
        seconds=seconds,
    )


def split_and_send(
    factory: sessionmaker[Session], send: ChunkSender, work: ChunkWork, delivery: Delivery, what: str, t0: float
) -> ChunkReport:
    """Instead of scoring a chunk that killed its worker too often: write what needs no scorer, record the
    split, enqueue the halves (after the commit, so their deliveries find their rows)."""
    ids = [item.sample_id for item in work.items]

    def record() -> Any:
        with session_scope(factory) as session:
            if work.failed:
                upsert_scores(session, work.run_id, work.failed)
            return split_chunk(session, delivery, ids)

    halves = with_db_retry(record, what)
    try:
        send(work.run_id, work.scorer_key, halves)
    except Exception as exc:
        raise SplitNotSent(f"{what}: the halves could not be enqueued: {exc}") from exc
    reason = f"its worker died {delivery.deaths} time(s): split into {'+'.join(str(len(h)) for h in halves)}"
    log.warning("%s: %s", what, reason)
    return ChunkReport(
        work.run_id, len(work.sample_ids), work.already_done, 0, 0, 0, None, skipped=reason,
        seconds=time.perf_counter() - t0,
    )  # fmt: skip


def send_chunks(run_id: int, key: str, chunks: list[list[int]]) -> int:
    """Enqueue chunks of a run from a worker, as the API does (backend.queue.TaskQueue.send_chunks)."""
    with app.producer_or_acquire() as producer:
        for ids in chunks:
            app.send_task(
                SCORE_CHUNK_TASK,
                args=[run_id, key, list(ids)],
                queue=GPU_QUEUE,
                producer=producer,
                retry_policy=PUBLISH_RETRY_POLICY,
                ignore_result=True,
                argsrepr=f"[{run_id}, {key[:12]!r}, <{len(ids)} sample ids>]",
            )
    return len(chunks)


def end_delivery_quietly(factory: sessionmaker[Session], run_id: int, sample_ids: Sequence[int]) -> None:
    """The delivery ended by an exception, not by the death of its process: say so, if the database lets us."""
    try:
        with session_scope(factory) as session:
            end_quietly(session, run_id, sample_ids)
    except Exception as exc:
        log.warning("run %d: could not record the end of a chunk's delivery: %s", run_id, exc)


def fail_run_quietly(factory: sessionmaker[Session], run_id: int, message: str) -> None:
    """Mark the run failed, unless the database is away too (then the chunk's retries/redelivery decide)."""
    try:
        with session_scope(factory) as session:
            mark_failed(session, run_id, message)
    except Exception:
        log.exception("run %d: could not record the failure %r", run_id, message)


# --- tasks ------------------------------------------------------------------------------------------------------


# ChunkRequest (in the worker's main process) records how a pool process that died mid-chunk ended.
@app.task(bind=True, name=SCORE_CHUNK_TASK, max_retries=None, Request="workers.chunk_request:ChunkRequest")
def score_chunk(self: Any, run_id: int, scorer_key: str, sample_ids: list[int]) -> dict[str, Any]:
    """Score one chunk of a run (idempotent; acknowledged only after its results are committed)."""
    settings, factory = store()
    try:
        report = process_chunk(
            factory, settings, run_id, scorer_key, sample_ids, device=worker_device(settings), send=send_chunks
        )
    except SplitNotSent as exc:
        raise self.retry(exc=exc, countdown=2.0, max_retries=settings.chunk_max_retries) from exc
    except TRANSIENT_DB_ERRORS as exc:
        end_delivery_quietly(factory, run_id, sample_ids)
        retries = int(self.request.retries or 0)
        if retries >= settings.chunk_max_retries:
            fail_run_quietly(factory, run_id, f"database unavailable after {retries} retries of a chunk: {exc}")
            raise
        # Short enough that the retry is taken before the Redis visibility timeout could redeliver it.
        countdown = min(2.0**retries, settings.visibility_timeout_s / 4, 60.0)
        raise self.retry(exc=exc, countdown=countdown, max_retries=settings.chunk_max_retries) from exc
    except Exception as exc:
        log.exception("run %d: chunk failed", run_id)
        end_delivery_quietly(factory, run_id, sample_ids)
        fail_run_quietly(factory, run_id, f"a chunk failed: {type(exc).__name__}: {exc}")
        raise
    return asdict(report)


@app.task(name=PING_TASK)
def ping() -> str:
    """A no-op on the default queue (checks that a worker consumes it)."""
    return "pong"
