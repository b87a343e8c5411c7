"""The worker side of a derived run (projection, clusters, duplicates): claim it, beat, read its inputs, write rows.

A derived run is one task (``workers/derived_tasks.py``). Its delivery **claims** the run in one conditional
UPDATE: ``queued`` -> ``running``, or a ``running`` run whose heartbeat (``updated_at``) is older than the lease
(its worker died: the redelivered message takes it over, clearing the rows the dead one wrote, since the run is
computed as a whole). A second delivery while the first still beats finds nothing to claim and is dropped, so a
Redis redelivery of a long UMAP never runs it twice at once. Rows are written with
:func:`backend.queue.chunks.upsert_scores` (keyed by (run, sample), progress and ``done`` for free).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from backend.models import Run, Sample, Score
from backend.queue.chunks import upsert_scores
from backend.queue.embeddings import embeddings_dir, run_dir
from backend.queue.progress import ACTIVE, utcnow
from backend.scorer_specs import ScoreResult

WRITE_BATCH = 20_000  # rows per transaction: progress moves, and no transaction holds the lock for long
CLUSTERS_FILE = "clusters.json"


@dataclass
class DerivedWork:
    run_id: int
    kind: str
    params: dict[str, Any]
    dataset_id: int
    embeddings: Path  # the source run's embeddings folder
    out_dir: Path  # this run's folder (cluster labels)
    sample_ids: list[int]  # every sample of the dataset, sorted


def claim(
    session: Session, run_id: int, key: str, data_dir: Path, lease_s: float, now: datetime | None = None
) -> DerivedWork | str:
    """The run's work once claimed, or why there is nothing to do (a string)."""
    now = now or utcnow()
    stale = now - timedelta(seconds=lease_s)
    took = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.scorer_key == key,
            or_(Run.status == "queued", and_(Run.status == "running", Run.updated_at < stale)),
        )
        .values(status="running", started_at=now, updated_at=now, done=0, errors=0, message="starting")
        .execution_options(synchronize_session=False)
    )
    run = session.scalar(select(Run).where(Run.id == run_id).execution_options(populate_existing=True))
    if run is None:
        return f"run {run_id} does not exist"
    if getattr(took, "rowcount", 0) == 0:
        return f"run {run_id} is {run.status} (claimed by a live worker, finished or stopped)"
    session.execute(delete(Score).where(Score.run_id == run_id))  # a taken-over run starts over
    source = session.get(Run, int(run.params["embeddings_run"]))
    if source is None:
        return f"embeddings run {run.params['embeddings_run']} is gone"
    ids = list(session.scalars(select(Sample.id).where(Sample.dataset_id == run.dataset_id).order_by(Sample.id)))
    return DerivedWork(
        run_id=run.id,
        kind=run.kind,
        params=dict(run.params),
        dataset_id=run.dataset_id,
        embeddings=embeddings_dir(data_dir, source.id, source.scorer_key),
        out_dir=run_dir(data_dir, run.id, run.scorer_key),
        sample_ids=ids,
    )


def beat(session: Session, run_id: int, message: str, now: datetime | None = None) -> str | None:
    """Heartbeat with what the run is doing; returns its status (None: gone). Only a running run is touched."""
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(updated_at=now or utcnow(), message=message[:2000])
        .execution_options(synchronize_session=False)
    )
    return session.scalar(select(Run.status).where(Run.id == run_id))


def write_rows(session: Session, run_id: int, results: Sequence[ScoreResult], window_s: float = 30.0) -> str | None:
    """One batch of rows (commit after); the run's status afterwards."""
    return upsert_scores(session, run_id, results, window_s=window_s).status


def batches(results: Sequence[ScoreResult], size: int = WRITE_BATCH) -> Iterable[Sequence[ScoreResult]]:
    for i in range(0, len(results), size):
        yield results[i : i + size]


def is_active(status: str | None) -> bool:
    return status in ACTIVE


def sample_answers(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The answers (gpt turns, joined) of samples, for cluster labels."""
    out: dict[int, str] = {}
    for i in range(0, len(ids), 10_000):
        part = list(ids[i : i + 10_000])
        for sid, conv in session.execute(select(Sample.id, Sample.conversations).where(Sample.id.in_(part))):
            out[int(sid)] = " ".join(
                str(t.get("value") or "") for t in (conv or []) if isinstance(t, dict) and t.get("from") == "gpt"
            )
    return out


def write_clusters_file(out_dir: Path, payload: dict[str, Any]) -> Path:
    """The clusters' labels and examples (``GET /api/runs/{run}/clusters`` adds sizes and score medians)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CLUSTERS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


def read_clusters_file(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / CLUSTERS_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
