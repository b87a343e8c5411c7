"""The served demo's background work: its models trained in a child process (:mod:`qspace.demo.trainer`) under a
``demo_models`` job, followed in the terminal while the app already answers.

The job is what the UI shows (the Datasets page lists it with a progress bar; the explore page names it while
the plane waits for it) and what ``POST /api/jobs/{id}/cancel`` stops. The terminal follows the same job through
``GET /api/jobs/{id}`` and echoes the trainer's log lines.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from backend.db import make_engine, make_session_factory, session_scope
from backend.jobs import abandon, create_job, finish, get_job
from backend.settings import Settings
from qspace.demo.messages import Echo, say
from qspace.demo.models import ModelPaths
from qspace.worker import _die_with_parent, child_environment

KIND = "demo_models"
POLL_S = 0.5


@dataclass
class Training:
    """A running trainer child and its job."""

    job_id: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int  # where this run's lines start in the (appended) log

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the trainer (SIGTERM, then SIGKILL); its temporary folder goes with it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)


def _end_job(settings: Settings, job_id: int, status: str, **kw: Any) -> bool:
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return finish(session, job_id, status, **kw)
    finally:
        engine.dispose()


def start_training(settings: Settings, dataset_id: int, seed: int) -> Training:
    """A ``demo_models`` job for the dataset and the trainer child that works on it. Active jobs of an earlier
    demo on the same dataset are failed first: their process is gone."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            abandon(session, kind=KIND, dataset_id=dataset_id, reason="interrupted: the demo that ran it stopped")
            job_id = create_job(
                session, KIND, dataset_id=dataset_id, unit="step", message="training the demo models: starting"
            ).id
    finally:
        engine.dispose()
    log_path = settings.data_dir / "demo-train.log"
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:  # the child gets its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "qspace.demo.trainer", str(job_id), "--seed", str(seed)],
            env=child_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the trainer itself
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return Training(job_id, process, log_path, log_offset)


def follow_training(
    client: httpx.Client,
    settings: Settings,
    training: Training,
    progress: bool = True,
    echo: Echo = say,
    poll_s: float = POLL_S,
) -> ModelPaths | None:
    """Follow the job until its trainer exits, with a progress bar and the trainer's log lines; the models it
    trained, or None when it failed or was cancelled (the job says so; the app stays up without scores)."""
    from tqdm import tqdm

    bar = tqdm(
        desc="demo models",
        unit="step",
        total=None,
        dynamic_ncols=True,
        disable=not progress,
        file=sys.stderr,
    )
    lines = _LogTail(training.log_path, training.log_offset)

    def show(line: str) -> None:
        if progress:
            bar.write(line, file=sys.stderr)
        else:
            echo(line)

    job: dict[str, Any] = {}
    try:
        while True:
            exited = training.process.poll() is not None
            r = client.get(f"/api/jobs/{training.job_id}")
            r.raise_for_status()
            job = r.json()
            for line in lines.new():
                show(line)
            if job["total"] and bar.total != job["total"]:
                bar.total = job["total"]
            bar.update(max(job["done"] - bar.n, 0))
            if exited:
                break
            time.sleep(poll_s)
    finally:
        bar.close()
    code = training.process.returncode
    models = (job.get("result") or {}) if code == 0 else {}
    if models.get("clip") and models.get("llava"):
        return ModelPaths(Path(models["clip"]), Path(models["llava"]))
    if job.get("status") == "cancelled":
        echo("demo: training the models was cancelled; the app stays up without scores")
        return None
    tail = lines.last(12)
    _end_job(settings, training.job_id, "failed", error=f"the trainer exited with code {code}: {tail[-500:]}")
    echo(f"demo: training the models failed (exit {code}); see {training.log_path}\n{tail}")
    return None


def end_training_job(settings: Settings, training: Training, runs: dict[str, int] | None, error: str | None) -> None:
    """Close the job once the scoring runs are posted (its result gains their ids), or could not be."""
    if error is not None:
        _end_job(settings, training.job_id, "failed", error=error)
        return
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            before = get_job(session, training.job_id).result or {}
            finish(
                session,
                training.job_id,
                "done",
                message="models trained; scoring runs posted",
                result={**before, "runs": runs or {}},
            )
    finally:
        engine.dispose()


def stop_training(settings: Settings, training: Training) -> None:
    """The demo stops (Ctrl-C) while its models train: stop the trainer, cancel the job."""
    training.stop()
    _end_job(settings, training.job_id, "cancelled", message="the demo stopped before the models were trained")


class _LogTail:
    """The lines a file gained since an offset (the trainer's log, echoed to the terminal)."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.partial = ""
        self.seen: list[str] = []

    def new(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        *complete, self.partial = text.split("\n")
        out = [line.rstrip() for line in complete if line.strip()]
        self.seen += out
        return out

    def last(self, n: int) -> str:
        self.new()
        return "\n".join([*self.seen, self.partial][-n:]).strip()
