"""The Celery *client* the API and the CLI enqueue work through, and the Celery configuration that the
workers (``workers/celery_app.py``) share with it.

The API sends tasks by name (``send_task``); it imports nothing from ``workers/`` and never imports torch.

Submodules: :mod:`backend.queue.chunks` is the worker side of a scoring run (prepare a chunk, write its
results), :mod:`backend.queue.progress` the statuses, clock and throughput both sides share. The API side of
runs (plan, submit, cancel, list) is :mod:`backend.runs`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from kombu.transport.sqlalchemy import Transport as _SqlaTransport

from backend.settings import Settings

log = logging.getLogger("qspace.queue")

# Task names: the contract between this client and workers/tasks.py.
SCORE_CHUNK_TASK = "qspace.score_chunk"
TRAIN_JOB_TASK = "qspace.train_job"  # one experiment job (workers/experiment_tasks.py); worker side: queue/jobs.py
PING_TASK = "qspace.ping"
DERIVED_RUN_TASK = "qspace.derived_run"  # projection / clusters / duplicates: one task per run (default queue)
EMBED_TEXT_TASK = "qspace.embed_text"  # text search: a CLIP run's text tower embeds a query (default queue)

GPU_QUEUE = "gpu"  # scoring: one worker process per GPU
DEFAULT_QUEUE = "default"  # ingest / export and other CPU jobs

# Publishing retries: a broker that is down must turn into a 503 within a few seconds, not hang the API.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}


class SqlaBrokerTransport(_SqlaTransport):
    """kombu's SQLAlchemy transport (the server-less broker) polling every 0.2 s instead of every second, so a
    worker picks up its next chunk quickly. (kombu hands every transport option to create_engine, so the
    interval cannot be given as an option.)"""

    polling_interval = 0.2


SQLA_TRANSPORT = f"{__name__}:SqlaBrokerTransport"


class QueueUnavailable(RuntimeError):
    """The broker cannot be reached (or refused a message); the API answers 503."""


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu transport options for the configured broker (settings' extras win)."""
    url = settings.celery_broker_url
    opts: dict[str, Any] = {}
    if is_redis(url):
        vt = settings.visibility_timeout_s
        opts = {
            # An unacknowledged chunk (its worker was SIGKILLed, its machine lost) goes back to the queue
            # once it has been out this long; a worker sweeps for such chunks every `unacked_restore_interval`
            # seconds (throttle 1: every sweep scans), so redelivery takes at most about vt + vt/5 seconds.
            "visibility_timeout": vt,
            "unacked_restore_interval": max(1, min(30, vt // 5)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 25,
        }
    elif url.startswith("sqla+sqlite"):
        # kombu hands these to create_engine: wait for the API's and the worker's writes to the one file.
        opts = {"connect_args": {"timeout": 30}}
    opts.update(settings.broker_transport_options)
    return opts


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the API's client and the workers' app."""
    broker_url = settings.celery_broker_url
    extra: dict[str, Any] = {}
    if broker_url.startswith("sqla+"):
        # The same transport, with a shorter polling interval: the URL loses its prefix (which would select
        # kombu's own class) and the transport is named instead.
        broker_url = broker_url.removeprefix("sqla+")
        extra["broker_transport"] = SQLA_TRANSPORT
    return {
        **extra,
        "broker_url": broker_url,
        "result_backend": settings.celery_result_backend,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "broker_channel_error_retry": True,
        # Progress and results live in the SQL store; Celery results are not needed.
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {SCORE_CHUNK_TASK: {"queue": GPU_QUEUE}, TRAIN_JOB_TASK: {"queue": GPU_QUEUE}},
        "task_create_missing_queues": True,
        # A chunk is acknowledged only after its scores are committed; a worker that dies mid-chunk leaves it
        # to be redelivered, and the (run, sample)-keyed upsert makes the second delivery write nothing twice.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A pool process that died mid-chunk is reported (and its chunk handed back) after this wait for a result
        # it may have sent before dying (Celery's default: 10 s). Results live in the store, so a chunk reported
        # lost after all is redelivered and writes nothing; a chunk that kills its worker (queue/attempts.py)
        # dies ~13 times before its poison sample is isolated, and each death costs this wait.
        "worker_lost_wait": 1.0,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "timezone": "UTC",
        "enable_utc": True,
    }


class TaskQueue:
    """Sends tasks by name to the configured broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = Celery("qspace-client", set_as_current=False)
        self.app.conf.update(celery_config(settings))

    @property
    def broker_url(self) -> str:
        return self.settings.celery_broker_url

    def _redacted(self) -> str:
        from kombu.utils.url import maybe_sanitize_url

        return str(maybe_sanitize_url(self.broker_url))

    def check(self) -> None:
        """QueueUnavailable unless the broker answers now."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=5)
        except Exception as exc:
            raise QueueUnavailable(f"the task queue at {self._redacted()} is unreachable: {exc}") from exc

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Iterable[Sequence[int]]) -> int:
        """One `score_chunk` task per chunk of sample ids, on the gpu queue; returns how many were sent."""
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for ids in chunks:
                    ids = list(ids)
                    self.app.send_task(
                        SCORE_CHUNK_TASK,
                        args=[run_id, scorer_key, ids],
                        queue=GPU_QUEUE,
                        producer=producer,
                        retry_policy=PUBLISH_RETRY_POLICY,
                        # Progress is in the store: no result to wait for (and no result subscription per task).
                        ignore_result=True,
                        argsrepr=f"[{run_id}, {scorer_key[:12]!r}, <{len(ids)} sample ids>]",
                    )
                    sent += 1
        except Exception as exc:
            raise QueueUnavailable(
                f"the task queue at {self._redacted()} refused work after {sent} chunk(s): {exc}"
            ) from exc
        return sent

    def send_train_jobs(self, job_ids: Iterable[int]) -> int:
        """One `train_job` task per experiment job id, on the gpu queue; returns how many were sent."""
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for job_id in job_ids:
                    self.app.send_task(
                        TRAIN_JOB_TASK,
                        args=[int(job_id)],
                        queue=GPU_QUEUE,
                        producer=producer,
                        retry_policy=PUBLISH_RETRY_POLICY,
                        ignore_result=True,
                    )
                    sent += 1
        except Exception as exc:
            raise QueueUnavailable(
                f"the task queue at {self._redacted()} refused work after {sent} job(s): {exc}"
            ) from exc
        return sent

    def send_derived(self, run_id: int, key: str) -> None:
        """The one task of a derived run (projection, clusters, duplicates), on the default queue."""
        try:
            self.app.send_task(
                DERIVED_RUN_TASK,
                args=[int(run_id), key],
                queue=DEFAULT_QUEUE,
                retry_policy=PUBLISH_RETRY_POLICY,
                ignore_result=True,
            )
        except Exception as exc:
            raise QueueUnavailable(f"the task queue at {self._redacted()} refused the run: {exc}") from exc

    def embed_text(self, run_id: int, text: str, timeout_s: float) -> list[float]:
        """The query embedded by run `run_id`'s CLIP text tower in a worker; waits for the answer.

        QueueUnavailable when the broker refuses it, TimeoutError when no worker answers in time."""
        try:
            result = self.app.send_task(
                EMBED_TEXT_TASK,
                args=[int(run_id), text],
                queue=DEFAULT_QUEUE,
                retry_policy=PUBLISH_RETRY_POLICY,
                ignore_result=False,
                expires=timeout_s,  # a worker that comes up later drops it: nobody waits any more
            )
        except Exception as exc:
            raise QueueUnavailable(f"the task queue at {self._redacted()} refused the query: {exc}") from exc
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            value = result.get(timeout=timeout_s, interval=0.05, propagate=True)
        except CeleryTimeout:
            raise TimeoutError(
                f"no worker answered within {timeout_s:.0f} s: is a worker consuming the '{DEFAULT_QUEUE}' queue?"
            ) from None
        finally:
            with contextlib.suppress(Exception):  # the result backend keeps no answer nobody will read
                result.forget()
        return [float(v) for v in value]

    def waiting(self, queue: str = GPU_QUEUE) -> int:
        """Messages waiting in `queue` (not those a worker has taken); QueueUnavailable when the broker does not
        answer. The stall sweeper re-enqueues a stalled run only when nothing waits: its chunks are lost."""
        try:
            with self.app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=5)
                channel = conn.default_channel
                return int(channel.queue_declare(queue=queue, passive=False).message_count)
        except Exception as exc:
            raise QueueUnavailable(f"the task queue at {self._redacted()} is unreachable: {exc}") from exc

    def close(self) -> None:
        self.app.close()
