"""The stall sweeper (backend/sweeper.py): stalled runs and experiment jobs whose work left the queue are
enqueued again, exactly what is missing, one sweeper at a time; and for real, a Redis-broker run whose queued
chunks were deleted from Redis (as a broker restart without persistence does) finishes by itself.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.datasets import get_dataset
from backend.models import Experiment, ExperimentArm, ExperimentJob, Run, Sample
from backend.queue import QueueUnavailable
from backend.queue.chunks import upsert_scores
from backend.queue.progress import utcnow
from backend.runs import missing_sample_ids, plan_run
from backend.scorer_specs import ScoreResult
from backend.settings import Settings
from backend.sweeper import LEASE_NAME, Sweeper, release_lease, sweep, take_lease
from tests import test_queue_redis as redis_queue
from tests.queue_helpers import (
    ingest_dataset,
    score_rows,
    scored_ids,
    start_worker,
    wait_ready,
    wait_run,
    write_dataset,
)

# The Redis + PostgreSQL queue fixtures (own key prefix per test, own database for this module).
redis_client = redis_queue.redis_client
pg_queue_url = redis_queue.pg_queue_url
qsettings = redis_queue.qsettings
qengine = redis_queue.qengine
qfactory = redis_queue.qfactory
workers = redis_queue.workers


class Sink:
    """Records what a sweep sends; `waiting` messages are in the queue; `down`: the broker refuses."""

    def __init__(self, waiting: int = 0, down: bool = False) -> None:
        self.chunks: list[tuple[int, list[int]]] = []
        self.jobs: list[int] = []
        self.n_waiting = waiting
        self.down = down

    def waiting(self) -> int:
        if self.down:
            raise QueueUnavailable("broker away")
        return self.n_waiting

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Any) -> int:
        if self.down:
            raise QueueUnavailable("broker away")
        self.chunks.extend((run_id, list(c)) for c in chunks)
        return len(self.chunks)

    def send_train_jobs(self, job_ids: Any) -> int:
        self.jobs.extend(int(i) for i in job_ids)
        return len(self.jobs)

    def sent_ids(self, run_id: int) -> list[int]:
        return [i for rid, ids in self.chunks if rid == run_id for i in ids]


def make_run(factory: sessionmaker[Session], tmp_path: Path, name: str, n: int, idle_s: float, scored: int) -> int:
    """A running run of `n` samples, `scored` of them with a result, last progress `idle_s` seconds ago."""
    ds = ingest_dataset(factory, write_dataset(tmp_path / name, n), name)
    then = utcnow() - timedelta(seconds=idle_s)
    with factory() as s:
        plan = plan_run(s, get_dataset(s, ds), "length", {}, 4, now=then)
        ids = [i for c in plan.chunks for i in c]
        upsert_scores(s, plan.run.id, [ScoreResult(i, {"words": 1.0}, None) for i in ids[:scored]], now=then)
        s.commit()
        return plan.run.id


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", chunk_size=4, run_stale_s=60, job_lease_s=30, **kw)


def test_the_lease_is_held_by_one_holder_at_a_time(session_factory: sessionmaker[Session]) -> None:
    now = utcnow()
    with session_factory() as s:
        assert take_lease(s, "x", "a", 30, now)
        assert not take_lease(s, "x", "b", 30, now)
        assert take_lease(s, "x", "a", 30, now + timedelta(seconds=20))  # renewed
        assert not take_lease(s, "x", "b", 30, now + timedelta(seconds=40))
        assert take_lease(s, "x", "b", 30, now + timedelta(seconds=51))  # a's expired: b takes over
        assert not take_lease(s, "x", "a", 30, now + timedelta(seconds=52))
        release_lease(s, "x", "b")
        assert take_lease(s, "x", "a", 30, utcnow())  # released: at once
        s.commit()


def test_a_stalled_run_gets_exactly_its_missing_samples_again(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    stalled = make_run(session_factory, tmp_path, "stalled", 10, idle_s=300, scored=3)
    moving = make_run(session_factory, tmp_path, "moving", 6, idle_s=5, scored=2)
    with session_factory() as s:
        run = s.get(Run, stalled)
        assert run is not None
        missing = missing_sample_ids(s, run)
    assert len(missing) == 7
    # Messages still wait in the queue: the run waits behind them, nothing is sent.
    busy = Sink(waiting=5)
    report = sweep(session_factory, busy, settings, "me")
    assert (report.stale_runs, report.waiting, busy.chunks) == ([stalled], 5, [])
    sink = Sink()
    report = sweep(session_factory, sink, settings, "me")
    assert report.runs == {stalled: 7} and sink.sent_ids(stalled) == missing
    assert [len(ids) for _, ids in sink.chunks] == [4, 3] and sink.sent_ids(moving) == []
    with session_factory() as s:
        run = s.get(Run, stalled)
        assert run is not None and run.status == "running"
        assert run.message is not None and run.message.startswith("re-enqueued 7 sample(s) after 300 s")
    # Swept: its clock moved on, so the next sweep leaves it alone for another run_stale_s.
    again = Sink()
    assert sweep(session_factory, again, settings, "me").stale_runs == [] and again.chunks == []
    later = sweep(session_factory, again, settings, "me", now=utcnow() + timedelta(seconds=61))
    assert later.runs == {stalled: 7, moving: 4}
    # Another process holds the lease: it sweeps, this one does not.
    assert not sweep(session_factory, Sink(), settings, "other", now=utcnow() + timedelta(seconds=200)).leased


def test_a_broker_that_refuses_leaves_the_run_to_the_next_sweep(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    stalled = make_run(session_factory, tmp_path, "stalled", 5, idle_s=300, scored=0)
    with pytest.raises(QueueUnavailable):
        sweep(session_factory, Sink(down=True), settings, "me")

    class RefusesChunks(Sink):
        def waiting(self) -> int:
            return 0

    with pytest.raises(QueueUnavailable):
        sweep(session_factory, RefusesChunks(down=True), settings, "me")
    with session_factory() as s:  # the plan was undone: still stale, swept next time
        run = s.get(Run, stalled)
        assert run is not None and run.message is not None and run.message.startswith("not resumed")
    sink = Sink()
    assert sweep(session_factory, sink, settings, "me").runs == {stalled: 5}


def test_stalled_experiment_jobs_are_sent_again(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 4), "exp")
    now = utcnow()
    old, recent = now - timedelta(seconds=600), now - timedelta(seconds=5)
    with session_factory() as s:
        exp = Experiment(dataset_id=ds, base_model="m", train_params_key="k", identity_key="i")
        s.add(exp)
        s.flush()
        arm = ExperimentArm(experiment_id=exp.id, position=0, kind="selection")
        s.add(arm)
        s.flush()
        states = [  # (status, updated_at, heartbeat_at)
            ("queued", old, None),  # its message was lost: sent again
            ("queued", recent, None),
            ("running", old, old),  # its worker died: sent again, taken over
            ("running", old, recent),  # beating
            ("done", old, old),
        ]
        jobs = []
        for seed, (status, updated, beat) in enumerate(states):
            job = ExperimentJob(experiment_id=exp.id, arm_id=arm.id, seed=seed, status=status, sample_ids=b"",
                                updated_at=updated, heartbeat_at=beat)  # fmt: skip
            s.add(job)
            jobs.append(job)
        s.commit()
        ids = [j.id for j in jobs]
    sink = Sink()
    report = sweep(session_factory, sink, settings, "me", now=now)
    assert report.stale_jobs == [ids[0], ids[2]] and sink.jobs == [ids[0], ids[2]]
    again = Sink()
    assert sweep(session_factory, again, settings, "me", now=now + timedelta(seconds=1)).jobs == []


def test_the_app_runs_one_sweeper_while_it_serves(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    settings = settings_for(tmp_path, sweep_interval_s=0.2)
    engine = session_factory.kw["bind"]
    with TestClient(create_app(settings, engine)) as api:
        sweeper = api.app.state.sweeper  # type: ignore[attr-defined]
        assert isinstance(sweeper, Sweeper)
        deadline = time.monotonic() + 10
        while sweeper.sweeps < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with session_factory() as s:  # it holds the lease now
            assert not take_lease(s, LEASE_NAME, "another process", 30)
    assert not sweeper._thread.is_alive()  # type: ignore[union-attr]
    with session_factory() as s:  # released on shutdown: another process takes over at once
        assert take_lease(s, LEASE_NAME, "another process", 30)
    off = create_app(settings.model_copy(update={"sweep_interval_s": 0}), engine)
    with TestClient(off):
        assert not hasattr(off.state, "sweeper")


# --- for real: Redis loses the queued chunks -------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_redis_run_whose_queued_chunks_were_lost_finishes_by_itself(
    qsettings: Settings,
    qfactory: sessionmaker[Session],
    qengine: Engine,
    redis_client: redis.Redis,
    workers: list,
    tmp_path: Path,
) -> None:
    n = 200
    stale_s = 3.0
    settings = qsettings.model_copy(update={"chunk_size": 10, "run_stale_s": stale_s, "sweep_interval_s": 0.5})
    prefix = settings.broker_transport_options["global_keyprefix"]
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", n), f"lost-{uuid.uuid4().hex[:6]}")
    logs = tmp_path / "logs"
    logs.mkdir()
    log = tmp_path / "w.log"
    proc = start_worker(settings, log, f"sweep-{uuid.uuid4().hex[:4]}",
                        env={"QSPACE_TEST_LOG_DIR": str(logs), "QSPACE_TEST_SAMPLE_DELAY": "0.02"})  # fmt: skip
    workers.append(proc)
    wait_ready(proc, log)
    with TestClient(create_app(settings, qengine)) as api:
        r = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        # Once some chunks are written, the broker "restarts" and loses every queued chunk (the one a worker
        # holds is finished and acknowledged).
        deadline = time.monotonic() + 60
        while True:
            with qfactory() as s:
                run = s.get(Run, run_id)
                assert run is not None
                if run.done >= 30:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        lost = redis_client.llen(f"{prefix}gpu")
        assert redis_client.delete(f"{prefix}gpu") == 1 and lost > 0
        lost_at = time.monotonic()
        done = wait_run(qfactory, run_id, timeout=90)
        took = time.monotonic() - lost_at
        out = api.get(f"/api/runs/{run_id}").json()
    assert (done.done, done.total, done.errors) == (n, n, 0)
    assert score_rows(qfactory, run_id) == (n, n)
    assert out["message"] is None and out["status"] == "done"
    # Exactly the missing samples went out again: every sample was scored once, none twice.
    counts = Counter(i for ids in scored_ids(logs).values() for i in ids)
    with qfactory() as s:
        all_ids = set(s.scalars(select(Sample.id).where(Sample.dataset_id == ds)))
    assert set(counts) == all_ids and set(counts.values()) == {1}
    assert took >= stale_s
    print(f"\n{lost} queued chunk(s) lost: the run finished by itself {took:.1f} s later (stale after {stale_s} s)")
