"""Score and dataset columns persisted as files (backend/space/persisted.py): a restarted server serves the plane
from them, and a stale, truncated, foreign or garbled file is never served."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import Run, Score
from backend.queue.progress import utcnow
from backend.settings import Settings
from backend.space import SpaceStore, resolve_axis
from backend.space.persisted import ColumnFiles, columns_root
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=300, seed=0)


@pytest.fixture
def other(session_factory: sessionmaker[Session], tmp_path: Path, seeded: Seeded) -> Seeded:
    (tmp_path / "other").mkdir()
    return seed_scored(session_factory, tmp_path / "other", n=200, seed=1)


class Server:
    """One API process: a new app (a new space store, nothing cached) on the same database and data dir."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.app = create_app(settings, engine)
        self.client = TestClient(self.app)

    @property
    def files(self) -> ColumnFiles:
        files = self.app.state.space.files
        assert isinstance(files, ColumnFiles)
        return files

    def plane(self, ds: int, x: str = "loss", y: str = "clip") -> dict[str, Any]:
        r = self.client.get(f"/api/datasets/{ds}/space", params={"x": x, "y": y, "format": "json"})
        assert r.status_code == 200, r.text
        return orjson.loads(r.content)


@pytest.fixture
def restart(settings: Settings, engine: Engine) -> Iterator[Callable[[], Server]]:
    servers: list[Server] = []

    def make() -> Server:
        servers.append(Server(settings, engine))
        return servers[-1]

    yield make
    for s in servers:
        s.client.close()


def truth(engine: Engine, ds: int, x: str = "loss", y: str = "clip") -> dict[str, Any]:
    """The plane read from SQL alone (a store without files)."""
    from backend.space import open_plane, plane_json, resolve_colour

    store = SpaceStore(engine)
    with Session(engine) as s:
        plane = open_plane(s, store, ds, x, y)
        return plane_json(s, store, plane, resolve_colour(s, ds, None))


def sql_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> Any:
        raise AssertionError("read from SQL although a column file should have served")

    monkeypatch.setattr(SpaceStore, "_load_column", boom)
    monkeypatch.setattr(SpaceStore, "_load_dataset", boom)


def column_file(server: Server, seeded: Seeded, run_id: int, metric: str) -> Path:
    return server.files.column_path(seeded.dataset_id, run_id, metric)


# ----------------------------------------------------------------------------------------------


