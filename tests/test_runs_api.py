"""The scorer and run endpoints: 202, 404, 409, 422, and 503 with nothing left behind when the broker is down."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.queue import QueueUnavailable
from backend.queue.chunks import upsert_scores
from backend.scorer_specs import ScoreResult
from backend.settings import Settings
from tests.queue_helpers import ingest_dataset, write_dataset


class FakeQueue:
    """Stands in for backend.queue.TaskQueue: records the chunks it is given."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, str, list[int]]] = []
        self.down = False

    def check(self) -> None:
        if self.down:
            raise QueueUnavailable("the task queue at redis://nowhere is unreachable: refused")

    def send_chunks(self, run_id: int, scorer_key: str, chunks: Iterable[Sequence[int]]) -> int:
        for c in chunks:
            self.chunks.append((run_id, scorer_key, list(c)))
        return len(self.chunks)


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def client(settings: Settings, engine: Engine, queue: FakeQueue) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"chunk_size": 4}), engine)
    app.state.task_queue = queue
    with TestClient(app) as c:
        yield c


@pytest.fixture
def ds(session_factory: sessionmaker[Session], tmp_path: Path) -> int:
    return ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 10, missing=[3]), "ds")


def test_scorers(client: TestClient) -> None:
    body = client.get("/api/scorers").json()
    by_kind = {s["kind"]: s for s in body}
    assert {"clip", "mllm_loss", "lm_loss", "ifd", "length"} <= set(by_kind)
    assert by_kind["clip"]["metrics"] == ["similarity"]
    assert "loss_sum" in by_kind["mllm_loss"]["metrics"] and "image_gain" not in by_kind["mllm_loss"]["metrics"]
    assert by_kind["mllm_loss"]["optional_metrics"] == {
        "image_gain": ["loss_no_image", "image_gain"], "question_gain": ["loss_no_question", "mifd"],
    }  # fmt: skip
    assert by_kind["clip"]["params_schema"]["properties"]["text"]["enum"] == [
        "answers", "conversation", "first_turn", "questions",
    ]  # fmt: skip


def test_create_get_list_cancel_resume(client: TestClient, queue: FakeQueue, ds: int) -> None:
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
    assert r.status_code == 202, r.text
    run = r.json()
    assert {k: run[k] for k in ("dataset_id", "kind", "status", "total", "done", "errors")} == {
        "dataset_id": ds, "kind": "length", "status": "queued", "total": 10, "done": 0, "errors": 0,
    }  # fmt: skip
    assert run["samples_per_s"] is None and run["eta_s"] is None and len(run["scorer_key"]) == 64
    assert run["params"] == {"model": None} and run["created_at"]
    assert [len(c) for _, _, c in queue.chunks] == [4, 4, 2]
    assert {(rid, key) for rid, key, _ in queue.chunks} == {(run["id"], run["scorer_key"])}

    assert client.get(f"/api/runs/{run['id']}").json()["id"] == run["id"]
    assert [x["id"] for x in client.get(f"/api/datasets/{ds}/runs").json()] == [run["id"]]
    # The same scorer again while the run is queued: the same run, nothing new enqueued.
    again = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {"model": None}})
    assert again.status_code == 202 and again.json()["id"] == run["id"] and len(queue.chunks) == 3

    r = client.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/api/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    # Posting it again resumes it: all 10 samples are still missing.
    resumed = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length"})
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
    assert resumed.json()["id"] == run["id"] and len(queue.chunks) == 6


