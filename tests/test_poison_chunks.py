"""Poison chunks: a chunk whose worker dies on every delivery is split until the one sample that kills it is
isolated; that sample gets an error row and the rest of the run finishes (backend/queue/attempts.py,
workers/tasks.py, workers/chunk_request.py).

The store-level tests run on SQLite and PostgreSQL; the end-to-end tests run real worker processes
(`celery -A tests.poison_worker worker`) whose scorer kills its own process on one sample, on Redis + PostgreSQL
(a 256-sample chunk, timed) and on the server-less SQLite broker + SQLite store.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.datasets import get_dataset
from backend.db import make_engine, make_session_factory, session_scope
from backend.migrate import upgrade
from backend.models import ChunkAttempt, Run, Sample, Score
from backend.queue.attempts import (
    POISON,
    SCORE,
    SPLIT,
    begin_delivery,
    chunk_key,
    finish_delivery,
    process_identity,
    record_exit,
    still_running,
)
from backend.runs import plan_run
from backend.settings import Settings
from tests import test_queue_redis as redis_queue
from tests.queue_helpers import ingest_dataset, start_worker, stop_worker, wait_ready, wait_run, write_dataset
from workers.chunk_request import how_it_ended

# The Redis + PostgreSQL queue fixtures (own key prefix per test, own database for this module).
redis_client = redis_queue.redis_client
pg_queue_url = redis_queue.pg_queue_url
qsettings = redis_queue.qsettings
qengine = redis_queue.qengine
qfactory = redis_queue.qfactory
workers = redis_queue.workers


def new_run(
    factory: sessionmaker[Session], tmp_path: Path, n: int, chunk_size: int
) -> tuple[int, str, list[list[int]]]:
    ds = ingest_dataset(factory, write_dataset(tmp_path / "ds", n), f"poison-{uuid.uuid4().hex[:6]}")
    with factory() as s:
        plan = plan_run(s, get_dataset(s, ds), "length", {}, chunk_size)
        s.commit()
        return plan.run.id, plan.run.scorer_key, plan.chunks


def ghost_deliveries(factory: sessionmaker[Session], run_id: int, ids: list[int], n: int) -> None:
    """`n` deliveries started by processes on another machine that never finished (they died)."""
    for k in range(n):
        with session_scope(factory) as s:
            begin_delivery(s, run_id, ids, len(ids), 3, worker=f"ghost-{k} {100 + k} 7")


# --- the store side ----------------------------------------------------------------------------------------


def test_a_delivery_that_never_finished_counts_as_a_death(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    run_id, _, chunks = new_run(session_factory, tmp_path, 8, 8)
    ids = chunks[0]
    with session_scope(session_factory) as s:
        first = begin_delivery(s, run_id, ids, 8, 2, worker="a 1 1")
        assert (first.number, first.deaths, first.action) == (1, 0, SCORE)
        finish_delivery(s, first, "scored")
    with session_scope(session_factory) as s:  # the previous one finished: not a death
        second = begin_delivery(s, run_id, ids, 8, 2, worker="b 2 2")
        assert (second.number, second.deaths, second.action) == (2, 0, SCORE)
    with session_scope(session_factory) as s:  # the same process again (a retry after a database error)
        assert begin_delivery(s, run_id, ids, 8, 2, worker="b 2 2").deaths == 0
    with session_scope(session_factory) as s:
        assert record_exit(s, run_id, ids, "signal 9 (SIGKILL)") == 1
    with session_scope(session_factory) as s:  # "b" never finished: it died
        third = begin_delivery(s, run_id, ids, 8, 2, worker="c 3 3")
        assert (third.deaths, third.last_exit, third.action) == (1, "signal 9 (SIGKILL)", SCORE)
    with session_scope(session_factory) as s:
        fourth = begin_delivery(s, run_id, ids, 8, 2, worker="d 4 4")
        assert (fourth.number, fourth.deaths, fourth.action) == (5, 2, SPLIT)
        assert fourth.key == chunk_key(list(reversed(ids)))  # the key does not depend on the order
    with session_scope(session_factory) as s:  # one sample left whose worker died twice: its error row
        single = begin_delivery(s, run_id, ids, 1, 2, worker="e 5 5")
        assert single.action == POISON
        assert single.poison_error() == "worker died while scoring this sample: worker died (delivered 3 times)"


def test_still_running_tells_live_local_processes_from_dead_ones() -> None:
    me = process_identity()
    assert still_running(me, me)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = process_identity(sleeper.pid)
        assert still_running(live, me)
        assert not still_running(live.rsplit(" ", 1)[0] + " 1", me)  # the pid was reused by another process
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not still_running(live, me)  # dead now
    assert not still_running(f"elsewhere-{uuid.uuid4().hex[:6]} {sleeper.pid} 1", me)  # another machine
    assert not still_running(None, me)


def test_how_it_ended() -> None:
    from billiard.exceptions import WorkerLostError

    assert how_it_ended(WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")) == (
        "signal 9 (SIGKILL)"
    )
    assert how_it_ended(WorkerLostError("Worker exited prematurely: exitcode 3 Job: 0.")) == "exitcode 3"
    assert how_it_ended(SystemExit(7)) == "exitcode 7"
    assert how_it_ended(ValueError("x")) is None


def test_process_chunk_splits_a_chunk_that_kills_its_worker_and_isolates_the_sample(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The worker's chunk function in-process, with deaths simulated in the store."""
    from workers.tasks import process_chunk

    settings = Settings(chunk_max_deliveries=3)
    run_id, key, chunks = new_run(session_factory, tmp_path, 14, 10)
    sent: list[list[int]] = []

    def send(rid: int, k: str, halves: list[list[int]]) -> None:
        assert (rid, k) == (run_id, key)
        sent.extend(halves)

    chunk = chunks[0]
    ghost_deliveries(session_factory, run_id, chunk, 3)  # two deaths seen, the third is seen now
    report = process_chunk(session_factory, settings, run_id, key, chunk, send=send)
    assert report.skipped == "its worker died 3 time(s): split into 5+5" and report.inserted == 0
    assert sent == [chunk[:5], chunk[5:]]
    left, right = sent
    # A half is split again after one death: a sample in it is known to kill its worker.
    ghost_deliveries(session_factory, run_id, left, 1)
    again = process_chunk(session_factory, settings, run_id, key, left, send=send)
    assert again.skipped == "its worker died 1 time(s): split into 2+3"
    assert sent[2:] == [left[:2], left[2:]]
    assert process_chunk(session_factory, settings, run_id, key, right, send=send).inserted == 5
    # A single sample dies `chunk_max_deliveries` times before its error row.
    poison = [left[2]]
    ghost_deliveries(session_factory, run_id, poison, 3)
    with session_scope(session_factory) as s:
        record_exit(s, run_id, poison, "signal 11 (SIGSEGV)")
    verdict = process_chunk(session_factory, settings, run_id, key, poison, send=send)
    assert (verdict.inserted, verdict.errors) == (1, 1)
    for rest in (left[:2], left[3:], chunks[1]):
        last = process_chunk(session_factory, settings, run_id, key, rest, send=send)
    assert last.status == "done"
    with session_factory() as s:
        run = s.get(Run, run_id)
        assert run is not None and (run.status, run.done, run.errors) == ("done", 14, 1)
        errors = dict(s.execute(select(Score.sample_id, Score.error).where(Score.error.is_not(None))).all())
        assert errors == {poison[0]: "worker died while scoring this sample: signal 11 (SIGSEGV) (delivered 3 times)"}
        assert s.scalar(select(func.count()).select_from(Score).where(Score.run_id == run_id)) == 14
        # The run is done: its delivery records are gone.
        assert s.scalar(select(func.count()).select_from(ChunkAttempt).where(ChunkAttempt.run_id == run_id)) == 0


