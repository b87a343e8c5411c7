"""Scoring runs: create or resume (202), list, get, cancel, and the samples that could not be scored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from backend import runs as service
from backend.api.deps import Id, SessionDep, SettingsDep, SpaceDep
from backend.datasets import get_dataset
from backend.derived_runs import delete_run as delete_derived_run
from backend.derived_runs import submit_derived
from backend.derived_specs import is_derived
from backend.queue import QueueUnavailable, TaskQueue
from backend.run_schemas import RunCreate, RunErrorsPage, RunOut
from backend.schemas import MAX_PAGE

router = APIRouter(tags=["runs"])


def task_queue(request: Request) -> TaskQueue:
    """The app's Celery client, built once from its settings."""
    queue: TaskQueue | None = getattr(request.app.state, "task_queue", None)
    if queue is None:
        queue = TaskQueue(request.app.state.settings)
        request.app.state.task_queue = queue
    return queue


@router.post("/datasets/{ds}/runs", response_model=RunOut, status_code=202)
def create_run(ds: Id, body: RunCreate, request: Request, session: SessionDep, settings: SettingsDep) -> RunOut:
    """Score dataset `ds` with a scorer: creates the run and enqueues its chunks. Posting the same scorer
    (same scorer key) again resumes the run: only samples without a result are scored."""
    queue = task_queue(request)
    if is_derived(body.kind):  # projection / clusters / duplicates of kept embeddings: one task, default queue
        try:
            run = submit_derived(
                session, queue, ds, body.kind, body.params, settings.data_dir, stale_s=2 * settings.job_lease_s
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except QueueUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        return service.run_out(run, tau=settings.progress_window_s)
    try:
        run = service.submit_run(
            session,
            queue,
            ds,
            body.kind,
            body.params,
            chunk_size=settings.chunk_size,
            stale_s=settings.run_stale_s,
            check=queue.check,
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    return service.run_out(run, tau=settings.progress_window_s)


@router.get("/datasets/{ds}/runs", response_model=list[RunOut])
def list_runs(ds: Id, session: SessionDep, settings: SettingsDep) -> list[RunOut]:
    dataset = get_dataset(session, ds)
    return [service.run_out(r, tau=settings.progress_window_s) for r in service.list_runs(session, dataset.id)]


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: Id, session: SessionDep, settings: SettingsDep) -> RunOut:
    return service.run_out(service.get_run(session, run_id), tau=settings.progress_window_s)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: Id, session: SessionDep, settings: SettingsDep, space_store: SpaceDep) -> Response:
    """Delete a run, its scores and its files (kept embeddings, cluster labels). Chunks still queued for it
    find no run and are skipped."""
    run = service.get_run(session, run_id)
    dataset_id = run.dataset_id
    delete_derived_run(session, run, settings.data_dir)
    space_store.drop_dataset(dataset_id)
    return Response(status_code=204)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: Id, session: SessionDep, settings: SettingsDep) -> RunOut:
    """Stop a queued or running run: chunks not yet started are skipped. Posting the run again resumes it."""
    run = service.get_run(session, run_id)
    try:
        service.cancel_run(session, run)
        session.commit()
    except service.RunConflict as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from None
    return service.run_out(run, tau=settings.progress_window_s)


@router.get("/runs/{run_id}/errors", response_model=RunErrorsPage)
def run_errors(
    run_id: Id,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> RunErrorsPage:
    """Samples of the run that could not be scored, with their reasons and a count per reason."""
    return service.run_errors(session, service.get_run(session, run_id), offset, limit)
