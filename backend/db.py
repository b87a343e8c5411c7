"""Engine and session factory for SQLite (WAL, foreign keys on) and PostgreSQL, and raw reads of many rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
BLOCK_ROWS = 100_000  # rows per block when a column is read from the database


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas qspace relies on."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def commit_create_or_resume(session: Session, plan: Callable[[], T]) -> T:
    """``plan()`` (find a row by its identity, or create it) and commit, so workers see it before any message can
    reach them. When a concurrent request created the same row first, the unique key refuses ours
    (IntegrityError): roll back and plan once more, which then finds and resumes that row. Anything else rolls back
    and propagates."""
    for attempt in (1, 2):
        try:
            out = plan()
            session.commit()
            return out
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
        except BaseException:
            session.rollback()
            raise
    raise AssertionError("unreachable")


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def raw_rows(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows as plain tuples straight from the DBAPI cursor: 3-5x faster than ORM results for 1M rows.

    `{p}` in `sql` is the driver's placeholder; the statement runs in the session's transaction.
    """
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    cur = dbapi.cursor()
    try:
        cur.execute(sql.replace("{p}", "%s" if is_postgres(session) else "?"), tuple(params))
        return list(cur.fetchall())
    finally:
        cur.close()


def raw_blocks(
    session: Session, sql: str, params: Sequence[Any], size: int | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """Like :func:`raw_rows`, `size` rows at a time, so memory is bounded by a block rather than the result: a
    server-side cursor on PostgreSQL (a client-side one would take the whole result into libpq first)."""
    size = size or BLOCK_ROWS
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    pg = is_postgres(session)
    cur = dbapi.cursor(name=f"qspace_blocks_{uuid.uuid4().hex[:12]}") if pg else dbapi.cursor()
    try:
        if pg:
            cur.itersize = size  # type: ignore[attr-defined]  # psycopg's server-side cursor
        cur.execute(sql.replace("{p}", "%s" if pg else "?"), tuple(params))
        while rows := cur.fetchmany(size):
            yield list(rows)
    finally:
        cur.close()
