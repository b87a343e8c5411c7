"""A Celery worker in this process: what `qspace worker` (and the embedded worker's child process) runs."""

from __future__ import annotations

import logging
import os

from backend.settings import Settings


def run_worker(
    settings: Settings,
    queues: str = "gpu,default",
    concurrency: int | None = None,
    device: str | None = None,
    pool: str | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process until it is told to stop (SIGTERM: finish the current chunk)."""
    if device:
        settings.worker_device = device  # the tasks read the process-wide settings (pool processes inherit it)
    from workers.celery_app import app

    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={hostname or f'qspace-{os.getpid()}@%h'}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if pool:
        argv.append(f"--pool={pool}")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.worker_main(argv)
