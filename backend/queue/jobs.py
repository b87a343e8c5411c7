"""The worker side of an experiment job: claim it, read what to train and evaluate, beat, record, finish.

A job (arm x seed) is one ``train_job`` task (``workers/experiment_tasks.py``). Its rows are written only here
and by :mod:`backend.experiments` (the API side: create, resume, cancel).

- **Claim** (:func:`claim_job`): ``queued`` -> ``running`` in one conditional UPDATE, or a ``running`` job whose
  heartbeat is older than the lease (its worker died: a redelivered or re-enqueued message takes it over).
  Every claim increments ``attempts``; the claimant's attempt number is its lease token, so a worker that lost
  its lease (or whose job was cancelled) sees its heartbeat touch no row and stops.
- **Heartbeat** (:func:`beat`): progress, phase and the heartbeat time, only while the job is still running
  under the same attempt.
- **Results** (:func:`record_suite`): one row per (job, suite, metric), ``INSERT .. ON CONFLICT DO NOTHING``: a
  job evaluated twice (a redelivery after the results were written) records them once.
- An experiment's status follows its jobs (:func:`derive_status`, :func:`refresh_experiment`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from backend.models import Dataset, Experiment, ExperimentJob, ExperimentResult, Sample
from backend.queue.chunks import score_items
from backend.queue.progress import utcnow
from backend.scorer_specs import ScoreItem

__all__ = [
    "ACTIVE",
    "Claim",
    "JobSpec",
    "beat",
    "claim_job",
    "derive_status",
    "finish_job",
    "job_spec",
    "record_suite",
    "recorded_suites",
    "refresh_experiment",
]

ACTIVE = ("queued", "running")
FETCH_BATCH = 10_000  # sample ids per IN (...) query


def derive_status(statuses: Iterable[str]) -> str:
    """An experiment's status from its jobs': running while any job runs (or some are done and some queued),
    queued before any started, then failed if any failed, cancelled if any was cancelled, else done."""
    s = set(statuses)
    if "running" in s or ("queued" in s and s - {"queued"}):
        return "running"
    if "queued" in s:
        return "queued"
    if "failed" in s:
        return "failed"
    if "cancelled" in s:
        return "cancelled"
    return "done"


def refresh_experiment(session: Session, experiment_id: int, now: datetime | None = None) -> str | None:
    """Set the experiment's status from its jobs; returns it (None: the experiment is gone)."""
    statuses = list(session.scalars(select(ExperimentJob.status).where(ExperimentJob.experiment_id == experiment_id)))
    status = derive_status(statuses)
    done = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id)
        .values(status=status, updated_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return status if getattr(done, "rowcount", 1) else None


def ids_from_bytes(blob: bytes) -> list[int]:
    return np.frombuffer(blob, dtype="<i4").astype(np.int64).tolist()


def stage_ids(job: ExperimentJob) -> list[list[int]]:
    """The job's stages of sample ids, in training order."""
    ids = ids_from_bytes(job.sample_ids)
    out, start = [], 0
    for n in job.stage_sizes or [len(ids)]:
        out.append(ids[start : start + n])
        start += n
    return out


# --- claim ----------------------------------------------------------------------------------------------


@dataclass
class Claim:
    job_id: int
    attempt: int  # the lease token (0: not claimed)
    reason: str | None = None  # why not

    @property
    def ok(self) -> bool:
        return self.attempt > 0


def claim_job(
    session: Session, job_id: int, lease_s: float, output_dir: str | None, now: datetime | None = None
) -> Claim:
    """Take the job for this worker (see the module's notes); Claim.reason says why not."""
    now = now or utcnow()
    stale = now - timedelta(seconds=lease_s)
    takeover = and_(
        ExperimentJob.status == "running",
        or_(ExperimentJob.heartbeat_at.is_(None), ExperimentJob.heartbeat_at < stale),
    )
    res = session.execute(
        update(ExperimentJob)
        .where(ExperimentJob.id == job_id, or_(ExperimentJob.status == "queued", takeover))
        .values(
            status="running",
            phase="loading",
            attempts=ExperimentJob.attempts + 1,
            heartbeat_at=now,
            started_at=func.coalesce(ExperimentJob.started_at, now),
            error=None,
            output_dir=output_dir,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    job = session.get(ExperimentJob, job_id, populate_existing=True)
    if job is None:
        return Claim(job_id, 0, f"job {job_id} does not exist")
    if not getattr(res, "rowcount", 0):
        if job.status == "running":
            return Claim(job_id, 0, f"job {job_id} is running elsewhere (heartbeat within {lease_s:.0f} s)")
        return Claim(job_id, 0, f"job {job_id} is {job.status}")
    refresh_experiment(session, job.experiment_id, now)
    return Claim(job_id, job.attempts)


# --- what to do -------------------------------------------------------------------------------------------


@dataclass
class JobSpec:
    job_id: int
    experiment_id: int
    seed: int
    base_model: str
    train_params: dict[str, Any]  # every value resolved (TrainParams.model_validate reads it)
    stages: list[list[ScoreItem]]
    suites: list[dict[str, Any]]  # [{name, path, digest, metrics, ...}]
    out_dir: Path
    skipped: list[tuple[int, str]] = field(default_factory=list)  # samples left out (image missing, refused)


def job_output_dir(data_dir: Path, experiment_id: int, job_id: int) -> Path:
    return Path(data_dir) / "experiments" / str(experiment_id) / str(job_id)


def _samples(session: Session, dataset_id: int, ids: Sequence[int]) -> dict[int, Sample]:
    out: dict[int, Sample] = {}
    for i in range(0, len(ids), FETCH_BATCH):
        part = ids[i : i + FETCH_BATCH]
        out.update(
            (s.id, s)
            for s in session.scalars(select(Sample).where(Sample.id.in_(part), Sample.dataset_id == dataset_id))
        )
    return out


def job_spec(session: Session, job_id: int, data_dir: Path) -> JobSpec:
    """The job's stages as ScoreItems (images resolved as the scorers resolve them), base model, parameters,
    suites and output folder. Samples that are gone or whose image is missing are left out (listed in
    ``skipped``)."""
    job = session.get(ExperimentJob, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    exp = session.get(Experiment, job.experiment_id)
    dataset = session.get(Dataset, exp.dataset_id) if exp is not None else None
    if exp is None or dataset is None:
        raise LookupError(f"job {job_id}: its experiment or dataset is gone")
    stages: list[list[ScoreItem]] = []
    skipped: list[tuple[int, str]] = []
    for ids in stage_ids(job):
        found = _samples(session, dataset.id, ids)
        skipped += [(i, "sample deleted") for i in ids if i not in found]
        items, failed = score_items(dataset, [found[i] for i in ids if i in found], uses_images=True)
        skipped += [(f.sample_id, f.error or "refused") for f in failed]
        stages.append(items)
    return JobSpec(
        job_id=job.id,
        experiment_id=exp.id,
        seed=job.seed,
        base_model=exp.base_model,
        train_params=dict(exp.train_params),
        stages=stages,
        suites=[dict(s) for s in exp.eval_suites],
        out_dir=job_output_dir(data_dir, exp.id, job.id),
        skipped=skipped,
    )


# --- while it runs ------------------------------------------------------------------------------------------


def beat(session: Session, job_id: int, attempt: int, values: dict[str, Any], now: datetime | None = None) -> bool:
    """Heartbeat (+ progress `values`) of a job still running under `attempt`; False when it no longer is
    (cancelled, or taken over after this worker missed its lease): the worker stops."""
    now = now or utcnow()
    res = session.execute(
        update(ExperimentJob)
        .where(ExperimentJob.id == job_id, ExperimentJob.status == "running", ExperimentJob.attempts == attempt)
        .values(heartbeat_at=now, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(res, "rowcount", 0))


def recorded_suites(session: Session, job_id: int) -> set[str]:
    return set(session.scalars(select(ExperimentResult.suite).where(ExperimentResult.job_id == job_id).distinct()))


def record_suite(
    session: Session,
    job_id: int,
    suite: str,
    digest: str,
    rows: Sequence[dict[str, Any]],
    now: datetime | None = None,
) -> int:
    """Store one suite's results of a job: `rows` = [{metric, value, n_items, outcomes}]; rows of a
    (job, suite, metric) already stored are left as they are. Returns the rows inserted."""
    from sqlalchemy.dialects import postgresql, sqlite

    if not rows:
        return 0
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = [
        {
            "job_id": job_id,
            "suite": suite,
            "digest": digest,
            "metric": r["metric"],
            "value": r["value"],
            "n_items": int(r["n_items"]),
            "outcomes": r["outcomes"],
            "created_at": now,
        }
        for r in rows
    ]
    stmt = (
        insert(ExperimentResult)
        .values(values)
        .on_conflict_do_nothing(index_elements=["job_id", "suite", "metric"])
        .returning(ExperimentResult.id)
    )
    return len(list(session.execute(stmt)))


def finish_job(
    session: Session,
    job_id: int,
    attempt: int,
    status: str,
    values: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """running (under `attempt`) -> `status` ('done' or 'failed') with `values`; refreshes the experiment.
    False when the job was not running under this attempt (cancelled meanwhile, or taken over)."""
    now = now or utcnow()
    res = session.execute(
        update(ExperimentJob)
        .where(ExperimentJob.id == job_id, ExperimentJob.status == "running", ExperimentJob.attempts == attempt)
        .values(status=status, finished_at=now, updated_at=now, heartbeat_at=now, **(values or {}))
        .execution_options(synchronize_session=False)
    )
    exp_id = session.scalar(select(ExperimentJob.experiment_id).where(ExperimentJob.id == job_id))
    if exp_id is not None:
        refresh_experiment(session, exp_id, now)
    return bool(getattr(res, "rowcount", 0))
