from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from backend import datasets as store
from backend.api.deps import Id, SessionDep, SettingsDep, SpaceDep
from backend.ingest import IngestOptions, ingest
from backend.schemas import MAX_PAGE, DatasetCreate, DatasetOut, Page, SampleOut
from backend.task_types import load_prompts, load_rules

router = APIRouter(tags=["datasets"])


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    return store.list_datasets(session)


@router.post("/datasets", response_model=DatasetOut, status_code=201)
def create_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep) -> DatasetOut:
    """Ingest files that lie on the server, under the allowed roots."""
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
    opts = IngestOptions(
        name=body.name,
        paths=paths,
        image_root=image_root,
        task_type_field=body.task_type_field,
        task_type_rules=rules,
        task_type_prompts=prompts,
        task_type_from_file=body.task_type_from_file,
        dedupe=body.dedupe,
    )
    try:
        report = ingest(session, opts)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return store.describe_dataset(session, store.get_dataset(session, report.dataset_id))


@router.get("/datasets/{ds}", response_model=DatasetOut)
def get_dataset(ds: Id, session: SessionDep) -> DatasetOut:
    return store.describe_dataset(session, store.get_dataset(session, ds))


@router.delete("/datasets/{ds}", status_code=204)
def delete_dataset(ds: Id, session: SessionDep, space_store: SpaceDep) -> Response:
    store.delete_dataset(session, store.get_dataset(session, ds))
    session.commit()
    space_store.drop_dataset(ds)
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
