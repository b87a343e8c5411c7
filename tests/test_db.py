from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

from backend.db import make_engine
from backend.migrate import current, downgrade, head, upgrade
from tests.conftest import create_pg_database, drop_pg_database

TABLES = {"datasets", "samples", "runs", "scores", "selections", "curricula", "curriculum_stages"}


def test_schema_is_at_head(engine: Engine) -> None:
    assert current(engine) == head()
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def _round_trip(engine: Engine) -> None:
    upgrade(engine)
    assert current(engine) == head()
    downgrade(engine, "base")
    assert current(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_migrations_round_trip_sqlite(tmp_path: Path) -> None:
    _round_trip(make_engine(f"sqlite:///{tmp_path / 'm.db'}"))


def test_migrations_round_trip_postgresql() -> None:
    url = create_pg_database("qspace_mig")
    engine = make_engine(url)
    try:
        _round_trip(engine)
    finally:
        engine.dispose()
        drop_pg_database(url)
