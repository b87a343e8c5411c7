"""`qspace backup` / `qspace restore`: a restored store serves the same planes, selections and experiments, on
SQLite and on PostgreSQL (pg_dump / pg_restore into a throwaway database)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.backups import BackupError, backup, read_manifest, restore, store_rows
from backend.db import make_engine
from backend.migrate import alembic_config, current, downgrade, head, upgrade
from backend.settings import Settings
from backend.tokens import create_token
from tests.conftest import create_pg_database, drop_pg_database
from tests.seeding import Seeded, seed_scored
from tests.test_cli import qspace
from tests.test_experiments_api import FakeQueue, _finish_with_results, body, write_base, write_suite


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=120)


@pytest.fixture
def source(settings: Settings, engine: Engine, session_factory: sessionmaker[Session], seeded: Seeded,
           tmp_path: Path) -> dict[str, Any]:
    """A store with a scored dataset, a selection, a curriculum, an experiment with results, a token, and a data
    directory with an eval suite and a training job's folder (weights and all)."""
    write_suite(settings.data_dir / "eval_suites" / "builtin.jsonl", n=6)
    app = create_app(settings, engine)
    app.state.task_queue = FakeQueue()
    ds = seeded.dataset_id
    with TestClient(app) as c:
        sel = c.post(f"/api/datasets/{ds}/selections", json={"name": "top", "region": {"type": "top", "percent": 30}})
        cur = c.post(f"/api/datasets/{ds}/curricula", json={"name": "cur", "stages": [sel.json()["id"]]})
        refs = {"selection": sel.json()["id"], "curriculum": cur.json()["id"]}
        req = body(write_base(tmp_path / "base"), refs, arms=[{"selection": refs["selection"]}], seeds=[0],
                   eval={"suites": ["builtin"]})
        exp = c.post(f"/api/datasets/{ds}/experiments", json=req)
        assert exp.status_code == 202, exp.text
    for job in exp.json()["jobs"]:
        _finish_with_results(session_factory, job["id"], [1, 0, 1, 1, 0, 1], "")
        folder = settings.data_dir / "experiments" / str(exp.json()["id"]) / str(job["id"])
        (folder / "stage-0" / "model").mkdir(parents=True)
        (folder / "stage-0" / "model" / "model.safetensors").write_bytes(b"\0" * 1000)
        (folder / "stage-0" / "checkpoint-4").mkdir()
        (folder / "stage-0" / "checkpoint-4" / "optimizer.pt").write_bytes(b"\0" * 100)
        (folder / "stage-0" / "done.json").write_text('{"stage": 0}')
        (folder / "result.json").write_text(json.dumps({"job": job["id"]}))
    (settings.data_dir / "broker.db").write_bytes(b"queue")  # never backed up
    with session_factory() as s:
        create_token(s, "reader", "read")
    return {"ds": ds, "sel": refs["selection"], "cur": refs["curriculum"], "exp": exp.json()["id"]}


