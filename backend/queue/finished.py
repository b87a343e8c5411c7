"""What the worker whose write made a run ``done`` does next, after its commit.

1. **The planner's statistics of the scores table** (PostgreSQL): a run adds as many rows as the dataset has
   samples, and until the table is analyzed the planner reasons from what it knew before (at first: nothing, a
   guess of ~700k rows matching any IN list). With 20M rows and no statistics the gallery's score lookup for one
   page of samples was a parallel sequential scan, ~1 s per lasso; analyzed (0.24 s), it is an index lookup of
   ~1 ms. Autovacuum would analyze the table at some point (and not at all where it is turned off, as on CI
   machines); the run's end is when it matters.
2. **The run's column files** (:mod:`backend.queue.columns`), so no API process reads its score rows for the plane.

Neither may fail the chunk that finished the run: each logs its failure and the API copes (a slower plan, a
column loaded from SQL).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from backend.db import session_scope
from backend.queue.columns import keep_run_columns

log = logging.getLogger(__name__)


def analyze_scores(factory: sessionmaker[Session]) -> bool:
    """ANALYZE the scores table on PostgreSQL (SQLite's planner needs no statistics for qspace's lookups);
    whether it ran."""
    t0 = time.perf_counter()
    try:
        with session_scope(factory) as session:
            if session.get_bind().dialect.name != "postgresql":
                return False
            session.execute(text("ANALYZE scores"))
    except Exception:  # statistics are an optimisation: never worth failing a chunk for
        log.exception("ANALYZE scores failed; the planner keeps its old statistics")
        return False
    log.info("scores analyzed in %.2f s", time.perf_counter() - t0)
    return True


def after_run_done(factory: sessionmaker[Session], data_dir: Path, run_id: int, keep_columns: bool = True) -> None:
    analyze_scores(factory)
    if keep_columns:
        keep_run_columns(factory, data_dir, run_id)