def test_a_restarted_server_serves_the_plane_from_files(
    restart: Callable[[], Server], engine: Engine, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = restart()
    want = first.plane(seeded.dataset_id)
    assert want == truth(engine, seeded.dataset_id) and len(want["ids"]) > 250
    assert first.files.loads == 3 and first.files.reads == 0  # dataset + two metrics, from SQL, then written
    assert column_file(first, seeded, seeded.loss_run, "loss_sum").is_file()
    assert first.files.dataset_path(seeded.dataset_id).is_file()

    sql_fails(monkeypatch)  # a second process (or a restart) may not touch the JSON rows at all
    second = restart()
    assert second.plane(seeded.dataset_id) == want
    assert second.files.reads == 3 and second.files.loads == 0
    # Exactly the SQL values, not float32 approximations: the store's columns are float64 as the database's.
    with Session(engine) as s:
        ax = resolve_axis(s, seeded.dataset_id, f"{seeded.clip_run}:similarity")
        col = second.app.state.space.column(s, ax)
    assert dict(zip(col.ids.tolist(), col.values.tolist(), strict=True)) == seeded.clip


def test_transformed_axes_come_from_the_raw_file(
    restart: Callable[[], Server], engine: Engine, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = f"{seeded.loss_run}:loss_sum@log@type_z", f"{seeded.clip_run}:similarity@type_rank"
    want = restart().plane(seeded.dataset_id, x, y)
    assert want == truth(engine, seeded.dataset_id, x, y) and len(want["ids"]) > 250
    sql_fails(monkeypatch)
    assert restart().plane(seeded.dataset_id, x, y) == want


def _stale(server: Server, seeded: Seeded, other: Seeded, session_factory: sessionmaker[Session]) -> None:
    """The run's scores change in SQL (a new value, progress and updated_at bumped as the runs service does)."""
    sid = next(i for i in seeded.sample_ids if i in seeded.loss)
    with session_factory() as s:
        s.execute(
            update(Score)
            .where(Score.run_id == seeded.loss_run, Score.sample_id == sid)
            .values(metrics={"loss_sum": 999.0, "loss_mean": 99.0, "tokens": 10, "perplexity": 1.0})
        )
        s.execute(update(Run).where(Run.id == seeded.loss_run).values(errors=Run.errors + 1, updated_at=utcnow()))
        s.commit()


def _truncated(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    path = column_file(server, seeded, seeded.loss_run, "loss_sum")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign_run(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    # Another dataset's loss column (the plane of `other` was drawn too), copied over this one's.
    server.plane(other.dataset_id)
    src = server.files.column_path(other.dataset_id, other.loss_run, "loss_sum")
    shutil.copyfile(src, column_file(server, seeded, seeded.loss_run, "loss_sum"))


def _foreign_metric(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    # The same run's other metric file in its place: right run, right stamp, wrong metric.
    server.plane(seeded.dataset_id, f"{seeded.loss_run}:loss_mean", "clip")
    src = column_file(server, seeded, seeded.loss_run, "loss_mean")
    shutil.copyfile(src, column_file(server, seeded, seeded.loss_run, "loss_sum"))


def _foreign_dataset(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    server.plane(other.dataset_id)
    shutil.copyfile(server.files.dataset_path(other.dataset_id), server.files.dataset_path(seeded.dataset_id))


def _random_bytes(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    path = column_file(server, seeded, seeded.loss_run, "loss_sum")
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _flipped_value(server: Server, seeded: Seeded, other: Seeded, _: Any) -> None:
    # One value's bytes changed in place: the file still parses, only the checksum tells.
    path = column_file(server, seeded, seeded.loss_run, "loss_sum")
    data = bytearray(path.read_bytes())
    with Session(server.app.state.engine) as s:
        col = server.app.state.space.column(s, resolve_axis(s, seeded.dataset_id, "loss"))
    at = bytes(data).find(np.float64(col.values[0]).tobytes())
    assert at > 0
    data[at : at + 8] = np.float64(col.values[0] + 1.0).tobytes()
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "stale": _stale,
    "truncated": _truncated,
    "foreign_run": _foreign_run,
    "foreign_metric": _foreign_metric,
    "foreign_dataset": _foreign_dataset,
    "random_bytes": _random_bytes,
    "flipped_value": _flipped_value,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_a_bad_file_is_never_served_and_is_rebuilt(
    corrupt: str,
    restart: Callable[[], Server],
    engine: Engine,
    seeded: Seeded,
    other: Seeded,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = restart()
    before = first.plane(seeded.dataset_id)
    CORRUPTIONS[corrupt](first, seeded, other, session_factory)

    second = restart()
    got = second.plane(seeded.dataset_id)
    assert got == truth(engine, seeded.dataset_id)
    assert second.files.loads == 1 and second.files.reads == 2  # only the bad file went back to SQL
    if corrupt == "stale":
        assert got != before and max(got["x"]) == 999.0
    # ... and was written again: a third process serves everything from files.
    sql_fails(monkeypatch)
    third = restart()
    assert third.plane(seeded.dataset_id) == got and third.files.reads == 3


def test_files_go_with_their_run_and_dataset(restart: Callable[[], Server], seeded: Seeded, other: Seeded) -> None:
    server = restart()
    server.plane(seeded.dataset_id)
    server.plane(other.dataset_id)
    run_dir = server.files.run_dir(seeded.dataset_id, seeded.clip_run)
    assert run_dir.is_dir()
    assert server.client.delete(f"/api/runs/{seeded.clip_run}").status_code == 204
    assert not run_dir.exists() and server.files.run_dir(seeded.dataset_id, seeded.loss_run).is_dir()
    assert server.client.delete(f"/api/datasets/{seeded.dataset_id}").status_code == 204
    assert not server.files.dataset_dir(seeded.dataset_id).exists()
    assert server.files.dataset_path(other.dataset_id).is_file()  # other datasets keep theirs


def test_persisting_can_be_turned_off(settings: Settings, engine: Engine, seeded: Seeded) -> None:
    off = settings.model_copy(update={"persist_columns": False})
    app = create_app(off, engine)
    assert app.state.space.files is None
    with TestClient(app) as c:
        r = c.get(f"/api/datasets/{seeded.dataset_id}/space", params={"format": "json"})
        assert r.status_code == 200 and len(r.json()["ids"]) > 250
    assert not columns_root(settings.data_dir).exists()


def test_an_unwritable_directory_still_serves(settings: Settings, engine: Engine, seeded: Seeded) -> None:
    root = columns_root(settings.data_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("a file where the folder should be")  # every write fails
    server = Server(settings, engine)
    assert server.plane(seeded.dataset_id) == truth(engine, seeded.dataset_id)
    assert server.files.loads == 3 and root.is_file()


def test_a_read_column_is_the_written_one_writable_and_shares_one_buffer(tmp_path: Path) -> None:
    files = ColumnFiles(tmp_path)
    ids, values = np.arange(3, 100_003, dtype=np.int32), np.random.default_rng(0).normal(size=100_000)
    files.column(1, 2, "loss", ("stamp",), lambda: (ids, values))
    got_ids, got_values = files.column(1, 2, "loss", ("stamp",), lambda: pytest.fail("read from SQL"))
    assert files.reads == 1 and np.array_equal(got_ids, ids) and np.array_equal(got_values, values)
    assert got_ids.flags.writeable and got_values.flags.writeable  # like the database path's arrays
    assert not got_ids.flags.owndata and not got_values.flags.owndata  # views of the file's one read, no copies


def test_metadata_fields_survive_a_restart_and_a_bad_file_is_made_again(
    restart: Callable[[], Server], seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.space import columns

    first = restart()
    want = first.client.get(f"/api/datasets/{seeded.dataset_id}/metadata_fields").json()
    assert want and first.files.loads == 1
    kept = first.files.dataset_dir(seeded.dataset_id) / "metadata_fields_50.json"
    assert kept.is_file()

    def no_scan(*_: Any) -> Any:
        raise AssertionError("scanned every sample's metadata although the kept fields should have served")

    with monkeypatch.context() as m:
        m.setattr(columns, "_metadata_fields", no_scan)
        second = restart()
        assert second.client.get(f"/api/datasets/{seeded.dataset_id}/metadata_fields").json() == want
        assert second.files.reads == 1 and second.files.loads == 0
    for garble in (b"{not json", kept.read_bytes().replace(b'"value":{', b'"value":{"forged":{"x":1},', 1)):
        kept.write_bytes(garble)
        third = restart()
        assert third.client.get(f"/api/datasets/{seeded.dataset_id}/metadata_fields").json() == want
        assert third.files.loads == 1 and third.files.reads == 0  # refused (unreadable, digest off), scanned again
