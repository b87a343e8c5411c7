"""Derived runs through the API with their task run in-process: projection and clusters become axes, clusters
are listed with labels and medians, bad requests are 4xx at POST time, cancel and delete work, files go with
the run and the dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.column_files import ColumnFiles, columns_root
from backend.models import Run, Score
from backend.queue.embeddings import embeddings_dir, run_dir
from backend.settings import Settings
from tests.semantic_helpers import WORDS, InlineQueue, Seeded, seed_embedded


@pytest.fixture
def queue(settings: Settings, session_factory: sessionmaker[Session]) -> InlineQueue:
    return InlineQueue(settings, session_factory)


@pytest.fixture
def client(settings: Settings, engine: Engine, queue: InlineQueue) -> Iterator[TestClient]:
    app = create_app(settings, engine)
    app.state.task_queue = queue
    with TestClient(app) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path) -> Seeded:
    return seed_embedded(session_factory, settings, tmp_path)


def post(client: TestClient, ds: int, kind: str, **params: object) -> dict:
    r = client.post(f"/api/datasets/{ds}/runs", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    return r.json()


def test_clusters_run_finds_the_blobs_and_lists_them(client: TestClient, queue: InlineQueue, seeded: Seeded) -> None:
    run = post(client, seeded.dataset_id, "clusters", embeddings_run=seeded.clip_run, source="both", k=3)
    assert run["status"] == "queued" and run["total"] == 60 and run["params"]["k"] == 3
    assert queue.derived == [(run["id"], run["scorer_key"])]
    (report,) = queue.drain()
    assert report["rows"] == 60
    done = client.get(f"/api/runs/{run['id']}").json()
    assert (done["status"], done["done"], done["errors"]) == ("done", 60, 1)  # the sample without embeddings
    space = client.get(f"/api/datasets/{seeded.dataset_id}/space",
                       params={"x": f"{run['id']}:cluster", "y": "clip", "format": "json"}).json()  # fmt: skip
    got = dict(zip(space["ids"], space["x"], strict=True))
    assert sorted(got) == seeded.embedded
    # The clusters are the blobs (up to naming): each blob maps to one cluster and back.
    pairs = {(seeded.truth[i], int(c)) for i, c in got.items()}
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    listed = client.get(f"/api/runs/{run['id']}/clusters").json()
    assert listed["k"] == 3 and sum(c["size"] for c in listed["clusters"]) == 59
    for c in listed["clusters"]:
        blob = next(b for b, cl in pairs if cl == c["id"])
        assert c["label"].split()[0] == WORDS[blob]  # the blob's word is its top TF-IDF word
        assert c["examples"] and all(got[i] == c["id"] for i in c["examples"])
        assert c["medians"][f"{seeded.loss_run}:loss_sum"] == blob  # the loss run's value is the blob number
    # Posting it again returns the finished run, enqueues nothing.
    again = post(client, seeded.dataset_id, "clusters", embeddings_run=seeded.clip_run, source="both", k=3)
    assert again["id"] == run["id"] and again["status"] == "done" and queue.derived == []


def test_default_k_and_projection_axes(client: TestClient, queue: InlineQueue, seeded: Seeded) -> None:
    clusters = post(client, seeded.dataset_id, "clusters", embeddings_run=seeded.clip_run)
    assert clusters["params"]["k"] == 2  # round(sqrt(59 / 10)) = 2
    proj = post(client, seeded.dataset_id, "projection", embeddings_run=seeded.clip_run, source="image")
    queue.drain()
    assert client.get(f"/api/runs/{proj['id']}").json()["status"] == "done"
    space = client.get(f"/api/datasets/{seeded.dataset_id}/space",
                       params={"x": f"{proj['id']}:map_x", "y": f"{proj['id']}:map_y", "format": "json"}).json()  # fmt: skip
    assert sorted(space["ids"]) == seeded.embedded
    xy = {i: (x, y) for i, x, y in zip(space["ids"], space["x"], space["y"], strict=True)}
    # Blobs stay apart on the map: each point is nearer its own blob's centre than any other's.
    centres = {b: np.mean([xy[i] for i in xy if seeded.truth[i] == b], axis=0) for b in range(3)}
    for i, p in xy.items():
        d = {b: float(np.linalg.norm(np.asarray(p) - c)) for b, c in centres.items()}
        assert min(d, key=d.__getitem__) == seeded.truth[i]


def test_bad_requests_are_4xx_at_post_time(client: TestClient, queue: InlineQueue, seeded: Seeded) -> None:
    ds = seeded.dataset_id

    def refused(kind: str, **params: object) -> str:
        r = client.post(f"/api/datasets/{ds}/runs", json={"kind": kind, "params": params})
        assert r.status_code == 422, r.text
        return str(r.json()["detail"])

    assert "not a run of dataset" in refused("clusters", embeddings_run=999)
    assert "kept no embeddings" in refused("clusters", embeddings_run=seeded.loss_run)
    assert "at least 61 embedded samples" in refused("clusters", embeddings_run=seeded.clip_run, k=61)
    assert "k" in refused("clusters", embeddings_run=seeded.clip_run, k=1)
    assert "source" in refused("projection", embeddings_run=seeded.clip_run, source="audio")
    assert "method" in refused("projection", embeddings_run=seeded.clip_run, method="tsne")
    assert "threshold" in refused("duplicates", embeddings_run=seeded.clip_run, threshold=1.5)
    assert "embeddings_run" in refused("duplicates")
    assert queue.derived == []
    assert (
        client.post("/api/datasets/999/runs", json={"kind": "clusters", "params": {"embeddings_run": 1}}).status_code
        == 404
    )
    assert client.get(f"/api/runs/{seeded.loss_run}/clusters").status_code == 422
    queue.down = True
    r = client.post(
        f"/api/datasets/{ds}/runs", json={"kind": "clusters", "params": {"embeddings_run": seeded.clip_run}}
    )
    assert r.status_code == 503


def test_clip_run_still_running_is_refused(
    client: TestClient, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    with session_factory() as s:
        run = s.get(Run, seeded.clip_run)
        assert run is not None
        run.status = "running"
        s.commit()
    r = client.post(f"/api/datasets/{seeded.dataset_id}/runs",
                    json={"kind": "clusters", "params": {"embeddings_run": seeded.clip_run}})  # fmt: skip
    assert r.status_code == 422 and "wait until it is done" in r.json()["detail"]


def test_cancel_then_post_again_restarts(client: TestClient, queue: InlineQueue, seeded: Seeded,
                                         session_factory: sessionmaker[Session]) -> None:  # fmt: skip
    run = post(client, seeded.dataset_id, "duplicates", embeddings_run=seeded.clip_run, threshold=0.999)
    assert client.post(f"/api/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    (report,) = queue.drain()  # the delivered task finds a cancelled run: nothing written
    assert "skipped" in report
    again = post(client, seeded.dataset_id, "duplicates", embeddings_run=seeded.clip_run, threshold=0.999)
    assert again["id"] == run["id"] and again["status"] == "queued"
    queue.drain()
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "done"
    with session_factory() as s:
        ranks = s.scalars(select(Score.metrics).where(Score.run_id == run["id"], Score.error.is_(None))).all()
    assert len(ranks) == 59 and all(m["dup_rank"] == 0 and m["dup_size"] == 1 for m in ranks)  # no duplicates


def test_redelivery_while_running_is_dropped_and_a_stale_one_takes_over(
    queue: InlineQueue, client: TestClient, seeded: Seeded, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from datetime import timedelta

    from backend.queue.derived import claim
    from backend.queue.progress import utcnow

    run = post(client, seeded.dataset_id, "clusters", embeddings_run=seeded.clip_run, k=3)
    with session_factory() as s:
        first = claim(s, run["id"], run["scorer_key"], settings.data_dir, lease_s=60)
        s.commit()
        assert not isinstance(first, str)
        second = claim(s, run["id"], run["scorer_key"], settings.data_dir, lease_s=60)
        assert isinstance(second, str) and "running" in second
        later = claim(s, run["id"], run["scorer_key"], settings.data_dir, lease_s=60,
                      now=utcnow() + timedelta(seconds=120))  # fmt: skip
        assert not isinstance(later, str)  # the first worker stopped beating: taken over
        s.commit()
    queue.derived.clear()


def test_files_go_with_the_run_and_the_dataset(
    client: TestClient, queue: InlineQueue, seeded: Seeded, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    clusters = post(client, seeded.dataset_id, "clusters", embeddings_run=seeded.clip_run, k=3)
    queue.drain()
    with session_factory() as s:
        clip_key = s.get(Run, seeded.clip_run).scorer_key  # type: ignore[union-attr]
    emb = embeddings_dir(settings.data_dir, seeded.clip_run, clip_key)
    labels = run_dir(settings.data_dir, clusters["id"], clusters["scorer_key"])
    assert emb.is_dir() and (labels / "clusters.json").is_file()
    # The worker that finished the run kept its column (backend/queue/columns.py); the run's deletion takes it.
    kept = ColumnFiles(columns_root(settings.data_dir)).column_path(seeded.dataset_id, clusters["id"], "cluster")
    assert kept.is_file()
    assert client.delete(f"/api/runs/{clusters['id']}").status_code == 204
    assert not kept.exists() and not labels.exists() and client.get(f"/api/runs/{clusters['id']}").status_code == 404
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Score).where(Score.run_id == clusters["id"])) == 0
    assert client.delete(f"/api/datasets/{seeded.dataset_id}").status_code == 204
    assert not emb.exists() and not (settings.data_dir / "runs" / emb.parent.name).exists()
    assert client.delete("/api/runs/999").status_code == 404


def test_a_lost_task_is_sent_again(
    client: TestClient, queue: InlineQueue, seeded: Seeded, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """A server-less broker loses a killed worker's task: re-posting a run that stopped beating re-sends it,
    and a restarted worker's re-enqueue sends derived runs as their one task (never as chunks)."""
    from datetime import timedelta

    from backend.runs import requeue_active_runs

    run = post(client, seeded.dataset_id, "projection", embeddings_run=seeded.clip_run, method="pacmap")
    queue.derived.clear()  # lost
    assert (
        post(client, seeded.dataset_id, "projection", embeddings_run=seeded.clip_run, method="pacmap")["id"]
        == run["id"]
    )
    assert queue.derived == []  # fresh: not sent twice
    with session_factory() as s:
        r = s.get(Run, run["id"])
        assert r is not None
        r.updated_at = r.updated_at - timedelta(seconds=2 * settings.job_lease_s + 1)
        s.commit()
    post(client, seeded.dataset_id, "projection", embeddings_run=seeded.clip_run, method="pacmap")
    assert queue.derived == [(run["id"], run["scorer_key"])]
    queue.derived.clear()
    with session_factory() as s:
        assert requeue_active_runs(s, queue, 100) == {run["id"]: 60}
    assert queue.derived == [(run["id"], run["scorer_key"])]
    queue.drain()
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "done"  # PaCMAP works too