def snapshot(app: Any, refs: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """What the API serves about everything the source holds (binary plane as bytes)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ds, sel, cur, exp = refs["ds"], refs["sel"], refs["cur"], refs["exp"]
    with TestClient(app) as c:
        def get(url: str, **params: Any) -> Any:
            r = c.get(url, params=params, headers=headers)
            assert r.status_code == 200, (url, r.status_code, r.text)
            return r.json() if r.headers["content-type"].startswith("application/json") else r.content

        return {
            "datasets": get("/api/datasets"),
            "plane": get(f"/api/datasets/{ds}/space"),
            "plane_json": get(f"/api/datasets/{ds}/space", format="json", color="meta:source"),
            "axes": get(f"/api/datasets/{ds}/axes"),
            "runs": get(f"/api/datasets/{ds}/runs"),
            "selection": get(f"/api/selections/{sel}"),
            "selection_samples": get(f"/api/selections/{sel}/samples", limit=1000),
            "curriculum": get(f"/api/curricula/{cur}"),
            "experiment": get(f"/api/experiments/{exp}"),
            "experiments": get(f"/api/datasets/{ds}/experiments"),
            "eval_suites": get("/api/eval_suites"),
        }


@pytest.fixture
def target(db_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    """An empty store of the same kind as the source (PostgreSQL: a throwaway database), and a new data dir."""
    url = f"sqlite:///{tmp_path / 'restored.db'}" if db_url.startswith("sqlite") else create_pg_database("qspace_rst")
    engine = make_engine(url)
    yield Settings(data_dir=tmp_path / "restored", database_url=url), engine
    engine.dispose()
    if not url.startswith("sqlite"):
        drop_pg_database(url)


def test_restored_store_serves_the_same(
    settings: Settings, engine: Engine, source: dict[str, Any], target: tuple[Settings, Engine], tmp_path: Path
) -> None:
    token = create_token_for(engine)
    before = snapshot(create_app(settings, engine), source, token)
    assert before["experiment"]["status"] == "done" and before["experiment"]["results"]
    archive = tmp_path / "out" / "backup.tar.gz"
    manifest = backup(settings, engine, archive)
    assert manifest["alembic_revision"] == head() and manifest["database"] == engine.dialect.name
    names = {f["path"] for f in manifest["files"]}
    exp_dir = f"data/experiments/{source['exp']}"
    assert "data/eval_suites/builtin.jsonl" in names
    assert any(n.startswith(exp_dir) and n.endswith("/result.json") for n in names)
    assert any(n.endswith("stage-0/done.json") for n in names)
    assert not any("safetensors" in n or "checkpoint-" in n or "broker" in n for n in names)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json" and set(tar.getnames()[1:]) == names

    t_settings, t_engine = target
    restored = restore(t_settings, t_engine, archive)
    assert restored["restored_revision"] == head() == current(t_engine)
    after = snapshot(create_app(t_settings, t_engine), source, token)  # the same token works: tokens came along
    for key in before:
        # The suites listing names files under the (new) data directory; the experiment keeps what it recorded.
        want = _moved(before[key], settings.data_dir, t_settings.data_dir) if key == "eval_suites" else before[key]
        assert after[key] == want, key
    assert (t_settings.data_dir / "eval_suites" / "builtin.jsonl").read_bytes() == (
        settings.data_dir / "eval_suites" / "builtin.jsonl").read_bytes()
    assert not (t_settings.data_dir / "broker.db").exists()

    # A second restore onto the now non-empty store is refused, unless forced.
    with pytest.raises(BackupError, match="not empty"):
        restore(t_settings, t_engine, archive)
    restore(t_settings, t_engine, archive, force=True)
    assert snapshot(create_app(t_settings, t_engine), source, token)["plane"] == before["plane"]


def _moved(value: Any, old: Path, new: Path) -> Any:
    return json.loads(json.dumps(value).replace(str(old), str(new)))


def create_token_for(engine: Engine) -> str:
    from backend.db import make_session_factory

    with make_session_factory(engine)() as s:
        return create_token(s, "backup-check", "read")[1]


def test_an_older_backup_is_migrated_forward(
    settings: Settings, engine: Engine, seeded: Seeded, target: tuple[Settings, Engine], tmp_path: Path
) -> None:
    previous = ScriptDirectory.from_config(alembic_config()).get_revision(head()).down_revision
    assert isinstance(previous, str)
    with TestClient(create_app(settings, engine)) as c:
        plane = c.get(f"/api/datasets/{seeded.dataset_id}/space").content
    downgrade(engine, previous)  # the store as an older qspace left it (data kept)
    try:
        manifest = backup(settings, engine, tmp_path / "old.tar.gz")
    finally:
        upgrade(engine)  # PostgreSQL: the session's shared database serves the next tests
    assert manifest["alembic_revision"] == previous
    t_settings, t_engine = target
    assert restore(t_settings, t_engine, tmp_path / "old.tar.gz")["restored_revision"] == head()
    with TestClient(create_app(t_settings, t_engine)) as c:
        assert c.get(f"/api/datasets/{seeded.dataset_id}/space").content == plane


def test_bad_archives_are_refused(
    settings: Settings, engine: Engine, seeded: Seeded, target: tuple[Settings, Engine], tmp_path: Path
) -> None:
    t_settings, t_engine = target
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(BackupError, match="not a qspace backup"):
        restore(t_settings, t_engine, junk)
    archive = backup(settings, engine, tmp_path / "b.tar.gz") and tmp_path / "b.tar.gz"
    manifest = read_manifest(archive)
    # A manifest from a newer qspace (a revision unknown here) is refused before anything is touched.
    newer = tmp_path / "newer.tar.gz"
    _rewrite(archive, newer, {**manifest, "alembic_revision": "9999"})
    with pytest.raises(BackupError, match="newer qspace"):
        restore(t_settings, t_engine, newer)
    damaged = tmp_path / "damaged.tar.gz"
    files = [{**f, "sha256": "0" * 64} if f["path"] == manifest["store"] else f for f in manifest["files"]]
    _rewrite(archive, damaged, {**manifest, "files": files})
    with pytest.raises(BackupError, match="checksum"):
        restore(t_settings, t_engine, damaged)
    assert store_rows(t_engine) == 0


def _rewrite(src: Path, dst: Path, manifest: dict[str, Any]) -> None:
    import io

    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        blob = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(blob)
        tout.addfile(info, io.BytesIO(blob))
        for m in tin.getmembers()[1:]:
            tout.addfile(m, tin.extractfile(m))


def test_cli_backup_and_restore(
    tmp_path: Path, db_url: str, settings: Settings, engine: Engine, seeded: Seeded
) -> None:
    def plane() -> dict[str, Any]:
        engine.dispose()  # the CLI replaced the store under this engine
        with TestClient(create_app(settings, engine)) as c:
            out: dict[str, Any] = c.get(f"/api/datasets/{seeded.dataset_id}/space", params={"format": "json"}).json()
            return out

    before = plane()
    assert len(before["ids"]) == len(seeded.sample_ids) - len(seeded.errors)
    env = {"QSPACE_DATA_DIR": str(settings.data_dir), "QSPACE_DATABASE_URL": db_url}
    r = qspace(["backup", str(tmp_path / "cli.tar.gz")], env)
    assert r.returncode == 0, r.stderr
    assert f"revision {head()}" in r.stdout
    r = qspace(["restore", str(tmp_path / "cli.tar.gz")], env)  # onto itself: not empty
    assert r.returncode == 1 and "not empty" in r.stderr and "--force" in r.stderr
    r = qspace(["restore", "--force", str(tmp_path / "cli.tar.gz")], env)
    assert r.returncode == 0, r.stderr
    assert plane() == before
