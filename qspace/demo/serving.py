"""Step 4a of the demo: the app served from a background thread, and its embedded scoring worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.settings import Settings
from qspace.demo.messages import DemoError, Echo, say
from qspace.server import build_app, loopback_url
from qspace.worker import EmbeddedWorker, requeue_after_restart, start_embedded_worker

# Two worker processes of one torch thread each: the demo's chunks and experiment jobs are small and independent,
# and on 2 cores two single-threaded jobs at a time finish sooner than one on two threads (a training job ran ~3x
# slower on 2 threads under contention; BENCHMARKS.md, "Does the loop have power?").
WORKER_PROCESSES = 2


class _Server:
    """uvicorn in a background thread (the main thread keeps the terminal and Ctrl-C)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="qspace-demo-server", daemon=True)
        self.where = f"{host}:{port}" if port else host

    def start(self, timeout: float = 60.0) -> int:
        """Start serving; returns the bound port."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the server did not start on {self.where} (is the port in use? try --port)")
            time.sleep(0.05)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class Services:
    """The running app: its base URL, and the embedded scoring worker (started on first need)."""

    def __init__(self, settings: Settings, server: _Server, port: int, echo: Echo) -> None:
        self.settings = settings
        self.server = server
        self.port = port
        self.base = loopback_url(settings.host, port)
        self.echo = echo
        self.worker: EmbeddedWorker | None = None
        self.log_path = settings.data_dir / "demo-worker.log"

    def ensure_worker(self) -> EmbeddedWorker:
        """Start the embedded worker (a real ``celery worker`` child process) unless it runs already. Runs that an
        interrupted earlier demo left unfinished are enqueued again first (a server-less broker loses the chunks its
        killed worker had taken)."""
        if self.worker is None:
            requeued = requeue_after_restart(self.settings)
            if requeued:
                self.echo(f"demo: unfinished runs enqueued again: {requeued}")
            self.worker = start_embedded_worker(
                self.settings,
                concurrency=WORKER_PROCESSES,
                log_path=self.log_path,
                requeue=False,
                env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            )
            self.echo(f"demo: scoring worker started (pid {self.worker.pid}, log {self.log_path})")
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def server_alive(self) -> bool:
        return self.server.thread.is_alive()


@contextmanager
def serving(settings: Settings, port: int, with_ui: bool, echo: Echo = say) -> Iterator[Services]:
    """The app (API, and the UI with ``with_ui``) on ``settings.host``:`port` (0 = any free port)."""
    server = _Server(build_app(settings, with_ui=with_ui), settings.host, port)
    bound = server.start()
    services = Services(settings, server, bound, echo)
    try:
        yield services
    finally:
        services.stop()
        server.stop()
