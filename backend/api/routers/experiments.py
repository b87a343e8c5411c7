"""Experiments: create or resume (202), list, get, cancel, manifest, results as CSV; and a dataset's default
experiment base model (PATCH /api/datasets/{ds})."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from backend import datasets as store
from backend import experiments as service
from backend.api.deps import Id, SessionDep, SettingsDep, SpaceDep
from backend.api.routers.runs import task_queue
from backend.experiment_manifest import experiment_manifest
from backend.experiment_results import experiment_out, results_csv
from backend.experiment_schemas import DatasetPatch, ExperimentCreate, ExperimentOut
from backend.queue import QueueUnavailable
from backend.schemas import DatasetOut

router = APIRouter(tags=["experiments"])


def _refused(exc: service.ExperimentError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(exc)}
    if exc.problem:
        body["problem"] = exc.problem
    return JSONResponse(body, status_code=422)


@router.post("/datasets/{ds}/experiments", response_model=ExperimentOut, status_code=202)
def create_experiment(
    ds: Id, body: ExperimentCreate, request: Request, session: SessionDep, settings: SettingsDep, space: SpaceDep
) -> Any:
    """Train the base model on every arm (and its random control) for every seed, evaluate each on the suites.
    Posting the same experiment again resumes it: unfinished jobs are queued again, finished ones are kept."""
    queue = task_queue(request)
    try:
        exp = service.submit_experiment(session, space, settings, queue, ds, body, check=queue.check)
    except service.ExperimentError as exc:
        return _refused(exc)
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    return experiment_out(session, exp)


@router.get("/datasets/{ds}/experiments", response_model=list[ExperimentOut])
def list_experiments(ds: Id, session: SessionDep) -> list[ExperimentOut]:
    dataset = store.get_dataset(session, ds)
    return [experiment_out(session, e) for e in service.list_experiments(session, dataset.id)]


@router.get("/experiments/{exp_id}", response_model=ExperimentOut)
def get_experiment(exp_id: Id, session: SessionDep) -> ExperimentOut:
    """Arms, jobs (progress, trained model folder) and results: mean and 95% CI over seeds, and the delta
    against the control with a paired bootstrap CI over items and seeds."""
    return experiment_out(session, service.get_experiment(session, exp_id))


@router.post("/experiments/{exp_id}/cancel", response_model=ExperimentOut)
def cancel_experiment(exp_id: Id, session: SessionDep) -> ExperimentOut:
    """Cancel the queued and running jobs (running ones keep their checkpoint; posting the experiment again
    resumes them)."""
    exp = service.get_experiment(session, exp_id)
    try:
        service.cancel_experiment(session, exp)
        session.commit()
    except service.ExperimentConflict as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from None
    return experiment_out(session, exp)


@router.get("/experiments/{exp_id}/manifest")
def manifest(exp_id: Id, session: SessionDep, include_ids: bool = False) -> JSONResponse:
    """Everything to cite and rerun the experiment (see backend/experiment_manifest.py), as a JSON download."""
    exp = service.get_experiment(session, exp_id)
    return JSONResponse(
        experiment_manifest(session, exp, include_ids=include_ids),
        headers={"Content-Disposition": f'attachment; filename="experiment-{exp.id}-manifest.json"'},
    )


@router.get(
    "/experiments/{exp_id}/results.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def results_as_csv(exp_id: Id, session: SessionDep) -> StreamingResponse:
    """One row per job x suite x metric."""
    exp = service.get_experiment(session, exp_id)
    text = "".join(results_csv(session, exp))  # read now: the session closes when the route returns
    return StreamingResponse(
        iter([text]),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="experiment-{exp.id}-results.csv"'},
    )


@router.patch("/datasets/{ds}", response_model=DatasetOut)
def patch_dataset(ds: Id, body: DatasetPatch, session: SessionDep) -> DatasetOut:
    """Set (or clear, with null) the base model this dataset's experiments train when they name none."""
    dataset = store.get_dataset(session, ds)
    if body.experiment_base_model is None:
        dataset.experiment_base_model = None
    else:
        try:
            dataset.experiment_base_model, _ = service.check_base_model(body.experiment_base_model)
        except service.ExperimentError as exc:
            raise HTTPException(422, f"experiment_base_model: {exc}") from None
    session.commit()
    return store.describe_dataset(session, dataset)
