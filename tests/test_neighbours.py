"""Neighbours of a sample and text search from a run's kept embeddings (numpy/faiss in the API), and their 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend import semantic
from backend.api.app import create_app
from backend.models import Run
from backend.queue.embeddings import embeddings_dir, read_embeddings
from backend.settings import Settings
from tests.semantic_helpers import InlineQueue, Seeded, seed_embedded


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path) -> Seeded:
    return seed_embedded(session_factory, settings, tmp_path)


@pytest.fixture
def queue(settings: Settings, session_factory: sessionmaker[Session]) -> InlineQueue:
    return InlineQueue(settings, session_factory)


@pytest.fixture
def client(settings: Settings, engine: Engine, queue: InlineQueue) -> Iterator[TestClient]:
    app = create_app(settings, engine)
    app.state.task_queue = queue
    with TestClient(app) as c:
        yield c


def brute_force(settings: Settings, factory: sessionmaker[Session], run_id: int, q: np.ndarray, source: str) -> list:
    with factory() as s:
        key = s.get(Run, run_id).scorer_key  # type: ignore[union-attr]
    emb = read_embeddings(embeddings_dir(settings.data_dir, run_id, key))
    scores = emb.matrix(source) @ q
    order = np.lexsort((emb.ids, -scores))
    return [(int(emb.ids[i]), float(scores[i])) for i in order]


@pytest.mark.parametrize("exact_up_to", [semantic.EXACT_UP_TO, 10])  # 10: the IVF index (nprobe covers it all)
@pytest.mark.parametrize("source", ["image", "text", "both"])
def test_neighbours_are_the_nearest_by_cosine(
    client: TestClient, seeded: Seeded, settings: Settings, session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch, source: str, exact_up_to: int,
) -> None:  # fmt: skip
    monkeypatch.setattr(semantic, "EXACT_UP_TO", exact_up_to)
    monkeypatch.setattr(semantic, "INDEXES", semantic.NeighbourIndex())
    sid = seeded.embedded[7]
    r = client.get(f"/api/samples/{sid}/neighbours", params={"run": seeded.clip_run, "k": 12, "source": source})
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got) == 12 and sid not in [g["id"] for g in got]
    emb = read_embeddings(embeddings_dir(settings.data_dir, seeded.clip_run, "c" * 64))
    q = emb.matrix(source, np.asarray([emb.row_of(sid)]))[0]
    want = [x for x in brute_force(settings, session_factory, seeded.clip_run, q, source) if x[0] != sid][:12]
    assert [g["score"] for g in got] == pytest.approx([w[1] for w in want], abs=2e-3)
    assert {g["id"] for g in got[:10]} <= {w[0] for w in want}
    assert all(seeded.truth[g["id"]] == seeded.truth[sid] for g in got)  # the blob's own members


def test_neighbours_refusals(client: TestClient, seeded: Seeded) -> None:
    sid = seeded.embedded[0]
    assert client.get(f"/api/samples/{sid}/neighbours", params={"run": 999}).status_code == 422
    r = client.get(f"/api/samples/{sid}/neighbours", params={"run": seeded.loss_run})
    assert r.status_code == 422 and "kept no embeddings" in r.json()["detail"]
    assert client.get(f"/api/samples/{sid}/neighbours", params={"run": seeded.clip_run, "k": 0}).status_code == 422
    assert client.get(f"/api/samples/{sid}/neighbours").status_code == 422  # run is required
    no_emb = seeded.ids[5]
    r = client.get(f"/api/samples/{no_emb}/neighbours", params={"run": seeded.clip_run})
    assert r.status_code == 404 and "no embedding" in r.json()["detail"]
    assert client.get("/api/samples/99999/neighbours", params={"run": seeded.clip_run}).status_code == 404


def test_text_search_ranks_by_the_query_embedding(
    client: TestClient, queue: InlineQueue, seeded: Seeded, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    emb = read_embeddings(embeddings_dir(settings.data_dir, seeded.clip_run, "c" * 64))
    blob1 = [r for r, i in enumerate(emb.ids.tolist()) if seeded.truth[i] == 1]
    query = emb.matrix("text", np.asarray(blob1)).mean(0)  # a "text" that lies in blob 1
    queue.vectors["a boat"] = query.tolist()
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/search", json={"run": seeded.clip_run, "text": " a boat ", "k": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5 and all(seeded.truth[i["id"]] == 1 for i in items)
    want = brute_force(settings, session_factory, seeded.clip_run, query / np.linalg.norm(query), "image")[:5]
    assert [i["id"] for i in items] == [w[0] for w in want]
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_text_search_refusals(client: TestClient, queue: InlineQueue, seeded: Seeded) -> None:
    ds = seeded.dataset_id
    url = f"/api/datasets/{ds}/search"
    r = client.post(url, json={"run": seeded.clip_run, "text": "   "})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post(url, json={"run": seeded.loss_run, "text": "a boat"})
    assert r.status_code == 422 and "kept no embeddings" in r.json()["detail"]
    assert client.post(url, json={"run": 999, "text": "a boat"}).status_code == 422
    assert client.post("/api/datasets/999/search", json={"run": seeded.clip_run, "text": "a boat"}).status_code == 404
    queue.down = True
    r = client.post(url, json={"run": seeded.clip_run, "text": "a boat"})
    assert r.status_code == 504 and "no worker answered" in r.json()["detail"]
