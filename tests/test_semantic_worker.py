"""The semantic view end to end with a real Celery worker (server-less SQLite broker, tiny CLIP): a clip run keeps
its embeddings, a clusters run reads them on the default queue, text search round-trips through the worker's
CLIP text tower, neighbours come from the API, and deleting the run deletes its files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.queue.embeddings import chunk_files, embeddings_dir, read_embeddings
from backend.settings import Settings
from tests.queue_helpers import ingest_dataset, start_worker, stop_worker, wait_ready, wait_run, write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture
def wsettings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", image_roots=[tmp_path], data_roots=[tmp_path], chunk_size=8)


@pytest.fixture
def wengine(wsettings: Settings) -> Iterator[Engine]:
    wsettings.ensure_dirs()
    engine = make_engine(wsettings.sqlalchemy_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_semantic_view_through_a_worker(wsettings: Settings, wengine: Engine, tmp_path: Path) -> None:
    from workers.tiny_models import _write_clip

    _write_clip(tmp_path / "clip", 2)
    factory: sessionmaker[Session] = make_session_factory(wengine)
    ds = ingest_dataset(factory, write_dataset(tmp_path / "ds", 20, missing=[4]), "ds")
    log = tmp_path / "worker.log"
    proc = start_worker(wsettings, log, "semantic", app="workers.celery_app")
    try:
        wait_ready(proc, log)
        with TestClient(create_app(wsettings, wengine)) as client:
            params = {"model": str(tmp_path / "clip"), "num_workers": 0, "keep_embeddings": True}
            clip = client.post(f"/api/datasets/{ds}/runs", json={"kind": "clip", "params": params}).json()
            wait_run(factory, clip["id"], timeout=180)
            folder = embeddings_dir(wsettings.data_dir, clip["id"], clip["scorer_key"])
            assert len(chunk_files(folder)) == 3 and len(read_embeddings(folder)) == 19  # 20 samples, 1 missing

            body = {"kind": "clusters", "params": {"embeddings_run": clip["id"], "k": 2}}
            clusters = client.post(f"/api/datasets/{ds}/runs", json=body)
            assert clusters.status_code == 202, clusters.text
            done = wait_run(factory, clusters.json()["id"], timeout=120)
            assert (done.done, done.errors) == (20, 1)
            listed = client.get(f"/api/runs/{done.id}/clusters").json()
            assert sum(c["size"] for c in listed["clusters"]) == 19 and all(c["label"] for c in listed["clusters"])

            found = client.post(f"/api/datasets/{ds}/search", json={"run": clip["id"], "text": "a red square", "k": 5})
            assert found.status_code == 200, found.text
            items = found.json()["items"]
            assert len(items) == 5 and all(-1 <= i["score"] <= 1 for i in items)

            first = int(read_embeddings(folder).ids[0])
            nbrs = client.get(f"/api/samples/{first}/neighbours", params={"run": clip["id"], "k": 3}).json()
            assert len(nbrs) == 3 and first not in [n["id"] for n in nbrs]

            assert client.delete(f"/api/runs/{clip['id']}").status_code == 204
            assert not folder.exists()
    finally:
        stop_worker(proc)
