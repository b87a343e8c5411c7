"""Score and dataset columns persisted as files (backend/column_files.py): a restarted server serves the plane
from them, a stale, truncated, foreign or garbled file is never served, and the worker that finishes a run writes
its files (backend/queue/columns.py) so that no API process reads the run's score rows for the plane."""

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
from backend.column_files import ColumnFiles, columns_root
from backend.models import Run, Score
from backend.queue.columns import keep_run_columns, run_columns, run_stamp
from backend.queue.progress import utcnow
from backend.settings import Settings
from backend.space import SpaceStore, resolve_axis
from tests.queue_helpers import ingest_dataset, start_worker, stop_worker, wait_ready, wait_run, write_dataset
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


def sql_fails(monkeypatch: pytest.MonkeyPatch, dataset: bool = True) -> None:
    """Reading score columns (and, with `dataset`, the dataset's samples) from SQL fails the test."""

    def boom(*_: Any) -> Any:
        raise AssertionError("read from SQL although a column file should have served")

    monkeypatch.setattr(SpaceStore, "_load_column", boom)
    if dataset:
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


# --- columns written by the queue when a run is done ----------------------------------------------------------


def _sql_column(engine: Engine, ds: int, run_id: int, metric: str) -> tuple[list[int], list[float]]:
    """The API's own loader (what a missing file costs): the truth a written file must equal."""
    with Session(engine) as s:
        col = SpaceStore(engine)._load_column(s, resolve_axis(s, ds, f"{run_id}:{metric}"))
    return col.ids.tolist(), col.values.tolist()


def test_one_pass_over_a_runs_rows_gives_every_metric_as_the_api_loads_it(
    engine: Engine, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    # Rows that lack metrics, and an integer value, besides the usual ones (and the clip run's error rows).
    partial, integral = seeded.sample_ids[3], seeded.sample_ids[4]
    with session_factory() as s:
        s.execute(update(Score).where(Score.run_id == seeded.loss_run, Score.sample_id == partial)
                  .values(metrics={"loss_sum": 1.5}))  # fmt: skip
        s.execute(update(Score).where(Score.run_id == seeded.loss_run, Score.sample_id == integral)
                  .values(metrics={"loss_sum": 7, "loss_mean": 0.5, "tokens": 14, "perplexity": 1.6}))  # fmt: skip
        s.commit()
    for run_id in (seeded.loss_run, seeded.clip_run):
        with session_factory() as s:
            got = run_columns(s, run_id)
        assert got and all(ids.dtype == np.int32 and values.dtype == np.float64 for ids, values in got.values())
        for metric, (ids, values) in got.items():
            assert (ids.tolist(), values.tolist()) == _sql_column(engine, seeded.dataset_id, run_id, metric)
    with session_factory() as s:
        loss = run_columns(s, seeded.loss_run)
    assert partial in loss["loss_sum"][0] and partial not in loss["tokens"][0]
    assert len(loss["tokens"][0]) == len(loss["loss_sum"][0]) - 1


def test_keep_run_columns_writes_only_a_done_runs_files_at_its_stamp(
    settings: Settings, seeded: Seeded, session_factory: sessionmaker[Session]
) -> None:
    files = ColumnFiles(columns_root(settings.data_dir))
    with session_factory() as s:
        s.execute(update(Run).where(Run.id == seeded.loss_run).values(status="running"))
        s.commit()
    assert keep_run_columns(session_factory, settings.data_dir, seeded.loss_run) == 0  # not done: nothing
    assert not files.run_dir(seeded.dataset_id, seeded.loss_run).exists()
    assert keep_run_columns(session_factory, settings.data_dir, 10_000) == 0  # no such run

    assert keep_run_columns(session_factory, settings.data_dir, seeded.clip_run) == 1
    with session_factory() as s:
        stamp = run_stamp(s, seeded.clip_run)
    assert stamp is not None
    served = files.column(seeded.dataset_id, seeded.clip_run, "similarity", stamp, lambda: pytest.fail("not kept"))
    assert dict(zip(served[0].tolist(), served[1].tolist(), strict=True)) == seeded.clip
    # At any other stamp the same file is no answer.
    later = (*stamp[:-1], "another updated_at")
    files.column(seeded.dataset_id, seeded.clip_run, "similarity", later, lambda: served)
    assert files.loads == 1


@pytest.mark.slow
def test_a_run_finished_by_a_worker_is_served_without_reading_its_scores(
    settings: Settings,
    engine: Engine,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ingest -> a length run through a real worker process -> a new API process draws every metric's plane
    from the files the worker wrote, reading no score row."""
    settings = settings.model_copy(update={"chunk_size": 12})
    settings.ensure_dirs()  # the server-less broker lives in the data directory
    ds = ingest_dataset(session_factory, write_dataset(tmp_path / "set", 40, text_only=range(0, 40, 3)), "set")
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, "columns")
    try:
        wait_ready(worker, log)
        with TestClient(create_app(settings, engine)) as api:
            r = api.post(f"/api/datasets/{ds}/runs", json={"kind": "length", "params": {}})
            assert r.status_code == 202, r.text
            run_id = r.json()["id"]
            wait_run(session_factory, run_id, timeout=120)
            axes = api.get(f"/api/datasets/{ds}/axes").json()
    finally:
        stop_worker(worker)
    text = log.read_text(errors="replace")
    metrics = sorted(a["metric"] for a in axes if a["run_id"] == run_id)
    assert len(metrics) >= 4, axes
    assert f"run {run_id}: {len(metrics)} column file(s) of 40 rows written" in text, text[-3000:]
    assert ("scores analyzed in" in text) is (engine.dialect.name == "postgresql")  # backend/queue/finished.py

    # The planes from SQL alone, taken before SQL reads of score rows are forbidden.
    planes = {m: (f"{run_id}:{m}", f"{run_id}:{metrics[0]}") for m in metrics}
    want = {m: truth(engine, ds, x, y) for m, (x, y) in planes.items()}
    assert all(len(w["ids"]) > 0 for w in want.values())
    sql_fails(monkeypatch, dataset=False)  # the dataset's own file is written by the API, on its first plane
    server = Server(settings, engine)
    for m, (x, y) in planes.items():
        assert server.plane(ds, x, y) == want[m], m
    assert server.files.reads == len(metrics) and server.files.loads == 1  # the dataset's columns only
