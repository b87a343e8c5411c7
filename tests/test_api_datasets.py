from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from backend.api.app import create_app
from backend.migrate import head
from backend.settings import Settings
from tests.ingest_helpers import ingest_via_api, post_ingest

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as c:
        yield c


def post_sample(client: TestClient, name: str = "sample") -> dict:
    body = {"name": name, "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": str(SAMPLE_DIR)}
    return ingest_via_api(client, body)  # 202 and a job (tests/test_ingest_jobs.py has the job's details)


def test_health(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["schema_revision"] == head()


def test_create_list_get_delete(client: TestClient) -> None:
    ds = post_sample(client)
    assert ds["n_samples"] == 19
    assert ds["task_types"]["short_answer"] == 8
    assert ds["task_type_prompts"]["short_answer"].startswith("Answer the question")
    listed = client.get("/api/datasets").json()
    assert [d["id"] for d in listed] == [ds["id"]]
    assert client.get(f"/api/datasets/{ds['id']}").json()["name"] == "sample"
    assert client.delete(f"/api/datasets/{ds['id']}").status_code == 204
    r = client.get(f"/api/datasets/{ds['id']}")
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get("/api/datasets").json() == []


def test_task_type_counts_are_kept_at_ingest_and_counted_for_older_datasets(client: TestClient, engine: Engine) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from backend.models import Dataset

    ds = post_sample(client)
    with Session(engine) as s:
        kept = s.get(Dataset, ds["id"])
        assert kept is not None and kept.task_type_counts == ds["task_types"] and sum(ds["task_types"].values()) == 19
        s.execute(update(Dataset).where(Dataset.id == ds["id"]).values(task_type_counts=None))  # as before 0008
        s.commit()
    assert client.get(f"/api/datasets/{ds['id']}").json()["task_types"] == ds["task_types"]
    other = post_sample(client, "other")
    assert [d["task_types"] for d in client.get("/api/datasets").json()] == [ds["task_types"], other["task_types"]]


def test_samples_paged_and_filtered(client: TestClient) -> None:
    ds = post_sample(client)
    page = client.get(f"/api/datasets/{ds['id']}/samples", params={"offset": 2, "limit": 5}).json()
    assert page["total"] == 19 and len(page["items"]) == 5
    assert page["items"][0]["external_id"] == "s02"
    short = client.get(
        f"/api/datasets/{ds['id']}/samples", params={"task_type": "short_answer", "limit": 100}
    ).json()
    assert short["total"] == 8 and {s["task_type"] for s in short["items"]} == {"short_answer"}
    one = client.get(f"/api/samples/{page['items'][0]['id']}").json()
    assert one["conversations"][0]["from"] == "human" and one["scores"] == {}
    assert client.get(f"/api/datasets/{ds['id']}/samples", params={"limit": 10**6}).status_code == 422
    assert client.get("/api/samples/999999").status_code == 404
    assert client.get("/api/datasets/abc").status_code == 422


def test_ingest_errors_are_422_and_write_nothing(client: TestClient, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "x", "conversations": [{"from": "robot", "value": "hi"}]}]))
    job = post_ingest(client, {"name": "bad", "paths": [str(bad)]})  # malformed content: the job fails
    assert job["status"] == "failed"
    assert "record 0" in job["error"] and "unknown role 'robot'" in job["error"]
    assert client.get("/api/datasets").json() == []
    r = client.post("/api/datasets", json={"name": "bad", "paths": [str(bad)]}, params={"wait": "true"})
    assert r.status_code == 422 and "unknown role 'robot'" in r.json()["detail"]  # the synchronous form
    r = client.post("/api/datasets", json={"name": " ", "paths": [str(bad)]})
    assert r.status_code == 422 and "must not be empty" in r.json()["detail"]  # refused before any job
    assert client.get("/api/datasets").json() == []


def test_ingest_outside_allowed_roots_is_refused(client: TestClient) -> None:
    r = client.post("/api/datasets", json={"name": "x", "paths": ["/etc/passwd"]})
    assert r.status_code == 403 and "/etc/passwd" in r.json()["detail"]
    r = client.post(
        "/api/datasets",
        json={"name": "x", "paths": [str(SAMPLE_DIR / "llava_sample.json")], "image_root": "/etc"},
    )
    assert r.status_code == 403
    r = client.post(
        "/api/datasets", json={"name": "x", "paths": [str(SAMPLE_DIR / "../../../../etc/passwd")]}
    )
    assert r.status_code == 403


def test_body_size_limit(settings: Settings, engine: Engine) -> None:
    settings.max_request_bytes = 1000
    with TestClient(create_app(settings, engine)) as c:
        r = c.post("/api/datasets", content=b"x" * 5000, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_auth_token_guards_mutations(settings: Settings, engine: Engine) -> None:
    settings.api_token = "s3cret"
    with TestClient(create_app(settings, engine)) as c:
        body = {"name": "a", "paths": [str(SAMPLE_DIR / "llava_sample.json")]}
        assert c.post("/api/datasets", json=body).status_code == 401
        assert c.post("/api/datasets", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
        r = c.post("/api/datasets", json=body, headers={"Authorization": "Bearer s3cret"}, params={"wait": "true"})
        assert r.status_code == 201
        assert c.get("/api/datasets").status_code == 401  # with a token configured, reads need one too
        assert c.get("/api/datasets", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.delete(f"/api/datasets/{r.json()['id']}").status_code == 401
