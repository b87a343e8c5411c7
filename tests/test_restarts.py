"""Real restarts mid-run: the tests start their own PostgreSQL cluster (initdb in a temporary directory, its own
port) and their own redis-server (its own port, nothing kept on disk), and restart them for real while a worker
scores a run. The run finishes, every sample has exactly one result, and the API answers a clear 503 during the
outage rather than a 500.

PostgreSQL refuses to run as root: as root, its commands run as the ``postgres`` user (``runuser -u postgres``),
in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
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
from backend.models import Run
from backend.settings import Settings
from tests.queue_helpers import (
    ingest_dataset,
    score_rows,
    start_worker,
    stop_worker,
    wait_ready,
    wait_run,
    write_dataset,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def pg_bin() -> Path:
    initdb = shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"
    return Path(initdb).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnPostgres:
    """A PostgreSQL cluster of its own: trust auth on 127.0.0.1:<port>, no fsync (a test's data)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qspace-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(pg_bin() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server of its own on 127.0.0.1:<port> that keeps nothing on disk: a restart loses every message."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qspace-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.root)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a crash would: nothing is saved (and nothing would be: no persistence)
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def rsettings(tmp_path: Path, own_pg: OwnPostgres, own_redis: OwnRedis) -> Settings:
    db = f"qspace_{uuid.uuid4().hex[:8]}"
    admin = make_engine(own_pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    engine = make_engine(own_pg.url(db))
    upgrade(engine)
    engine.dispose()
    return Settings(
        data_dir=tmp_path / "data",
        database_url=own_pg.url(db),
        broker_url=own_redis.url,
        visibility_timeout_s=6,
        chunk_size=20,
        image_roots=[tmp_path],
        run_stale_s=3,
        sweep_interval_s=0.5,
    )


@pytest.fixture
def rfactory(rsettings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(rsettings.sqlalchemy_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def worker(rsettings: Settings, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    proc = start_worker(rsettings, log, f"restarts-{uuid.uuid4().hex[:4]}", env={"QSPACE_TEST_SAMPLE_DELAY": "0.01"})
    try:
        wait_ready(proc, log)
        yield log
    finally:
        stop_worker(proc)


def wait_done_at_least(factory: sessionmaker[Session], run_id: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with factory() as s:
            run = s.get(Run, run_id)
            assert run is not None
            if run.done >= n:
                return
        assert time.monotonic() < deadline, f"run {run_id}: {run.done} done after {timeout} s"
        time.sleep(0.05)


def post_run(api: TestClient, ds: int) -> int:
    r = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def test_postgresql_restarted_mid_run(
    own_pg: OwnPostgres, rsettings: Settings, rfactory: sessionmaker[Session], worker: Path, tmp_path: Path
) -> None:
    n = 400
    ds = ingest_dataset(rfactory, write_dataset(tmp_path / "ds", n), "pg-restart")
    engine: Engine = make_engine(rsettings.sqlalchemy_url, pool_pre_ping=True)
    with TestClient(create_app(rsettings, engine), raise_server_exceptions=False) as api:
        run_id = post_run(api, ds)
        wait_done_at_least(rfactory, run_id, 60)
        own_pg.stop("fast")  # every connection of the API and the worker is closed by the server
        down_at = time.monotonic()
        try:
            during = [api.get(f"/api/runs/{run_id}"), api.get(f"/api/datasets/{ds}/samples", params={"limit": 5})]
            time.sleep(2.0)
        finally:
            own_pg.start()
        up_at = time.monotonic()
        done = wait_run(rfactory, run_id, timeout=120)
        recovered = time.monotonic() - up_at
        after = api.get(f"/api/runs/{run_id}")
    for r in during:
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("the database is unavailable")
    assert after.status_code == 200 and after.json()["status"] == "done"
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(rfactory, run_id) == (n, n)  # every sample exactly once
    assert "database error, retry" in worker.read_text(errors="replace")
    engine.dispose()
    print(f"\nPostgreSQL down {up_at - down_at:.1f} s; the run finished {recovered:.1f} s after it came back")


def test_redis_restarted_mid_run(
    own_redis: OwnRedis, rsettings: Settings, rfactory: sessionmaker[Session], worker: Path, tmp_path: Path
) -> None:
    n = 400
    ds = ingest_dataset(rfactory, write_dataset(tmp_path / "ds", n), "redis-restart")
    other = ingest_dataset(rfactory, write_dataset(tmp_path / "other", 5), "other")
    engine = make_engine(rsettings.sqlalchemy_url)
    with TestClient(create_app(rsettings, engine), raise_server_exceptions=False) as api:
        run_id = post_run(api, ds)
        wait_done_at_least(rfactory, run_id, 60)
        own_redis.stop()  # a crash: every queued chunk is gone
        down_at = time.monotonic()
        try:
            refused = api.post(f"/api/datasets/{other}/runs", json={"kind": "length", "params": {}})
            reading = api.get(f"/api/runs/{run_id}")
            time.sleep(1.0)
        finally:
            own_redis.start()
        up_at = time.monotonic()
        done = wait_run(rfactory, run_id, timeout=120)
        recovered = time.monotonic() - up_at
    assert refused.status_code == 503 and "unreachable" in refused.json()["detail"], refused.text
    assert reading.status_code == 200 and reading.json()["status"] == "running"
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(rfactory, run_id) == (n, n)  # every sample exactly once
    with contextlib.closing(redis.Redis.from_url(own_redis.url)) as client:
        client.ping()
    engine.dispose()
    print(
        f"\nRedis down {up_at - down_at:.1f} s (queued chunks lost); the run finished {recovered:.1f} s after it came back"
    )
