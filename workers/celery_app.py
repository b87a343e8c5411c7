"""The workers' Celery app, built from settings: ``celery -A workers.celery_app worker`` or ``qspace worker``.

Queues: ``gpu`` (scoring chunks; one worker process per GPU) and ``default`` (ingest, export and other CPU
jobs). The configuration (late acks, reject on worker loss, prefetch 1, the Redis visibility timeout) is shared
with the API's client in :func:`backend.queue.celery_config`.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from backend.queue import DEFAULT_QUEUE, GPU_QUEUE, celery_config
from backend.settings import Settings, get_settings


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("qspace", include=["workers.tasks", "workers.experiment_tasks", "workers.derived_tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.task_queues = (Queue(GPU_QUEUE), Queue(DEFAULT_QUEUE))
    return celery


app = make_app()