def test_in_process_scoring_keeps_no_delivery_records(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    from workers.tasks import process_chunk

    run_id, key, chunks = new_run(session_factory, tmp_path, 6, 3)
    assert process_chunk(session_factory, Settings(), run_id, key, chunks[0]).inserted == 3
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ChunkAttempt)) == 0


# --- real workers that die -------------------------------------------------------------------------------


def poison_marker(i: int) -> str:
    """Text only sample `i` holds (write_dataset asks "What color is the shape number <i>?")."""
    return f"shape number {i}?"


def assert_isolated(factory: sessionmaker[Session], run_id: int, n: int, poison_id: int, how: str) -> None:
    with factory() as s:
        run = s.get(Run, run_id)
        assert run is not None and (run.status, run.done, run.total, run.errors) == ("done", n, n, 1)
        rows = s.execute(select(Score.sample_id, Score.metrics, Score.error).where(Score.run_id == run_id)).all()
    assert len(rows) == n and len({r.sample_id for r in rows}) == n  # every sample exactly once
    errors = {r.sample_id: r.error for r in rows if r.error is not None}
    assert list(errors) == [poison_id], errors
    assert errors[poison_id].startswith(f"worker died while scoring this sample: {how} (delivered ")
    assert all(r.metrics and r.metrics["answer_words"] >= 4 for r in rows if r.sample_id != poison_id)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_redis_a_256_sample_chunk_with_a_sample_that_kills_its_worker(
    qsettings: Settings, qfactory: sessionmaker[Session], qengine: Engine, workers: list, tmp_path: Path
) -> None:
    n, poison_at = 256, 137
    settings = qsettings.model_copy(update={"chunk_size": 256, "chunk_max_deliveries": 3})
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", n), f"poison-{uuid.uuid4().hex[:6]}")
    with qfactory() as s:
        poison_id = s.scalar(select(Sample.id).where(Sample.dataset_id == ds, Sample.position == poison_at))
    assert poison_id is not None
    log = tmp_path / "w.log"
    proc = start_worker(settings, log, f"poison-{uuid.uuid4().hex[:4]}", app="tests.poison_worker",
                        env={"QSPACE_TEST_POISON": poison_marker(poison_at)})  # fmt: skip
    workers.append(proc)
    wait_ready(proc, log)
    with TestClient(create_app(settings, qengine)) as api:
        r = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        t0 = time.monotonic()
        wait_run(qfactory, run_id, timeout=240)
        took = time.monotonic() - t0
        out = api.get(f"/api/runs/{run_id}").json()
        errors = api.get(f"/api/runs/{run_id}/errors").json()
    assert_isolated(qfactory, run_id, n, poison_id, "signal 9 (SIGKILL)")
    assert (out["status"], out["done"], out["errors"]) == ("done", n, 1)
    assert out["message"] == "1 sample(s) could not be scored"
    assert errors["reasons"] == {"worker died while scoring this sample": 1}
    text = log.read_text(errors="replace")
    # 3 deaths of the whole chunk, one per half on the way down (128 .. 2), 3 of the single sample.
    assert text.count("its worker process died (signal 9 (SIGKILL))") == 13, text[-3000:]
    print(f"\npoison sample isolated in a {n}-sample chunk (Redis, PostgreSQL): {took:.1f} s, 13 worker deaths")


