"""The embedded default, end to end with real worker processes: SQLite store, server-less SQLite broker.

ingest -> POST run -> the embedded worker (`qspace worker` as a child process) -> scores in the store; the
`qspace score` command in-process and through the queue; and recovery after the worker was SIGKILLed (a
server-less broker does not redeliver, so a fresh embedded worker re-enqueues what is missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.models import Run
from backend.settings import Settings
from qspace.worker import EmbeddedWorker, child_environment, start_embedded_worker
from tests.ingest_helpers import ingest_via_api
from tests.queue_helpers import (
    REPO,
    ingest_dataset,
    score_rows,
    start_worker,
    stop_worker,
    wait_ready,
    wait_run,
    write_dataset,
)

pytestmark = pytest.mark.slow

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"


@pytest.fixture
def esettings(tmp_path: Path) -> Settings:
    s = Settings(
        data_dir=tmp_path / "data",
        image_roots=[tmp_path, SAMPLE_DIR],
        data_roots=[tmp_path, SAMPLE_DIR],
        chunk_size=5,
    )
    assert s.celery_broker_url.startswith("sqla+sqlite:///") and s.sqlalchemy_url.startswith("sqlite:///")
    return s


@pytest.fixture
def eengine(esettings: Settings) -> Iterator[Engine]:
    esettings.ensure_dirs()
    engine = make_engine(esettings.sqlalchemy_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def efactory(eengine: Engine) -> sessionmaker[Session]:
    return make_session_factory(eengine)


@pytest.fixture
def embedded(esettings: Settings, tmp_path: Path) -> Iterator[list[EmbeddedWorker]]:
    handles: list[EmbeddedWorker] = []
    yield handles
    for h in handles:
        h.stop(timeout=10)


def qspace(args: list[str], settings: Settings, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qspace", *args],
        env=child_environment(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ingest_run_scores_with_the_embedded_worker(
    esettings: Settings, eengine: Engine, efactory: sessionmaker[Session], embedded: list, tmp_path: Path
) -> None:
    log = tmp_path / "embedded.log"
    embedded.append(start_embedded_worker(esettings, log_path=log))
    with TestClient(create_app(esettings, eengine)) as api:
        body = {"name": "sample", "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": str(SAMPLE_DIR)}
        ds = ingest_via_api(api, body)["id"]  # 202, the ingest job, then its dataset
        r = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] == "queued" and run["total"] == 19
        done = wait_run(efactory, run["id"], timeout=90)
        assert (done.done, done.errors) == (19, 0), log.read_text(errors="replace")
        assert score_rows(efactory, run["id"]) == (19, 19)
        out = api.get(f"/api/runs/{run['id']}").json()
        assert (out["status"], out["done"], out["eta_s"]) == ("done", 19, 0.0)
        items = api.get(f"/api/datasets/{ds}/samples", params={"limit": 50}).json()["items"]
        metrics = [s["scores"][str(run["id"])]["metrics"] for s in items]
        assert len(metrics) == 19 and all(m["words"] == m["question_words"] + m["answer_words"] for m in metrics)

    # The CLI through the same queue, on a second dataset: it follows the run and prints its id.
    path = write_dataset(tmp_path / "second", 12)
    ds2 = ingest_dataset(efactory, path, "second")
    cli = qspace(["score", str(ds2), "--kind", "length", "--queue", "--no-progress"], esettings)
    assert cli.returncode == 0, cli.stderr + log.read_text(errors="replace")
    run_id = int(cli.stdout.strip())
    assert "done: 12/12 samples, 0 errors" in cli.stderr
    assert score_rows(efactory, run_id) == (12, 12)
    assert embedded[0].alive()
    assert embedded[0].stop(timeout=15) is not None and not embedded[0].alive()


def test_score_command_in_process_and_resume(esettings: Settings, efactory: sessionmaker[Session], tmp_path: Path) -> None:
    ds = ingest_dataset(efactory, write_dataset(tmp_path / "ds", 12), "cli")
    r = qspace(["score", "cli", "--kind", "length"], esettings)
    assert r.returncode == 0, r.stderr
    run_id = int(r.stdout.strip())
    assert "sample/s" in r.stderr or "samples/s" in r.stderr  # the progress bar
    assert "done: 12/12 samples" in r.stderr
    with efactory() as s:
        run = s.get(Run, run_id)
        assert run is not None and run.dataset_id == ds and run.status == "done"
    # Again: the same scorer key, so the same run; nothing is missing.
    r = qspace(["score", "cli", "--kind", "length", "--no-progress"], esettings)
    assert r.returncode == 0 and int(r.stdout.strip()) == run_id
    with efactory() as s:
        assert len(s.scalars(select(Run)).all()) == 1
    r = qspace(["score", "cli", "--kind", "nope"], esettings)
    assert r.returncode == 2 and "unknown scorer kind" in r.stderr
    r = qspace(["score", "missing", "--kind", "length"], esettings)
    assert r.returncode == 2 and "not found" in r.stderr
    r = qspace(["score", "cli", "--kind", "length", "--param", "oops"], esettings)
    assert r.returncode == 2 and "key=value" in r.stderr


def test_killed_embedded_worker_restarted_requeues_what_is_missing(
    esettings: Settings, eengine: Engine, efactory: sessionmaker[Session], embedded: list, tmp_path: Path
) -> None:
    n = 60
    ds = ingest_dataset(efactory, write_dataset(tmp_path / "ds", n), "restart")
    logs = tmp_path / "logs"
    logs.mkdir()
    log = tmp_path / "victim.log"
    victim = start_worker(esettings, log, "victim",
                          env={"QSPACE_TEST_LOG_DIR": str(logs), "QSPACE_TEST_SAMPLE_DELAY": "0.1"})  # fmt: skip
    try:
        wait_ready(victim, log)
        with TestClient(create_app(esettings, eengine)) as api:
            run = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length"}).json()
        deadline = time.monotonic() + 60
        while not list(logs.glob("busy-*")):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        time.sleep(0.2)
        os.killpg(victim.pid, signal.SIGKILL)  # its chunk is lost: the SQLite broker has no redelivery
        victim.wait(10)
    finally:
        stop_worker(victim)
    with efactory() as s:
        left = s.get(Run, run["id"])
        assert left is not None and left.status in ("queued", "running") and left.done < n
    embedded.append(start_embedded_worker(esettings, log_path=tmp_path / "embedded.log"))
    done = wait_run(efactory, run["id"], timeout=90)
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(efactory, run["id"]) == (n, n)
