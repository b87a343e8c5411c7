"""Helpers of the queue tests: synthetic datasets with images, real worker processes, waiting for runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.ingest import IngestOptions, ingest
from backend.models import Run, Score
from backend.settings import Settings
from qspace.worker import child_environment

REPO = Path(__file__).resolve().parent.parent
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def write_dataset(
    root: Path, n: int, corrupt: Iterable[int] = (), missing: Iterable[int] = (), text_only: Iterable[int] = ()
) -> Path:
    """`n` LLaVA-format samples under `root` (data.json + images/), answers of varied length; the samples
    numbered in `corrupt` get a file that is not an image, those in `missing` a path with no file."""
    corrupt, missing, text_only = set(corrupt), set(missing), set(text_only)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        color = COLORS[i % len(COLORS)]
        answer = " ".join([f"The square is {color}."] * (1 + i % 5))
        record: dict[str, object] = {
            "id": f"s{i:05d}",
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat color is the shape number {i}?"},
                {"from": "gpt", "value": answer},
            ],
        }
        if i not in text_only:
            rel = f"images/{i:05d}.png"
            record["image"] = rel
            if i in corrupt:
                (root / rel).write_bytes(b"this is not a PNG file" * 4)
            elif i not in missing:
                Image.new("RGB", (24, 24), color).save(root / rel)
        records.append(record)
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return path


def ingest_dataset(factory: sessionmaker[Session], path: Path, name: str) -> int:
    with factory() as session:
        report = ingest(session, IngestOptions(name=name, paths=[path], image_root=path.parent))
        session.commit()
        return report.dataset_id


def start_worker(
    settings: Settings,
    log_path: Path,
    name: str,
    app: str = "tests.slow_worker",
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    queues: str = "gpu,default",
) -> subprocess.Popen[bytes]:
    """A real `celery worker` process (its own process group) on `settings`' broker and database."""
    cmd = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--queues", queues, "--concurrency", str(concurrency), "--loglevel", "INFO",
        "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    full_env = {**child_environment(settings), **(env or {})}
    with open(log_path, "ab") as log:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        if " ready." in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"worker not ready after {timeout} s:\n{log_path.read_text(errors='replace')}")


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Cold shutdown (SIGQUIT: tests need no graceful end), then SIGKILL to the worker's process group."""
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def wait_run(
    factory: sessionmaker[Session], run_id: int, timeout: float = 120.0, statuses: tuple[str, ...] = ("done",)
) -> Run:
    """The run once its status is in `statuses`; AssertionError after `timeout` or on another final status."""
    deadline = time.monotonic() + timeout
    run: Run | None = None
    while time.monotonic() < deadline:
        with factory() as session:
            run = session.get(Run, run_id)
            assert run is not None
            if run.status in statuses:
                return run
            if run.status in ("done", "failed", "cancelled"):
                raise AssertionError(f"run {run_id} ended {run.status}: {run.message}")
        time.sleep(0.25)
    raise AssertionError(
        f"run {run_id} not {statuses} after {timeout} s: {run and (run.status, run.done, run.total, run.message)}"
    )


def score_rows(factory: sessionmaker[Session], run_id: int) -> tuple[int, int]:
    """(rows, distinct samples) of the run's scores."""
    with factory() as session:
        rows = session.scalar(select(func.count()).select_from(Score).where(Score.run_id == run_id)) or 0
        distinct = session.scalar(select(func.count(func.distinct(Score.sample_id))).where(Score.run_id == run_id))
        return int(rows), int(distinct or 0)


def scored_ids(log_dir: Path) -> dict[str, list[int]]:
    """{pool process pid: ids it scored} from the slow worker's logs."""
    out: dict[str, list[int]] = {}
    for path in sorted(log_dir.glob("scored-*.log")):
        out[path.stem.removeprefix("scored-")] = [int(x) for x in path.read_text().split()]
    return out