@pytest.fixture
def esettings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", image_roots=[tmp_path], chunk_size=16, chunk_max_deliveries=2)


@pytest.fixture
def efactory(esettings: Settings) -> Iterator[sessionmaker[Session]]:
    esettings.ensure_dirs()
    engine = make_engine(esettings.sqlalchemy_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.mark.slow
def test_serverless_broker_isolates_a_sample_whose_process_exits(
    esettings: Settings, efactory: sessionmaker[Session], tmp_path: Path
) -> None:
    n, poison_at = 40, 21
    ds = ingest_dataset(efactory, write_dataset(tmp_path / "ds", n), "poison")
    with efactory() as s:
        poison_id = s.scalar(select(Sample.id).where(Sample.dataset_id == ds, Sample.position == poison_at))
        plan = plan_run(s, get_dataset(s, ds), "length", {}, esettings.chunk_size)
        s.commit()
        run_id = plan.run.id
    from backend.queue import TaskQueue

    queue = TaskQueue(esettings)
    try:
        queue.send_chunks(run_id, plan.run.scorer_key, plan.chunks)
    finally:
        queue.close()
    log = tmp_path / "w.log"
    proc = start_worker(esettings, log, "poison-sqla", app="tests.poison_worker",
                        env={"QSPACE_TEST_POISON": poison_marker(poison_at), "QSPACE_TEST_POISON_EXIT": "3"})  # fmt: skip
    try:
        wait_ready(proc, log)
        t0 = time.monotonic()
        wait_run(efactory, run_id, timeout=240)
        took = time.monotonic() - t0
    finally:
        stop_worker(proc)
    assert poison_id is not None
    assert_isolated(efactory, run_id, n, poison_id, "exitcode 3")
    # 16 samples: 2 deaths whole, one each at 8, 4, 2, then 2 of the single sample.
    assert log.read_text(errors="replace").count("its worker process died (exitcode 3)") == 7
    print(f"\npoison sample isolated in a 16-sample chunk (server-less SQLite broker): {took:.1f} s")
