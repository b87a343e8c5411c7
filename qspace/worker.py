"""The embedded worker of `qspace serve` and `qspace demo`: a real `celery worker` child process
(`python -m qspace worker`) on the configured broker (by default the server-less SQLite one in the data directory),
stopped with the server.

The child gets its settings through ``QSPACE_*`` variables built from the server's settings object, so both
processes agree on the database and the broker even when the settings were not read from the environment. It finds
the `qspace` package the way this process did: installed (``pip install -e .``), not through ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from backend.settings import Settings

log = logging.getLogger("qspace.embedded")

ENV_PREFIX = "QSPACE_"


def settings_env(settings: Settings) -> dict[str, str | None]:
    """``QSPACE_*`` variables that rebuild `settings` in a child process (None: unset it there)."""
    out: dict[str, str | None] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        key = ENV_PREFIX + name.upper()
        if value is None:
            out[key] = None
        elif isinstance(value, list | tuple | dict):
            out[key] = json.dumps(value, default=str)
        else:
            out[key] = str(value)
    # Explicit, so the child never falls back to a different default.
    out[ENV_PREFIX + "DATABASE_URL"] = settings.sqlalchemy_url
    out[ENV_PREFIX + "BROKER_URL"] = settings.celery_broker_url
    out[ENV_PREFIX + "RESULT_BACKEND"] = settings.celery_result_backend
    return out


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings` as ``QSPACE_*`` variables."""
    env = dict(os.environ)
    for key, value in settings_env(settings).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM when the server that started it dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def uses_serverless_broker(settings: Settings) -> bool:
    return settings.celery_broker_url.startswith(("sqla+", "filesystem:"))


class EmbeddedWorker:
    """Handle on the worker child process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """Warm shutdown (the current chunk finishes and is acknowledged), then cold, then SIGKILL."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("embedded worker %d did not stop on %s", self.pid, signal.Signals(sig).name)
        return self.process.poll()


def requeue_after_restart(settings: Settings) -> dict[int, int]:
    """Enqueue again the missing samples of runs left queued or running. A server-less broker loses the chunks
    its worker had taken when that worker was killed (only Redis redelivers them), and a fresh embedded worker
    means the previous one is gone. Duplicates cost nothing: chunks skip samples that have a result. Experiment jobs
    left queued or running are sent again too (a job is claimed once; a redelivered one resumes from its checkpoint);
    the returned mapping counts runs only."""
    from backend.db import make_engine, make_session_factory
    from backend.experiments import requeue_active_jobs
    from backend.queue import TaskQueue
    from backend.runs import requeue_active_runs

    engine = make_engine(settings.sqlalchemy_url)
    queue = TaskQueue(settings)
    try:
        with make_session_factory(engine)() as session:
            runs = requeue_active_runs(session, queue, settings.chunk_size)
            jobs = requeue_active_jobs(session, queue)
            if jobs:
                log.info("experiment jobs enqueued again: %s", jobs)
            return runs
    finally:
        queue.close()
        engine.dispose()


def start_embedded_worker(
    settings: Settings,
    queues: str = "gpu,default",
    concurrency: int | None = None,
    pool: str | None = None,
    log_path: Path | None = None,
    requeue: bool = True,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> EmbeddedWorker:
    """Start `qspace worker` as a child process on `settings`' broker and database (``env``: more variables)."""
    settings.ensure_dirs()
    cmd = [
        sys.executable,
        "-m",
        "qspace",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency or settings.worker_concurrency),
    ]
    if pool:
        cmd += ["--pool", pool]
    cmd += extra_args or []
    with contextlib.ExitStack() as stack:
        kwargs: dict[str, Any] = {}
        if log_path is not None:  # the child gets its own copy of the descriptor
            kwargs.update(stdout=stack.enter_context(open(log_path, "ab")), stderr=subprocess.STDOUT)
        process = subprocess.Popen(
            cmd,
            env={**child_environment(settings), **(env or {})},
            start_new_session=True,  # Ctrl-C in the terminal reaches the server, which stops the worker itself
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            **kwargs,
        )
    log.info("embedded worker started (pid %d, broker %s)", process.pid, settings.celery_broker_url.split("://")[0])
    handle = EmbeddedWorker(process)
    if requeue and uses_serverless_broker(settings):

        def _requeue() -> None:
            try:
                found = requeue_after_restart(settings)
            except Exception as exc:
                log.warning("could not re-enqueue unfinished runs: %s", exc)
                return
            for run_id, n in found.items():
                log.info("run %d: %d unscored sample(s) enqueued again", run_id, n)

        threading.Thread(target=_requeue, name="qspace-requeue", daemon=True).start()
    return handle
