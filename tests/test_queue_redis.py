"""The queue for real: Redis broker, PostgreSQL store, worker processes started as subprocesses.

Each test gets its own Redis key prefix (so it cannot take another run's messages) and the module its own
PostgreSQL database. Workers run `celery -A tests.slow_worker worker` (the production app with observation
hooks) unless noted. The visibility timeout is 6 s here, so a chunk whose worker was SIGKILLed comes back
within about 8 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.settings import Settings
from tests.conftest import create_pg_database, drop_pg_database
from tests.queue_helpers import (
    ingest_dataset,
    score_rows,
    scored_ids,
    start_worker,
    stop_worker,
    wait_ready,
    wait_run,
    write_dataset,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

REDIS_URL = os.environ.get("QSPACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); scripts/services starts it", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def pg_queue_url() -> Iterator[str]:
    url = create_pg_database("qspace_queue")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_pg_database(url)


@pytest.fixture
def qsettings(tmp_path: Path, pg_queue_url: str, redis_client: redis.Redis) -> Iterator[Settings]:
    prefix = f"qspace-test-{uuid.uuid4().hex[:10]}:"
    yield Settings(
        data_dir=tmp_path / "data",
        database_url=pg_queue_url,
        broker_url=REDIS_URL,
        broker_transport_options={"global_keyprefix": prefix},
        visibility_timeout_s=6,
        chunk_size=20,
        image_roots=[tmp_path],
        progress_window_s=5.0,
    )
    keys = list(redis_client.scan_iter(match=f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def qengine(qsettings: Settings) -> Iterator[Engine]:
    engine = make_engine(qsettings.sqlalchemy_url)
    yield engine
    engine.dispose()


@pytest.fixture
def qfactory(qengine: Engine) -> sessionmaker[Session]:
    return make_session_factory(qengine)


@pytest.fixture
def api(qsettings: Settings, qengine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(qsettings, qengine)) as client:
        yield client


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; all are stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop_worker(proc)


def post_run(api: TestClient, ds: int, kind: str = "length", params: dict | None = None) -> dict:
    r = api.post(f"/api/datasets/{ds}/runs", json={"kind": kind, "params": params or {}})
    assert r.status_code == 202, r.text
    return r.json()


def test_two_workers_score_one_run_together_each_sample_once(
    qsettings: Settings, qfactory: sessionmaker[Session], api: TestClient, workers: list, tmp_path: Path
) -> None:
    n = 400
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", n), f"two-{uuid.uuid4().hex[:6]}")
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"QSPACE_TEST_LOG_DIR": str(logs), "QSPACE_TEST_SAMPLE_DELAY": "0.01"}
    for name in ("a", "b"):
        log = tmp_path / f"worker-{name}.log"
        workers.append(start_worker(qsettings, log, f"w{name}-{uuid.uuid4().hex[:4]}", env=env))
    for proc, name in zip(workers, "ab", strict=True):
        wait_ready(proc, tmp_path / f"worker-{name}.log")
    run = post_run(api, ds)
    done = wait_run(qfactory, run["id"], timeout=90)
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(qfactory, run["id"]) == (n, n)
    per_process = scored_ids(logs)
    assert len(per_process) == 2 and all(len(ids) >= 20 for ids in per_process.values()), {
        k: len(v) for k, v in per_process.items()
    }
    counts = Counter(i for ids in per_process.values() for i in ids)
    assert len(counts) == n and set(counts.values()) == {1}  # every sample scored once, by one of them
    out = api.get(f"/api/runs/{run['id']}").json()
    assert out["status"] == "done" and out["done"] == n and out["eta_s"] == 0.0 and out["samples_per_s"] > 0


def test_worker_killed_mid_chunk_the_run_still_finishes(
    qsettings: Settings, qfactory: sessionmaker[Session], api: TestClient, workers: list, tmp_path: Path
) -> None:
    n = 240
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", n), f"kill-{uuid.uuid4().hex[:6]}")
    logs_a, logs_b = tmp_path / "logs-a", tmp_path / "logs-b"
    logs_a.mkdir()
    logs_b.mkdir()
    a = start_worker(qsettings, tmp_path / "a.log", "victim",
                     env={"QSPACE_TEST_LOG_DIR": str(logs_a), "QSPACE_TEST_SAMPLE_DELAY": "0.05"})  # fmt: skip
    b = start_worker(qsettings, tmp_path / "b.log", "survivor",
                     env={"QSPACE_TEST_LOG_DIR": str(logs_b), "QSPACE_TEST_SAMPLE_DELAY": "0.01"})  # fmt: skip
    workers.extend([a, b])
    wait_ready(a, tmp_path / "a.log")
    wait_ready(b, tmp_path / "b.log")
    run = post_run(api, ds)
    # Wait until the victim is inside a chunk (its pool process holds busy-<pid>), then SIGKILL the whole
    # worker: the main process and its pool process die without acknowledging the chunk.
    deadline = time.monotonic() + 60
    while not list(logs_a.glob("busy-*")):
        assert time.monotonic() < deadline, (tmp_path / "a.log").read_text(errors="replace")
        time.sleep(0.05)
    time.sleep(0.2)
    killed_at = time.monotonic()
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(10)
    done = wait_run(qfactory, run["id"], timeout=120)
    took = time.monotonic() - killed_at
    assert took < 60, f"the run took {took:.0f} s after the kill"
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(qfactory, run["id"]) == (n, n)  # every sample exactly once, no duplicate rows
    # The chunk the victim was scoring was redelivered to the survivor and scored there.
    victim = {i for ids in scored_ids(logs_a).values() for i in ids}
    survivor = Counter(i for ids in scored_ids(logs_b).values() for i in ids)
    assert len(victim | set(survivor)) == n
    assert victim & set(survivor), "the killed chunk was not redelivered"
    assert max(survivor.values()) == 1
    out = api.get(f"/api/runs/{run['id']}").json()
    assert (out["status"], out["done"], out["errors"]) == ("done", n, 0)


def test_database_connections_dropped_mid_run_chunks_retry(
    qsettings: Settings, qfactory: sessionmaker[Session], qengine: Engine, api: TestClient, workers: list,
    tmp_path: Path,
) -> None:  # fmt: skip
    n = 300
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", n), f"pg-{uuid.uuid4().hex[:6]}")
    log = tmp_path / "w.log"
    proc = start_worker(qsettings, log, "pgdrop", env={"QSPACE_TEST_COMMIT_DELAY": "0.4"})
    workers.append(proc)
    wait_ready(proc, log)
    run = post_run(api, ds)
    db = qsettings.sqlalchemy_url.rsplit("/", 1)[1]
    killed = 0
    deadline = time.monotonic() + 60
    # Terminate the worker's server connections while they hold an open transaction (mid-chunk-write),
    # as a PostgreSQL restart would, three times.
    while killed < 3 and time.monotonic() < deadline:
        with qengine.connect() as conn:
            killed += len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                        "AND application_name = 'qspace-worker' AND state = 'idle in transaction'"
                    ),
                    {"db": db},
                ).all()
            )
        time.sleep(0.1)
    assert killed >= 3
    done = wait_run(qfactory, run["id"], timeout=90)
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(qfactory, run["id"]) == (n, n)
    assert "database error, retry" in log.read_text(errors="replace")


def test_corrupt_and_missing_images_are_reported_and_the_run_finishes(
    qsettings: Settings, qfactory: sessionmaker[Session], qengine: Engine, workers: list, tmp_path: Path
) -> None:
    from workers.tiny_models import write_tiny_models

    log = tmp_path / "w.log"
    proc = start_worker(qsettings, log, "images")  # starts while the models are written
    workers.append(proc)
    models = write_tiny_models(tmp_path / "models")
    n = 300  # 1% corrupt, 1% missing
    corrupt, missing = {10, 150, 290}, {20, 160, 280}
    path = write_dataset(tmp_path / "ds", n, corrupt=corrupt, missing=missing)
    ds = ingest_dataset(qfactory, path, f"img-{uuid.uuid4().hex[:6]}")
    wait_ready(proc, log)
    # Chunks of 100, batches of 16 decoded by 2 loader processes inside the worker's pool process.
    api = TestClient(create_app(qsettings.model_copy(update={"chunk_size": 100}), qengine))
    run = post_run(api, ds, "clip", {"model": str(models["clip"]), "batch_size": 16, "num_workers": 2})
    done = wait_run(qfactory, run["id"], timeout=120)
    assert (done.done, done.total, done.errors) == (n, n, 6)
    out = api.get(f"/api/runs/{run['id']}").json()
    assert (out["status"], out["done"], out["errors"]) == ("done", n, 6)
    assert out["message"] == "6 sample(s) could not be scored"
    errors = api.get(f"/api/runs/{run['id']}/errors").json()
    assert errors["total"] == 6 and errors["reasons"] == {"image missing": 3, "image unreadable": 3}
    by_external = {e["external_id"]: e["error"] for e in errors["items"]}
    assert {f"s{i:05d}" for i in corrupt | missing} == set(by_external)
    assert by_external["s00020"] == "image missing: images/00020.png"
    page = api.get(f"/api/datasets/{ds}/samples", params={"limit": 12}).json()
    scores = {s["external_id"]: s["scores"][str(run["id"])] for s in page["items"]}
    assert scores["s00010"]["error"].startswith("image unreadable") and scores["s00010"]["metrics"] is None
    assert -1.0 <= scores["s00011"]["metrics"]["similarity"] <= 1.0 and scores["s00011"]["error"] is None
