from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from backend import datasets as store
from backend import ingest_jobs
from backend.api.deps import Id, SessionDep, SettingsDep, SpaceDep
from backend.column_files import delete_dataset_columns
from backend.derived_runs import dataset_run_keys, delete_files_of
from backend.ingest import IngestOptions, ingest, precheck
from backend.job_schemas import IngestAccepted
from backend.jobs import get_job, job_out
from backend.schemas import MAX_PAGE, DatasetCreate, DatasetOut, Page, SampleOut
from backend.settings import Settings
from backend.task_types import load_prompts, load_rules

router = APIRouter(tags=["datasets"])


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    return store.list_datasets(session)


# With wait=true the answer is 201 and a Dataset (DatasetOut), which the schema leaves to the description: the
# documented answer, the one clients build on, is the 202.
@router.post("/datasets", status_code=202, response_model=IngestAccepted)
def create_dataset(
    body: DatasetCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    wait: Annotated[
        bool, Query(description="for scripts: ingest within the request and answer 201 with the Dataset")
    ] = False,
) -> IngestAccepted | JSONResponse:
    """Ingest files that lie on the server, under the allowed roots: 202 with the ingest job at once (follow it at
    GET /api/jobs/{id}; its result holds dataset_id), or with wait=true 201 with the dataset. Refusals that need
    no reading (a path outside the roots, a taken name, a missing file) are 4xx at once; a malformed file fails
    the job, saying which file, record and field, and nothing is written."""
    opts = _options(body, settings)
    precheck(session, opts)  # IngestError: 422 (backend/api/app.py)
    if wait:
        try:
            report = ingest(session, opts)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        dataset = store.describe_dataset(session, store.get_dataset(session, report.dataset_id))
        return JSONResponse(jsonable_encoder(dataset), status_code=201)
    session.rollback()  # the precheck's read: on SQLite the job's write starts from a fresh snapshot
    job_id = ingest_jobs.create_ingest_job(session, opts)
    session.commit()
    ingest_jobs.start(request.app.state.session_factory, job_id, opts, session.info.get("created_by"))
    return IngestAccepted(job=job_out(get_job(session, job_id)), dataset_id=None)


def _options(body: DatasetCreate, settings: Settings) -> IngestOptions:
    roots = settings.allowed_roots
    paths = [Path(p) for p in body.paths]
    for p in paths:
        if not store.path_allowed(p, roots):
            raise HTTPException(403, f"{p}: outside the directories this server may read (QSPACE_DATA_ROOTS)")
    image_root = Path(body.image_root) if body.image_root else None
    if image_root is not None:
        if not store.path_allowed(image_root, roots):
            raise HTTPException(403, f"{image_root}: not under QSPACE_IMAGE_ROOTS")
        if not image_root.is_dir():
            raise HTTPException(422, f"image_root {image_root}: no such directory")
    try:
        rules = load_rules(body.task_type_rules) if body.task_type_rules else []
        prompts = load_prompts(body.task_type_prompts) if body.task_type_prompts else {}
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return IngestOptions(
        name=body.name,
        paths=paths,
        image_root=image_root,
        task_type_field=body.task_type_field,
        task_type_rules=rules,
        task_type_prompts=prompts,
        task_type_from_file=body.task_type_from_file,
        dedupe=body.dedupe,
    )


@router.get("/datasets/{ds}", response_model=DatasetOut)
def get_dataset(ds: Id, session: SessionDep) -> DatasetOut:
    return store.describe_dataset(session, store.get_dataset(session, ds))


@router.delete("/datasets/{ds}", status_code=204)
def delete_dataset(
    ds: Id, request: Request, session: SessionDep, space_store: SpaceDep, settings: SettingsDep
) -> Response:
    dataset = store.get_dataset(session, ds)
    run_files = dataset_run_keys(session, dataset.id)  # its runs' files (kept embeddings) go with it
    store.delete_dataset(session, dataset)
    session.commit()
    delete_files_of(settings.data_dir, run_files)
    delete_dataset_columns(settings.data_dir, ds)  # its persisted score columns (backend/column_files.py)
    space_store.drop_dataset(ds)
    for forget in getattr(request.app.state, "dataset_deleted", ()):
        forget(ds)
    return Response(status_code=204)


@router.get("/datasets/{ds}/samples", response_model=Page[SampleOut])
def list_samples(
    ds: Id,
    session: SessionDep,
    settings: SettingsDep,
    task_type: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Page[SampleOut]:
    dataset = store.get_dataset(session, ds)
    items, total = store.page_samples(session, dataset, task_type, offset, limit)
    return Page(items=items, total=total, offset=offset, limit=limit)
