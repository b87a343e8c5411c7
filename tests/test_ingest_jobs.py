"""An ingest as a background job (backend/ingest_jobs.py): POST /api/datasets answers 202 with the job, which ends
done with result.dataset_id; a malformed file fails it naming file, record and field; a cancel stops it; either
way no dataset is written. Progress moves in bytes; a restarted server fails the ingest it left running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

import backend.ingest
from backend import ingest_jobs, jobs
from backend.api.app import create_app
from backend.db import session_scope
from backend.ingest_jobs import INTERRUPTED
from backend.models import Dataset, Sample
from backend.settings import Settings
from tests.ingest_helpers import post_ingest, wait_job

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


@pytest.fixture
def slow_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches that each take a while, so an ingest of a generated file lasts long enough to watch."""
    flush = backend.ingest._flush

    def slow(session: Session, rows: list[tuple[Any, ...]]) -> None:
        time.sleep(0.03)
        flush(session, rows)

    monkeypatch.setattr(backend.ingest, "BATCH_ROWS", 1000)
    monkeypatch.setattr(backend.ingest, "_flush", slow)


def big_file(path: Path, n: int) -> Path:
    with path.open("wb") as fh:
        for i in range(n):
            record = {
                "id": f"r{i}",
                "conversations": [
                    {"from": "human", "value": f"What is item {i}?"},
                    {"from": "gpt", "value": f"It is item number {i}, one of many."},
                ],
            }
            fh.write(orjson.dumps(record) + b"\n")
    return path


def stored(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(Dataset)) or 0, s.scalar(
            select(func.count()).select_from(Sample)
        ) or 0


def test_ingest_answers_202_and_the_job_ends_with_the_dataset(client: TestClient) -> None:
    body = {"name": "sample", "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": str(SAMPLE_DIR)}
    r = client.post("/api/datasets", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert set(accepted) == {"job", "dataset_id"} and accepted["dataset_id"] is None
    assert accepted["job"]["kind"] == "ingest" and accepted["job"]["unit"] == "byte"
    assert accepted["job"]["total"] == (SAMPLE_DIR / "llava_sample.json").stat().st_size
    job = wait_job(client, accepted["job"]["id"])
    assert job["status"] == "done" and job["error"] is None, job
    assert job["done"] == job["total"] and job["result"]["n_samples"] == 19
    ds = client.get(f"/api/datasets/{job['result']['dataset_id']}").json()
    assert (ds["name"], ds["n_samples"], ds["task_types"]["short_answer"]) == ("sample", 19, 8)
    page = client.get(f"/api/datasets/{ds['id']}/samples", params={"limit": 3}).json()
    assert page["total"] == 19 and page["items"][0]["external_id"] == "s01"
    listed = client.get("/api/jobs", params={"kind": "ingest"}).json()
    assert [j["id"] for j in listed] == [job["id"]]


def test_refusals_that_need_no_reading_are_4xx_at_once(client: TestClient, tmp_path: Path) -> None:
    body = {"name": "sample", "paths": [str(SAMPLE_DIR / "llava_sample.json")]}
    assert post_ingest(client, body)["status"] == "done"
    r = client.post("/api/datasets", json=body)
    assert r.status_code == 422 and "is taken" in r.json()["detail"]
    r = client.post("/api/datasets", json={"name": "x", "paths": [str(tmp_path / "nope.json")]})
    assert r.status_code == 422 and "no such file" in r.json()["detail"]
    assert client.get("/api/jobs", params={"kind": "ingest"}).json()[0]["status"] == "done"  # no job for those


def test_wait_true_ingests_within_the_request(client: TestClient, tmp_path: Path) -> None:
    body = {"name": "sync", "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": str(SAMPLE_DIR)}
    r = client.post("/api/datasets", params={"wait": "true"}, json=body)
    assert r.status_code == 201 and r.json()["n_samples"] == 19 and r.json()["name"] == "sync"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "conversations": [{"from": "robot", "value": "hi"}]}]))
    r = client.post("/api/datasets", params={"wait": "true"}, json={"name": "bad", "paths": [str(bad)]})
    assert r.status_code == 422 and "unknown role 'robot'" in r.json()["detail"]


