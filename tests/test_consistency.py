"""Consistency: deletes cascade (rows and cached arrays), migrations round-trip with data, two API processes agree."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.migrate import current, downgrade, head, upgrade
from backend.models import Curriculum, CurriculumStage, Dataset, Run, Sample, Score, Selection
from backend.settings import Settings
from tests.live_server import served
from tests.seeding import seed_scored

ROOT = Path(__file__).resolve().parent.parent
TABLES = (Dataset, Sample, Run, Score, Selection, Curriculum, CurriculumStage)


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def test_delete_dataset_removes_rows_and_cached_arrays(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    keep = seed_scored(session_factory, tmp_path, n=50, seed=1)
    gone = seed_scored(session_factory, tmp_path, n=80, seed=2)
    app = create_app(settings, engine)
    with TestClient(app) as c:
        for ds in (keep.dataset_id, gone.dataset_id):
            assert c.get(f"/api/datasets/{ds}/space", params={"color": "meta:defect"}).status_code == 200
        sel = c.post(f"/api/datasets/{gone.dataset_id}/selections", json={"region": {"type": "all"}}).json()
        c.post(f"/api/datasets/{gone.dataset_id}/curricula", json={"stages": [sel["id"]]})
        before = counts(session_factory)
        cached = len(app.state.space.cache)
        assert c.delete(f"/api/datasets/{gone.dataset_id}").status_code == 204
        after = counts(session_factory)
        assert after == {"datasets": 1, "samples": 50, "runs": 2, "scores": 100, "selections": 0, "curricula": 0,
                         "curriculum_stages": 0}
        assert before["samples"] == 130
        assert len(app.state.space.cache) < cached
        assert not app.state.space.drop_dataset(gone.dataset_id)  # nothing of it left to drop
        assert c.get(f"/api/datasets/{gone.dataset_id}/space").status_code == 404
        assert c.get(f"/api/selections/{sel['id']}").status_code == 404
        assert c.get(f"/api/datasets/{keep.dataset_id}/space").status_code == 200


def test_migration_round_trip_on_populated_database_loses_nothing(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seed_scored(session_factory, tmp_path, n=120)
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=str(engine.url)), engine)) as c:
        c.post("/api/datasets/1/selections", json={"region": {"type": "top", "percent": 10, "axes": "both"}})
    before = counts(session_factory)
    with session_factory() as s:
        snapshot = sorted((x.id, x.external_id, str(x.conversations)) for x in s.scalars(select(Sample)))
    downgrade(engine, "0001")
    assert current(engine) == "0001"
    upgrade(engine)
    assert current(engine) == head()
    assert counts(session_factory) == before
    with session_factory() as s:
        assert sorted((x.id, x.external_id, str(x.conversations)) for x in s.scalars(select(Sample))) == snapshot


def _env(db_url: str, tmp: Path, name: str) -> dict[str, str]:
    return {"QSPACE_DATA_DIR": str(tmp / name), "QSPACE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}


def test_two_api_processes_see_the_same_selections(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seeded = seed_scored(session_factory, tmp_path, n=200)
    with (
        served(_env(db_url, tmp_path, "a"), tmp_path / "a.log") as a,
        served(_env(db_url, tmp_path, "b"), tmp_path / "b.log") as b,
    ):
        url_a, url_b = a.api, b.api
        ds = seeded.dataset_id
        # Warm B's cache first, then write through A: B must not serve stale state.
        assert httpx.get(f"{url_b}/datasets/{ds}/space").status_code == 200
        sel = httpx.post(f"{url_a}/datasets/{ds}/selections",
                         json={"region": {"type": "grid", "n": 3, "cell": [2, 2]}}).json()
        seen_b = httpx.get(f"{url_b}/selections/{sel['id']}").json()
        assert seen_b["count"] == sel["count"] and seen_b["by_task_type"] == sel["by_task_type"]
        items_a = httpx.get(f"{url_a}/selections/{sel['id']}/samples", params={"limit": 1000}).json()
        items_b = httpx.get(f"{url_b}/selections/{sel['id']}/samples", params={"limit": 1000}).json()
        assert [s["id"] for s in items_a["items"]] == [s["id"] for s in items_b["items"]]
        # The same recipe resolved by the other process gives the same ids.
        again = httpx.post(f"{url_b}/datasets/{ds}/selections",
                           json={"region": {"type": "grid", "n": 3, "cell": [2, 2]}}).json()
        ids_again = httpx.get(f"{url_b}/selections/{again['id']}/samples", params={"limit": 1000}).json()
        assert [s["id"] for s in ids_again["items"]] == [s["id"] for s in items_a["items"]]
        with session_factory() as s:
            run = s.get(Run, seeded.clip_run)
            assert run is not None
            s.execute(Score.__table__.delete().where(Score.run_id == run.id, Score.sample_id == seeded.sample_ids[0]))
            run.done -= 1
            s.commit()
        n_a = len(httpx.get(f"{url_a}/datasets/{ds}/space", params={"format": "json"}).json()["ids"])
        n_b = len(httpx.get(f"{url_b}/datasets/{ds}/space", params={"format": "json"}).json()["ids"])
        assert n_a == n_b
