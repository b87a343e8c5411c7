"""Background jobs (DESIGN.md's Job): the shape GET answers, the list's filters, 404/409/422, cancel and what the
worker's progress writer does after it, the bearer token, and a deleted dataset taking its jobs along."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend import jobs
from backend.api.app import create_app
from backend.db import session_scope
from backend.settings import Settings
from tests.queue_helpers import ingest_dataset, write_dataset

JOB_FIELDS = {
    "id", "kind", "status", "done", "total", "unit", "error", "result",  # DESIGN.md's Job
    "dataset_id", "message", "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def ds(session_factory: sessionmaker[Session], tmp_path: Path) -> int:
    return ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 4), "ds")


def _job(factory: sessionmaker[Session], kind: str = "demo_models", dataset_id: int | None = None, **kw: int) -> int:
    with session_scope(factory) as session:
        return jobs.create_job(session, kind, dataset_id=dataset_id, unit="step", message="waiting", **kw).id


def test_a_job_has_the_designed_shape(client: TestClient, session_factory: sessionmaker[Session], ds: int) -> None:
    job_id = _job(session_factory, dataset_id=ds, total=300)
    r = client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == JOB_FIELDS
    assert {k: body[k] for k in ("id", "kind", "status", "done", "total", "unit", "dataset_id", "message")} == {
        "id": job_id, "kind": "demo_models", "status": "queued", "done": 0, "total": 300, "unit": "step",
        "dataset_id": ds, "message": "waiting",
    }  # fmt: skip
    assert body["error"] is None and body["result"] is None and body["created_at"] and body["updated_at"]

    progress = jobs.JobProgress(session_factory, job_id, every_s=0)
    progress.step(120, 300)
    progress.say("training the LLaVA")
    body = client.get(f"/api/jobs/{job_id}").json()
    assert (body["status"], body["done"], body["total"], body["message"]) == ("running", 120, 300, "training the LLaVA")
    assert progress.finish("done", result={"clip": "/models/clip"})
    body = client.get(f"/api/jobs/{job_id}").json()
    assert (body["status"], body["done"], body["result"]) == ("done", 300, {"clip": "/models/clip"})


def test_list_filters_by_dataset_state_and_kind(
    client: TestClient, session_factory: sessionmaker[Session], ds: int
) -> None:
    first = _job(session_factory, dataset_id=ds)
    second = _job(session_factory, dataset_id=ds)
    other = _job(session_factory, kind="ingest")
    with session_scope(session_factory) as session:
        jobs.finish(session, first, "failed", error="out of memory")

    def ids(**params: object) -> list[int]:
        r = client.get("/api/jobs", params=params)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()]

    assert ids() == [other, second, first]  # newest first
    assert ids(dataset_id=ds) == [second, first]
    assert ids(dataset_id=ds, active="true") == [second]
    assert ids(dataset_id=ds, active="false") == [first]
    assert ids(kind="ingest") == [other]
    assert client.get("/api/jobs", params={"dataset_id": ds, "active": "false"}).json()[0]["error"] == "out of memory"
    assert client.get("/api/jobs", params={"dataset_id": 0}).status_code == 422


def test_not_found_and_bad_ids(client: TestClient) -> None:
    r = client.get("/api/jobs/999")
    assert r.status_code == 404 and r.json()["detail"] == "job 999 not found"
    assert client.post("/api/jobs/999/cancel").status_code == 404
    assert client.get("/api/jobs/0").status_code == 422
    assert client.get("/api/jobs/abc").status_code == 422


def test_cancel_stops_the_worker_and_is_final(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    job_id = _job(session_factory, total=10)
    progress = jobs.JobProgress(session_factory, job_id, every_s=0)
    progress.step(3, 10)
    r = client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["done"]) == ("cancelled", 3)
    assert client.post(f"/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent
    with pytest.raises(jobs.JobCancelled):  # the worker learns at its next write...
        progress.step(4, 10)
    with pytest.raises(jobs.JobCancelled):
        progress.say("still here")
    assert not progress.finish("done")  # ...and can neither revive nor finish the job
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"

    finished = _job(session_factory)
    with session_scope(session_factory) as session:
        assert jobs.finish(session, finished, "done")
    r = client.post(f"/api/jobs/{finished}/cancel")
    assert r.status_code == 409 and "already done" in r.json()["detail"]


def test_progress_writes_are_throttled(session_factory: sessionmaker[Session], client: TestClient) -> None:
    job_id = _job(session_factory, total=100)
    now = [0.0]
    progress = jobs.JobProgress(session_factory, job_id, every_s=1.0, clock=lambda: now[0])

    def stored() -> int:
        return int(client.get(f"/api/jobs/{job_id}").json()["done"])

    progress.step(1, 100)  # the first step is written
    assert stored() == 1
    now[0] = 0.5
    progress.step(2, 100)  # too soon
    assert stored() == 1
    now[0] = 1.2
    progress.step(3, 100)
    assert stored() == 3
    progress.step(100, 100)  # the last step always is
    assert stored() == 100


def test_abandon_fails_only_the_active_jobs_of_that_kind_and_dataset(
    session_factory: sessionmaker[Session], client: TestClient, ds: int
) -> None:
    stale = _job(session_factory, dataset_id=ds)
    other_kind = _job(session_factory, kind="ingest", dataset_id=ds)
    no_dataset = _job(session_factory)
    with session_scope(session_factory) as session:
        assert jobs.abandon(session, kind="demo_models", dataset_id=ds, reason="the demo stopped") == 1
    states = {j["id"]: (j["status"], j["error"]) for j in client.get("/api/jobs").json()}
    assert states[stale] == ("failed", "the demo stopped")
    assert states[other_kind] == ("queued", None) and states[no_dataset] == ("queued", None)
    with pytest.raises(ValueError, match="ends as one of"), session_scope(session_factory) as session:
        jobs.finish(session, no_dataset, "running")


def test_cancel_needs_the_token_reading_does_not(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    job_id = _job(session_factory)
    app = create_app(settings.model_copy(update={"api_token": "s3cret"}), engine)
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as c:
        assert c.get(f"/api/jobs/{job_id}").status_code == 401  # reads need the token too
        assert c.get(f"/api/jobs/{job_id}", headers=auth).status_code == 200
        assert c.get("/api/jobs", headers=auth).status_code == 200
        assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 401
        assert c.post(f"/api/jobs/{job_id}/cancel", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.get(f"/api/jobs/{job_id}", headers=auth).json()["status"] == "queued"
        r = c.post(f"/api/jobs/{job_id}/cancel", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_a_deleted_dataset_takes_its_jobs_along(
    client: TestClient, session_factory: sessionmaker[Session], ds: int
) -> None:
    job_id = _job(session_factory, dataset_id=ds)
    assert client.delete(f"/api/datasets/{ds}").status_code in (200, 204)
    assert client.get(f"/api/jobs/{job_id}").status_code == 404


def test_a_silent_running_job_is_failed_when_jobs_are_read(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    silent, queued = _job(session_factory), _job(session_factory)
    jobs.JobProgress(session_factory, silent, every_s=0).step(1, 10)
    with session_scope(session_factory) as session:  # not silent long enough yet
        assert jobs.expire_stale(session) == 0
    later = datetime.now(UTC) + timedelta(seconds=jobs.STALE_S + 1)
    with session_scope(session_factory) as session:
        assert jobs.expire_stale(session, now=later) == 1  # only the running one: a queued job has no worker yet
    body = client.get(f"/api/jobs/{silent}").json()
    assert body["status"] == "failed" and "no sign of life" in body["error"], body
    assert client.get(f"/api/jobs/{queued}").json()["status"] == "queued"


def test_the_heartbeat_keeps_a_job_alive_and_stops_when_it_is_cancelled(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    job_id = _job(session_factory)
    progress = jobs.JobProgress(session_factory, job_id)
    with progress.heartbeat(every_s=0.05):
        first = client.get(f"/api/jobs/{job_id}").json()
        deadline = time.monotonic() + 10
        while client.get(f"/api/jobs/{job_id}").json()["updated_at"] == first["updated_at"]:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
        assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"  # a beat marks it running
        assert client.post(f"/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        time.sleep(0.2)  # the heartbeat finds the job cancelled and ends; it never revives it
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