def test_a_malformed_file_fails_the_job_naming_file_record_field_and_writes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    records: list[dict[str, Any]] = [{"id": f"g{i}", **good} for i in range(7)]
    records.append({"id": "broken", "conversations": [{"value": "no role"}]})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    job = post_ingest(client, {"name": "bad", "paths": [str(bad)]})
    assert job["status"] == "failed" and job["result"] is None, job
    assert str(bad) in job["error"] and "record 7" in job["error"] and "conversations[0].from" in job["error"]
    assert "missing" in job["error"]
    assert client.get("/api/datasets").json() == []
    assert stored(session_factory) == (0, 0)


def test_cancel_mid_ingest_stops_it_and_writes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path, slow_batches: None
) -> None:
    path = big_file(tmp_path / "big.jsonl", 60_000)
    r = client.post("/api/datasets", json={"name": "big", "paths": [str(path)]})
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/api/jobs/{job_id}").json()["done"] == 0:  # it has started writing batches
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = client.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert wait_job(client, job_id)["status"] == "cancelled"
    time.sleep(0.3)  # whatever the thread did after the cancel has landed by now
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["result"] is None and 0 < job["done"] < job["total"], job
    assert stored(session_factory) == (0, 0)
    assert client.get("/api/datasets").json() == []
    assert client.post(f"/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent, still


def test_progress_advances_through_a_big_file(
    client: TestClient, tmp_path: Path, slow_batches: None
) -> None:
    path = big_file(tmp_path / "big.jsonl", 30_000)
    r = client.post("/api/datasets", json={"name": "big", "paths": [str(path)]})
    job_id, total = r.json()["job"]["id"], r.json()["job"]["total"]
    assert total == path.stat().st_size
    seen: list[int] = []
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        seen.append(job["done"])
        if job["status"] == "running" and job["done"]:
            assert "samples read" in job["message"]
        time.sleep(0.05)
    assert job["status"] == "done" and job["done"] == total and job["result"]["n_samples"] == 30_000, job
    moving = sorted(set(d for d in seen if 0 < d < total))
    assert len(moving) >= 3 and seen == sorted(seen), seen  # several steps, never backwards


def test_the_dataset_records_who_asked(settings: Settings, engine: Engine) -> None:
    settings = settings.model_copy(update={"api_token": "s3cret"})
    with TestClient(create_app(settings, engine)) as c:
        auth = {"Authorization": "Bearer s3cret"}
        job = post_ingest(c, {"name": "mine", "paths": [str(SAMPLE_DIR / "llava_sample.json")]}, auth)
        ds = c.get(f"/api/datasets/{job['result']['dataset_id']}", headers=auth).json()
        assert ds["created_by"] == "env"


def test_a_restarted_server_fails_the_ingest_it_left_running(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as s:
        running = jobs.create_job(s, "ingest", unit="byte", total=100)
        jobs.advance(s, running.id, done=40)
        other = jobs.create_job(s, "demo_models", unit="step")
        running_id, other_id = running.id, other.id
    with TestClient(create_app(settings, engine)) as c:
        job = c.get(f"/api/jobs/{running_id}").json()
        assert (job["status"], job["error"]) == ("failed", INTERRUPTED)
        assert c.get(f"/api/jobs/{other_id}").json()["status"] == "queued"  # not an ingest: not ours to fail


def test_ingests_wait_their_turn_and_a_queued_one_can_be_cancelled(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    small = {"name": "first", "paths": [str(SAMPLE_DIR / "llava_sample.json")]}
    with ingest_jobs._ONE_AT_A_TIME:  # an ingest under way (what a second one waits for)
        first = client.post("/api/datasets", json=small).json()["job"]
        second = client.post("/api/datasets", json={**small, "name": "second"}).json()["job"]
        time.sleep(0.2)
        assert [client.get(f"/api/jobs/{j['id']}").json()["status"] for j in (first, second)] == ["queued"] * 2
        assert client.post(f"/api/jobs/{second['id']}/cancel").json()["status"] == "cancelled"
    assert wait_job(client, first["id"])["status"] == "done"
    time.sleep(0.3)  # the second's thread has had its turn, and found itself cancelled
    assert wait_job(client, second["id"])["status"] == "cancelled"
    assert [d["name"] for d in client.get("/api/datasets").json()] == ["first"]
    assert stored(session_factory) == (1, 19)