def test_progress_errors_and_conflict(
    client: TestClient, queue: FakeQueue, ds: int, session_factory: sessionmaker[Session]
) -> None:
    run = client.post(f"/api/datasets/{ds}/runs", json={"kind": "clip", "params": {"model": "ViT-B-32"}}).json()
    ids = [i for _, _, c in queue.chunks for i in c]
    with session_factory() as s:
        upsert_scores(s, run["id"], [ScoreResult(i, {"similarity": 0.5}, None) for i in ids[:6]])
        upsert_scores(s, run["id"], [ScoreResult(ids[6], None, "image missing: images/00003.png")])
        s.commit()
    got = client.get(f"/api/runs/{run['id']}").json()
    assert (got["status"], got["done"], got["errors"], got["total"]) == ("running", 7, 1, 10)
    assert got["samples_per_s"] is not None and got["eta_s"] is not None
    errors = client.get(f"/api/runs/{run['id']}/errors").json()
    assert errors["total"] == 1 and errors["reasons"] == {"image missing": 1}
    assert errors["items"][0]["external_id"] == "s00006" and errors["items"][0]["error"].startswith("image missing")
    sample = client.get(f"/api/samples/{ids[6]}").json()
    assert sample["scores"][str(run["id"])]["error"] == "image missing: images/00003.png"
    with session_factory() as s:
        upsert_scores(s, run["id"], [ScoreResult(i, {"similarity": 0.1}, None) for i in ids[7:]])
        s.commit()
    done = client.get(f"/api/runs/{run['id']}").json()
    assert (done["status"], done["done"], done["eta_s"]) == ("done", 10, 0.0)
    assert done["finished_at"] and done["message"] == "1 sample(s) could not be scored"
    r = client.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 409 and "already done" in r.json()["detail"]
    # Posting a finished run again: nothing to do, nothing enqueued.
    n = len(queue.chunks)
    again = client.post(f"/api/datasets/{ds}/runs", json={"kind": "clip", "params": {"model": "ViT-B-32"}})
    assert again.status_code == 202 and again.json()["status"] == "done" and len(queue.chunks) == n


def test_404s_and_422s(client: TestClient, ds: int) -> None:
    assert client.post("/api/datasets/999/runs", json={"kind": "length"}).status_code == 404
    assert client.get("/api/datasets/999/runs").status_code == 404
    assert client.get("/api/runs/999").status_code == 404
    assert client.post("/api/runs/999/cancel").status_code == 404
    assert client.get("/api/runs/999/errors").status_code == 404
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "nope"})
    assert r.status_code == 422 and "unknown scorer kind 'nope'" in r.json()["detail"]
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "clip", "params": {"text": "everything"}})
    assert r.status_code == 422 and "clip.text" in r.json()["detail"]
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {"bogus": 1}})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    assert client.post(f"/api/datasets/{ds}/runs", json={"params": {}}).status_code == 422
    assert client.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "extra": 1}).status_code == 422
    assert client.get(f"/api/datasets/{ds}/runs").json() == []


def test_503_when_the_broker_is_unreachable_leaves_no_run(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 5), "ds")
    # A real client on a Redis port where nothing listens.
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    with TestClient(create_app(down, engine)) as client:
        r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length"})
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"] and "127.0.0.1:9" in r.json()["detail"]
        assert client.get(f"/api/datasets/{ds}/runs").json() == []
        # Validation still comes first: a bad request is a 422, not a 503.
        assert client.post(f"/api/datasets/{ds}/runs", json={"kind": "nope"}).status_code == 422


def test_503_when_the_broker_fails_while_enqueueing(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    class Flaky(FakeQueue):
        def send_chunks(self, run_id: int, scorer_key: str, chunks: Iterable[Sequence[int]]) -> int:
            raise QueueUnavailable("the task queue at redis://x refused work after 0 chunk(s): gone")

    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 5), "ds")
    app = create_app(settings, engine)
    app.state.task_queue = Flaky()
    with TestClient(app) as client:
        r = client.post(f"/api/datasets/{ds}/runs", json={"kind": "length"})
        assert r.status_code == 503 and "refused work" in r.json()["detail"]
        assert client.get(f"/api/datasets/{ds}/runs").json() == []


def test_mutations_need_the_token(
    settings: Settings, engine: Engine, queue: FakeQueue, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 3), "ds")
    app = create_app(settings.model_copy(update={"api_token": "s3cret"}), engine)
    app.state.task_queue = queue
    with TestClient(app) as client:
        assert client.post(f"/api/datasets/{ds}/runs", json={"kind": "length"}).status_code == 401
        assert client.get("/api/scorers").status_code == 401  # reads need the token too
        assert client.get("/api/scorers", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = client.post(
            f"/api/datasets/{ds}/runs", json={"kind": "length"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert r.status_code == 202
        assert client.post(f"/api/runs/{r.json()['id']}/cancel").status_code == 401
