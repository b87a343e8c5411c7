"""Experiments, the API side: check a request, create the experiment (arms, controls, jobs) or resume the same
one, enqueue its jobs, cancel, list.

An experiment = dataset + base model + training parameters + eval suites + seeds + arms (saved selections and
curricula), each arm with its random control (:mod:`backend.experiment_arms`). Its jobs are arm x seed; each is
one ``train_job`` task on the gpu queue, run by a worker through :mod:`backend.queue.jobs`. Results and their
statistics: :mod:`backend.experiment_results`; the manifest: :mod:`backend.experiment_manifest`.

**Posting the same experiment again resumes it** (the same dataset, name, base model, arms, seeds, control, training
parameters and suites, hashed to ``identity_key``): failed and cancelled jobs are queued again (training resumes
from their checkpoints), queued jobs idle for ``run_stale_s`` and running jobs without a heartbeat for
``job_lease_s`` are enqueued again (their message or worker was lost); finished jobs are kept.

Every check runs before anything is written: a bad request creates nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.datasets import NotFound, get_dataset
from backend.db import commit_create_or_resume
from backend.experiment_arms import ArmError, arm_task_codes, draw_control, population
from backend.experiment_checks import Checked, ExperimentError, check_base_model, check_request
from backend.experiment_schemas import ExperimentCreate
from backend.models import Experiment, ExperimentArm, ExperimentJob
from backend.queue.jobs import ACTIVE, refresh_experiment
from backend.queue.progress import aware, utcnow
from backend.selections import SelectionError
from backend.settings import Settings
from backend.space import SpaceStore
from backend.train_specs import TrainParams, planned_steps

__all__ = [
    "ExperimentConflict",
    "ExperimentError",
    "JobSink",
    "cancel_experiment",
    "check_base_model",
    "get_experiment",
    "list_experiments",
    "requeue_active_jobs",
    "submit_experiment",
]


class ExperimentConflict(ValueError):
    """The experiment's state refuses the request (e.g. cancelling a finished one): HTTP 409."""


class JobSink(Protocol):
    """Where jobs go: :class:`backend.queue.TaskQueue`, or a test double."""

    def send_train_jobs(self, job_ids: Iterable[int]) -> int: ...


# --- create -------------------------------------------------------------------------------------------------


def _steps(stages: list[Any], params: TrainParams) -> int:
    return sum(planned_steps(len(s), params) for s in stages)


def create_experiment(
    session: Session, store: SpaceStore, req: ExperimentCreate, checked: Checked, now: datetime | None = None
) -> Experiment:
    """The experiment row with its arms, controls (drawn per seed) and jobs, flushed (not committed); jobs are
    numbered seed by seed, so the first seed of every arm finishes first."""
    now = now or utcnow()
    ds = checked.dataset
    task_mix = req.control_task_mix and req.control == "random"
    seeds = list(req.seeds)
    # Every control is drawn before anything is written: a population too small is a 422 that leaves nothing.
    controls: list[dict[int, list[Any]] | None] = []
    for arm in checked.arms:
        if req.control != "random":
            controls.append(None)
            continue
        try:
            pop = population(session, store, ds.id, arm.filters)
            codes = arm_task_codes(session, store, ds.id, arm) if task_mix else None
            controls.append({s: draw_control(arm, pop, s, task_mix, codes) for s in seeds})
        except (ArmError, SelectionError) as exc:
            raise ExperimentError(str(exc)) from None
    exp = Experiment(
        dataset_id=ds.id,
        name=req.name,
        status="queued",
        base_model=checked.base_model,
        base_config_sha256=checked.base_config_sha256,
        seeds=seeds,
        control=req.control,
        control_task_mix=task_mix,
        train_request=dict(req.train),
        train_params=checked.params.model_dump(mode="json"),
        train_params_key=checked.params_key,
        eval_suites=checked.suites,
        identity_key=checked.identity_key,
        created_at=now,
        updated_at=now,
    )
    session.add(exp)
    session.flush()  # IntegrityError when the same experiment was created concurrently; submit retries
    position = 0
    planned: list[tuple[int, ExperimentArm, list[Any]]] = []  # (seed, arm, stages)
    for arm, drawn in zip(checked.arms, controls, strict=True):
        row = ExperimentArm(
            experiment_id=exp.id,
            position=position,
            kind=arm.kind,
            source_id=arm.source_id,
            n=arm.n,
            stage_sizes=[len(s) for s in arm.stages],
            recipe={"name": arm.name, **arm.recipe},
        )
        session.add(row)
        session.flush()
        position += 1
        planned += [(s, row, arm.stages) for s in seeds]
        if drawn is not None:
            ctrl = ExperimentArm(
                experiment_id=exp.id,
                position=position,
                kind="control",
                source_id=arm.source_id,
                control_of=row.id,
                n=arm.n,
                stage_sizes=[len(s) for s in arm.stages],
                recipe={
                    "population": arm.filters.model_dump(mode="json"),
                    "region": {"type": "all"},
                    "stage_sizes": [len(s) for s in arm.stages],
                    "task_mix": task_mix,
                    "draw": "numpy PCG64(seed) over the population's sorted ids, without replacement",
                },
            )
            session.add(ctrl)
            session.flush()
            position += 1
            planned += [(s, ctrl, drawn[s]) for s in seeds]
    for seed, row, stages in sorted(planned, key=lambda p: (seeds.index(p[0]), p[1].position)):
        session.add(
            ExperimentJob(
                experiment_id=exp.id,
                arm_id=row.id,
                seed=seed,
                status="queued",
                step=0,
                total_steps=_steps(stages, checked.params),
                attempts=0,
                # A job's stages are plain int32 back to back (backend/queue/jobs.py reads them so, and workers),
                # never the packed form a saved selection may take.
                sample_ids=b"".join(np.asarray(s, dtype="<i4").tobytes() for s in stages),
                stage_sizes=[len(s) for s in stages],
                created_at=now,
                updated_at=now,
            )
        )
    session.flush()
    session.refresh(exp)
    return exp


