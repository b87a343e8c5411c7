"""One way to run a real `qspace serve` for a test or a bench: a child process on a free port, handed over once
``/api/health`` answers, stopped (terminate, then kill) on the way out. Its output goes to a log file whose tail is
shown when it fails to start."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
API_ONLY = ("--no-worker", "--no-ui")


class ServerDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api"


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Poll ``{url}/api/health`` until it answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            why = f"exited with {process.returncode}" if process.poll() is not None else f"no answer in {timeout:.0f} s"
            raise ServerDidNotStart(f"qspace serve {why}; log {log}:\n{tail}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace)


@contextmanager
def served(
    env: Mapping[str, str],
    log: Path,
    options: Sequence[str] = API_ONLY,
    port: int | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> Iterator[Served]:
    """``python -m qspace serve --port P *options`` (or ``command`` + ``--port P``) with exactly ``env``."""
    port = port or free_port()
    argv = [*(command or [sys.executable, "-m", "qspace", "serve"]), "--port", str(port), *options]
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log, timeout)
        yield Served(url, process, log)
    finally:
        stop(process)
