"""Background jobs (DESIGN.md's Job): list, get, cancel. Whoever does the work creates and advances the job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.orm import Session

from backend import jobs as service
from backend.api.deps import Id, SessionDep
from backend.job_schemas import JobOut

router = APIRouter(tags=["jobs"])


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    dataset_id: Annotated[int | None, Query(ge=1, le=2_147_483_647, description="only this dataset's")] = None,
    active: Annotated[bool | None, Query(description="true: queued or running only; false: finished only")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="only jobs of this kind")] = None,
) -> list[JobOut]:
    """Jobs, newest first (at most 200). A running job whose worker has been silent for two minutes is failed
    first (its process is gone)."""
    _expire_stale(session)
    return [service.job_out(j) for j in service.list_jobs(session, dataset_id=dataset_id, active=active, kind=kind)]


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: Id, session: SessionDep) -> JobOut:
    _expire_stale(session)
    return service.job_out(service.get_job(session, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: Id, session: SessionDep) -> JobOut:
    """Stop a queued or running job: its worker stops at its next progress write. 409 for a finished job."""
    job = service.get_job(session, job_id)
    try:
        service.cancel_job(session, job)
        session.commit()
    except service.JobConflict as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from None
    return service.job_out(job)


def _expire_stale(session: Session) -> None:
    if service.expire_stale(session):
        session.commit()