# --- resume -------------------------------------------------------------------------------------------------

_SNAPSHOT = ("status", "error", "phase", "finished_at", "updated_at")


def resume_jobs(
    session: Session, exp: Experiment, stale_s: float, lease_s: float, now: datetime | None = None
) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """(job ids to enqueue, their previous state): failed and cancelled jobs queued again, lost ones re-sent."""
    now = now or utcnow()
    out: list[int] = []
    previous: dict[int, dict[str, Any]] = {}
    for job in session.scalars(
        select(ExperimentJob).where(ExperimentJob.experiment_id == exp.id).order_by(ExperimentJob.id)
    ):
        if job.status in ("failed", "cancelled"):
            previous[job.id] = {k: getattr(job, k) for k in _SNAPSHOT}
            job.status, job.error, job.phase, job.finished_at, job.updated_at = "queued", None, None, None, now
            out.append(job.id)
        elif job.status == "queued" and (aware(job.updated_at) or now) < now - timedelta(seconds=stale_s):
            job.updated_at = now
            out.append(job.id)
        elif job.status == "running" and (aware(job.heartbeat_at) or now) < now - timedelta(seconds=lease_s):
            out.append(job.id)  # its worker is gone: the next delivery takes it over
    session.flush()
    refresh_experiment(session, exp.id, now)
    return out, previous


def submit_experiment(
    session: Session,
    store: SpaceStore,
    settings: Settings,
    sink: JobSink,
    ds_ref: int | str,
    req: ExperimentCreate,
    check: Any = None,
) -> Experiment:
    """Create or resume the experiment and enqueue its jobs, leaving nothing behind when the queue fails.

    Raises NotFound (no such dataset) and ExperimentError (422) before anything is written, and the queue's
    exception (``check`` first, then while sending) after undoing what was written.
    """
    dataset = get_dataset(session, ds_ref)
    checked = check_request(session, settings, dataset, req)
    if check is not None:
        check()
    def plan() -> tuple[Experiment, bool, list[int], dict[int, dict[str, Any]]]:
        found = session.scalar(
            select(Experiment).where(
                Experiment.dataset_id == dataset.id, Experiment.identity_key == checked.identity_key
            )
        )
        if found is None:
            exp = create_experiment(session, store, req, checked)
            return exp, True, [j.id for j in exp.jobs], {}
        job_ids, previous = resume_jobs(session, found, settings.run_stale_s, settings.job_lease_s)
        return found, False, job_ids, previous

    exp, created, job_ids, previous = commit_create_or_resume(session, plan)
    if job_ids:
        try:
            sink.send_train_jobs(job_ids)
        except Exception as exc:
            _undo(session, exp.id, created, previous, str(exc))
            raise
    session.refresh(exp)
    return exp


def _undo(session: Session, exp_id: int, created: bool, previous: dict[int, dict[str, Any]], reason: str) -> None:
    """A new experiment disappears; resumed jobs get their previous state back."""
    try:
        exp = session.get(Experiment, exp_id)
        if exp is not None and created:
            session.delete(exp)
        elif exp is not None:
            for job in exp.jobs:
                for k, v in previous.get(job.id, {}).items():
                    setattr(job, k, v)
            exp.message = f"not resumed: {reason}"[:2000]
            session.flush()
            refresh_experiment(session, exp.id)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def requeue_active_jobs(session: Session, sink: JobSink) -> list[int]:
    """Enqueue every queued or running job again (a fresh embedded worker: the server-less broker lost what
    the previous one had taken). Duplicates are harmless: a job is claimed once, a finished one is skipped."""
    ids = list(
        session.scalars(select(ExperimentJob.id).where(ExperimentJob.status.in_(ACTIVE)).order_by(ExperimentJob.id))
    )
    if ids:
        sink.send_train_jobs(ids)
    return ids


# --- lookups and cancel -------------------------------------------------------------------------------------


def get_experiment(session: Session, experiment_id: int) -> Experiment:
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise NotFound(f"experiment {experiment_id} not found")
    return exp


def list_experiments(session: Session, dataset_id: int) -> list[Experiment]:
    return list(session.scalars(select(Experiment).where(Experiment.dataset_id == dataset_id).order_by(Experiment.id)))


def cancel_experiment(session: Session, exp: Experiment, now: datetime | None = None) -> Experiment:
    """Cancel the queued and running jobs (a running job stops at its next step, keeping its checkpoint; posting
    the experiment again resumes it). Idempotent; 409 when nothing is left to cancel and it did not end cancelled."""
    now = now or utcnow()
    active = [j for j in exp.jobs if j.status in ACTIVE]
    if not active:
        if exp.status == "cancelled":
            return exp
        raise ExperimentConflict(f"experiment {exp.id} is already {exp.status}")
    for job in active:
        job.status, job.finished_at, job.updated_at = "cancelled", now, now
        job.error = "cancelled"
    session.flush()
    refresh_experiment(session, exp.id, now)
    session.refresh(exp)
    return exp
