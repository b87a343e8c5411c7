"""After a run's last write (backend/queue/finished.py): the planner's statistics of the scores table refreshed on
PostgreSQL, and the run's column files written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from backend.column_files import ColumnFiles, columns_root
from backend.queue.finished import after_run_done, analyze_scores
from tests.seeding import Seeded, seed_scored


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=200, seed=4)


def last_analyze(engine: Engine) -> object:
    with engine.connect() as c:
        return c.scalar(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'scores'"))


def test_scores_are_analyzed_on_postgresql_only(
    engine: Engine, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    if engine.dialect.name != "postgresql":
        assert analyze_scores(session_factory) is False
        return
    before = last_analyze(engine)
    assert analyze_scores(session_factory) is True
    after = last_analyze(engine)
    assert after is not None and after != before
    # The planner now knows the table's size (a never-analyzed table reads -1 or 0 here).
    with engine.connect() as c:
        assert c.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'scores'")) >= 400


def test_a_failing_analyze_is_logged_not_raised(
    session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture, engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        assert analyze_scores(session_factory) is False  # nothing to run, nothing to fail
        return
    with engine.connect() as c:  # a table the ANALYZE cannot see: it fails inside, the caller carries on
        c.execute(text("ALTER TABLE scores RENAME TO scores_away"))
        c.commit()
    try:
        assert analyze_scores(session_factory) is False
        assert "ANALYZE scores failed" in caplog.text
    finally:
        with engine.connect() as c:
            c.execute(text("ALTER TABLE scores_away RENAME TO scores"))
            c.commit()


def test_after_run_done_writes_the_columns_unless_told_not_to(
    session_factory: sessionmaker[Session], seeded: Seeded, tmp_path: Path
) -> None:
    files = ColumnFiles(columns_root(tmp_path / "data"))
    after_run_done(session_factory, tmp_path / "data", seeded.clip_run, keep_columns=False)
    assert not files.run_dir(seeded.dataset_id, seeded.clip_run).exists()
    after_run_done(session_factory, tmp_path / "data", seeded.clip_run)
    assert files.column_path(seeded.dataset_id, seeded.clip_run, "similarity").is_file()
