"""Derived runs, the API side: check the request against the store, create or resume the run, enqueue its task;
and deleting a run with its files.

Checks made at POST time (422 with a sentence): the embeddings run exists in this dataset, is a ``clip`` run
with ``keep_embeddings: true``, has finished and has embeddings on disk; ``k`` is at most the number of
embedded samples. Posting the same request again returns the run (queued, running or done) or, if it failed
or was cancelled, starts it over: a derived run is computed as a whole, so its old rows are cleared first.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.column_files import delete_run_columns
from backend.datasets import get_dataset
from backend.db import commit_create_or_resume
from backend.derived_specs import default_k, derived_key, validate_derived
from backend.models import Run, Sample, Score
from backend.queue.embeddings import delete_run_files, embeddings_dir, has_embeddings, read_embeddings
from backend.queue.progress import ACTIVE, seconds_between, utcnow


class DerivedSink(Protocol):
    def send_derived(self, run_id: int, key: str) -> None: ...


def embeddings_run(session: Session, dataset_id: int, run_id: int, data_dir: Path) -> Run:
    """The clip run whose kept embeddings a request names; ValueError (422) saying what is wrong with it."""
    run = session.get(Run, run_id)
    if run is None or run.dataset_id != dataset_id:
        raise ValueError(f"embeddings_run: run {run_id} is not a run of dataset {dataset_id}")
    if run.kind != "clip" or not (run.params or {}).get("keep_embeddings"):
        raise ValueError(
            f"embeddings_run: run {run_id} ({run.kind}) kept no embeddings; post a clip run with "
            "params keep_embeddings: true"
        )
    if run.status != "done":
        raise ValueError(f"embeddings_run: run {run_id} is {run.status}; wait until it is done")
    if not has_embeddings(embeddings_dir(data_dir, run.id, run.scorer_key)):
        raise ValueError(f"embeddings_run: run {run_id} has no embeddings on disk (every sample failed?)")
    return run


def count_embedded(data_dir: Path, run: Run) -> int:
    return len(read_embeddings(embeddings_dir(data_dir, run.id, run.scorer_key), columns=()))


def plan_derived(
    session: Session,
    dataset_ref: int | str,
    kind: str,
    params: dict[str, Any] | None,
    data_dir: Path,
    stale_s: float = 120.0,
    now: datetime | None = None,
) -> tuple[Run, bool]:
    """(the run, whether its task must be enqueued), flushed; ValueError for a bad request."""
    now = now or utcnow()
    dataset = get_dataset(session, dataset_ref)
    canonical = validate_derived(kind, params)
    source = embeddings_run(session, dataset.id, int(canonical["embeddings_run"]), data_dir)
    if kind == "clusters":
        n = count_embedded(data_dir, source)
        k = canonical["k"] if canonical["k"] is not None else default_k(n)
        if k > n:
            raise ValueError(f"clusters.k: {k} clusters need at least {k} embedded samples; run {source.id} has {n}")
        canonical = {**canonical, "k": int(k)}
    key = derived_key(kind, canonical, source.scorer_key)
    run = session.scalar(select(Run).where(Run.dataset_id == dataset.id, Run.scorer_key == key))
    total = session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset.id)) or 0
    if run is None:
        run = Run(
            dataset_id=dataset.id,
            kind=kind,
            params=canonical,
            scorer_key=key,
            status="queued",
            total=total,
            done=0,
            errors=0,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        session.flush()
        return run, True
    if run.status in ACTIVE:
        # Its task may be lost (a server-less broker's worker was killed): send it again once the run has not
        # beaten for `stale_s`; the claim takes over an expired lease, a live worker keeps it.
        idle = seconds_between(run.updated_at, now)
        return run, idle is None or idle >= stale_s
    if run.status == "done":
        return run, False
    session.execute(delete(Score).where(Score.run_id == run.id))  # computed as a whole: start over
    run.status, run.total, run.done, run.errors = "queued", total, 0, 0
    run.message, run.started_at, run.finished_at, run.samples_per_s = "restarted", None, None, None
    run.updated_at = now
    session.flush()
    return run, True


def submit_derived(
    session: Session,
    sink: DerivedSink,
    dataset_ref: int | str,
    kind: str,
    params: dict[str, Any] | None,
    data_dir: Path,
    stale_s: float = 120.0,
) -> Run:
    """Create or restart a derived run and enqueue its task; undone if the queue refuses it."""
    run, enqueue = commit_create_or_resume(
        session, lambda: plan_derived(session, dataset_ref, kind, params, data_dir, stale_s)
    )
    if enqueue:
        try:
            sink.send_derived(run.id, run.scorer_key)
        except Exception as exc:
            run.status, run.message, run.finished_at = "failed", f"not enqueued: {exc}", utcnow()
            session.commit()
            raise
    session.refresh(run)
    return run


def delete_run(session: Session, run: Run, data_dir: Path) -> None:
    """Delete a run, its scores and its files (kept embeddings, cluster labels). Commits."""
    run_id, key, dataset_id = run.id, run.scorer_key, run.dataset_id
    session.execute(delete(Score).where(Score.run_id == run_id))
    session.delete(run)
    session.commit()
    delete_run_files(data_dir, run_id, key)
    delete_run_columns(data_dir, dataset_id, run_id)


def dataset_run_keys(session: Session, dataset_id: int) -> list[tuple[int, str]]:
    """(id, scorer key) of a dataset's runs: read before deleting it, to delete their files after."""
    return [(i, k) for i, k in session.execute(select(Run.id, Run.scorer_key).where(Run.dataset_id == dataset_id))]


def delete_files_of(data_dir: Path, runs: list[tuple[int, str]]) -> int:
    return sum(delete_run_files(data_dir, i, k) for i, k in runs)
